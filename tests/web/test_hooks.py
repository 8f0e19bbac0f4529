"""The git webhook through Flask's test client, with a real SQLite store."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from fleet.settings import load_settings
from fleet.store import queries
from fleet.web import create_app

SECRET = "hook-secret"
BODY = b'{"ref": "refs/heads/main", "after": "0000000000000000000000000000000000000000"}'


def make_app(tmp_path, secret):
    environ = {"FLEET_WEBHOOK_SECRET": secret} if secret else {}
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data")}, environ=environ,
                             cwd=tmp_path)
    return create_app(settings)


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, SECRET)


def fetch_requested(app) -> bool:
    with app.app_context():
        return queries.controller_state().fetch_requested


def github_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no signature at all"),
    pytest.param({"X-Hub-Signature-256": github_signature(BODY, "wrong")}, id="github signature with another secret"),
    pytest.param({"X-Hub-Signature-256": github_signature(BODY + b" ")}, id="github signature of another body"),
    pytest.param({"X-Hub-Signature-256": "sha1=abc"}, id="malformed github signature"),
    pytest.param({"X-Gitlab-Token": "nope"}, id="wrong gitlab token"),
    pytest.param({"X-Gitea-Signature": "00" * 32}, id="wrong gitea signature"),
])
def test_bad_or_missing_signature_is_401_and_asks_for_nothing(app, headers):
    answer = app.test_client().post("/api/v1/hooks/git", data=BODY, headers=headers)
    assert answer.status_code == 401
    assert "signature" in answer.get_json()["error"]
    assert not fetch_requested(app)


@pytest.mark.parametrize("headers", [
    pytest.param({"X-Hub-Signature-256": github_signature(BODY)}, id="github hmac"),
    pytest.param({"X-Gitea-Signature": github_signature(BODY).removeprefix("sha256=")}, id="gitea hmac"),
    pytest.param({"X-Gitlab-Token": SECRET}, id="gitlab token"),
])
def test_valid_signature_asks_for_a_fetch(app, headers):
    answer = app.test_client().post("/api/v1/hooks/git", data=BODY, headers=headers)
    assert answer.status_code == 202
    assert fetch_requested(app)


def test_body_over_the_limit_is_413(app):
    big = b"x" * (1024 * 1024 + 1)
    answer = app.test_client().post("/api/v1/hooks/git", data=big, headers={"X-Hub-Signature-256": github_signature(big)})
    assert answer.status_code == 413
    assert "error" in answer.get_json()
    assert not fetch_requested(app)


def test_webhook_is_disabled_without_a_secret(tmp_path):
    app = make_app(tmp_path, None)
    answer = app.test_client().post("/api/v1/hooks/git", data=BODY, headers={"X-Gitlab-Token": ""})
    assert answer.status_code == 403
    assert "FLEET_WEBHOOK_SECRET" in answer.get_json()["error"]
    assert not fetch_requested(app)


def test_get_is_not_allowed(app):
    answer = app.test_client().get("/api/v1/hooks/git")
    assert answer.status_code == 405
    assert answer.get_json()["error"]
