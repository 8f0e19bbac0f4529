"""Liveness: answers when the process is up and the store can be read."""

from flask import Blueprint, jsonify

from fleet.store import queries

bp = Blueprint("health", __name__, url_prefix="/api/v1")


@bp.get("/healthz")
def healthz():
    queries.ping()
    return jsonify(status="ok")
