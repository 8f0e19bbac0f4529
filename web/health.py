"""Liveness: answers when the process is up and the store can be read."""

from flask import Blueprint, jsonify
from sqlalchemy import text

from fleet.store import db

bp = Blueprint("health", __name__, url_prefix="/api/v1")


@bp.get("/healthz")
def healthz():
    db.session.execute(text("SELECT 1"))
    return jsonify(status="ok")
