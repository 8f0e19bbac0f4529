"""POST /api/v1/hooks/git: a push notification from GitHub, GitLab or Gitea.

It only asks the controller to fetch now; nothing in the payload is
trusted or stored. Without FLEET_WEBHOOK_SECRET the endpoint is off.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, current_app, jsonify, request

from fleet.store import records

bp = Blueprint("hooks", __name__, url_prefix="/api/v1/hooks")


@bp.post("/git")
def git_push():
    secret = current_app.config["FLEET_SETTINGS"].webhook_secret
    if not secret:
        return jsonify(error="the webhook is disabled; set FLEET_WEBHOOK_SECRET to enable it"), 403
    body = request.get_data(cache=False)  # MAX_CONTENT_LENGTH answers 413 before we get here
    if not signature_valid(secret, body, request.headers):
        return jsonify(error="missing or bad webhook signature; check the secret configured on both sides"), 401
    records.request_fetch()
    return jsonify(status="fetch requested"), 202


def signature_valid(secret: str, body: bytes, headers) -> bool:
    """GitHub/Gitea HMAC-SHA256 of the body, or GitLab's shared token; constant-time compares."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    github = headers.get("X-Hub-Signature-256", "")
    if github:
        return hmac.compare_digest(github, f"sha256={expected}")
    gitea = headers.get("X-Gitea-Signature", "")
    if gitea:
        return hmac.compare_digest(gitea, expected)
    gitlab = headers.get("X-Gitlab-Token", "")
    if gitlab:
        return hmac.compare_digest(gitlab.encode(), secret.encode())
    return False
