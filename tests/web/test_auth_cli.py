"""`fleet user passwd` and `fleet token create --user/--expires`, run as a user would (real `fleet` processes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from fleet.settings import load_settings
from fleet.store import accounts, db
from fleet.store.db import open_store
from fleet.store.models import ApiToken, AuditEntry
from fleet.vocabulary import aware, utcnow
from tests.conftest import FleetCli

PASSWORD = "correct horse battery"
NEW_PASSWORD = "staple battery horse"


@pytest.fixture
def cli(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    with store(cli):  # in process: only the commands under test pay for starting `fleet`
        for name, role in (("vera", "viewer"), ("otto", "operator")):
            accounts.add_user(name, PASSWORD, role)
    return cli


def store(cli: FleetCli):
    return open_store(load_settings(flags={"repo": str(cli.repo), "data_dir": str(cli.data_dir)}, environ={},
                                    cwd=cli.cwd))


def test_user_passwd_sets_the_password_ends_sessions_and_is_audited(cli):
    with store(cli):
        sid = accounts.start_session(accounts.authenticate("vera", PASSWORD).id, timedelta(hours=1))
    changed = cli("user", "passwd", "vera", "--password-stdin", input=NEW_PASSWORD + "\n")
    assert changed.code == 0, changed.stderr
    assert "sessions are logged out" in changed.stdout
    with store(cli):
        assert accounts.authenticate("vera", PASSWORD) is None
        assert accounts.authenticate("vera", NEW_PASSWORD) is not None
        assert accounts.session_user(sid) is None
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "user.passwd"))
        assert entry.target == "vera" and entry.actor.startswith("cli")


@pytest.mark.parametrize("args, stdin, message", [
    pytest.param(["nobody"], NEW_PASSWORD, "no user named 'nobody'", id="unknown user"),
    pytest.param(["vera"], "short", "at least 10 characters", id="too short"),
])
def test_user_passwd_refuses_with_a_clear_message_and_changes_nothing(cli, args, stdin, message):
    refused = cli("user", "passwd", *args, "--password-stdin", input=stdin + "\n")
    assert refused.code == 1
    assert message in refused.stderr and "Traceback" not in refused.stderr
    with store(cli):
        assert accounts.authenticate("vera", PASSWORD) is not None


def test_token_create_for_a_user_with_an_expiry(cli):
    made = cli("token", "create", "ci", "--role", "operator", "--user", "otto", "--expires", "30d")
    assert made.code == 0, made.stderr
    secret = made.stdout.splitlines()[-1]
    with store(cli):
        assert accounts.token_identity(secret).owner == "otto"
        token = db.session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
        assert abs(aware(token.expires_at) - (utcnow() + timedelta(days=30))) < timedelta(minutes=5)
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "token.create"))
        assert "owner=otto" in entry.detail and "expires=30d" in entry.detail


def test_a_token_without_a_user_is_the_clis_and_never_expires(cli):
    made = cli("token", "create", "machine", "--role", "admin")
    assert made.code == 0, made.stderr
    with store(cli):
        holder = accounts.token_identity(made.stdout.splitlines()[-1])
        assert (holder.owner, holder.role) == (None, "admin")
        assert accounts.list_tokens()[0].expires_at is None


@pytest.mark.parametrize("args, message", [
    pytest.param(["--role", "admin", "--user", "vera"], "cannot outrank its owner: vera is viewer",
                 id="above the owner's role"),
    pytest.param(["--role", "viewer", "--user", "nobody"], "no user named 'nobody'", id="unknown owner"),
    pytest.param(["--role", "viewer", "--expires", "soon"], "30d, 12h or 1d12h", id="bad lifetime"),
])
def test_token_create_refuses_with_a_clear_message(cli, args, message):
    refused = cli("token", "create", "t", *args)
    assert refused.code == 1
    assert message in refused.stderr and "Traceback" not in refused.stderr
    with store(cli):
        assert accounts.list_tokens() == []
