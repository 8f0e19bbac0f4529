"""What the web tests share: a fresh app on a real SQLite store, with accounts, and cheap password hashes."""

from __future__ import annotations

import pytest

from fleet.settings import load_settings
from fleet.store import accounts
from fleet.web import create_app

PASSWORD = "correct horse battery"
ACCOUNTS = (("vera", "viewer"), ("otto", "operator"), ("ada", "admin"))


@pytest.fixture(autouse=True)
def quick_password_hashes(monkeypatch):
    """scrypt is slow on purpose; the web tests hash many passwords, so use a cheap method here."""
    from werkzeug import security

    monkeypatch.setattr(accounts, "generate_password_hash",
                        lambda password: security.generate_password_hash(password, "pbkdf2:sha256:1000"))


def make_app(tmp_path, users=ACCOUNTS):
    """create_app on a data dir under tmp_path, with these (name, role) accounts, all with PASSWORD."""
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data")}, environ={},
                             cwd=tmp_path)
    app = create_app(settings)
    with app.app_context():
        for name, role in users:
            accounts.add_user(name, PASSWORD, role)
    return app
