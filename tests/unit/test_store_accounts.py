"""Accounts in a real SQLite store (fleet.store.accounts): users and their passwords, web sessions, API tokens
that never outrank their owner, failed-credential counts and the audit log."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from fleet.errors import AccessDenied, ConfigError, NotFound
from fleet.store import accounts
from fleet.store.models import ApiToken, AuthFailure, User, WebSession
from fleet.throttle import Limit
from fleet.vocabulary import utcnow
from tests.unit.store_fixtures import temporary_store

PASSWORD = "correct horse battery"


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


@pytest.mark.parametrize("role,needed,allowed", [
    ("admin", "viewer", True), ("admin", "admin", True), ("operator", "operator", True),
    ("operator", "admin", False), ("viewer", "operator", False), ("root", "viewer", False),
])
def test_roles_are_ordered_viewer_operator_admin(role, needed, allowed):
    assert accounts.role_allows(role, needed) is allowed


def test_a_user_signs_in_with_their_password_only(store):
    accounts.add_user("ann", PASSWORD, "operator")
    assert accounts.authenticate("ann", PASSWORD).role == "operator"
    assert accounts.authenticate("ann", PASSWORD + "!") is None
    assert accounts.authenticate("nobody", PASSWORD) is None
    stored = store.scalar(select(User.password_hash))
    assert PASSWORD not in stored and stored.startswith("scrypt")


def test_a_weak_password_or_an_unknown_role_is_refused_before_anything_is_written(store):
    with pytest.raises(ConfigError, match="at least 10 characters"):
        accounts.add_user("ann", "short", "admin")
    with pytest.raises(ConfigError, match="role must be one of viewer, operator, admin"):
        accounts.add_user("ann", PASSWORD, "superuser")
    assert accounts.user_count() == 0 and not accounts.user_exists("ann")


def test_sessions_live_until_logout_a_password_change_or_a_disabled_account(store):
    user = accounts.add_user("ann", PASSWORD, "admin")
    first = accounts.start_session(user.id, timedelta(hours=1))
    second = accounts.start_session(user.id, timedelta(hours=1))
    assert accounts.session_user(first).name == "ann"
    assert store.scalar(select(WebSession.digest).where(WebSession.digest == first)) is None  # only the digest
    accounts.end_session(first)
    assert accounts.session_user(first) is None and accounts.session_user(second) is not None
    accounts.change_password("ann", PASSWORD + " two")
    assert accounts.session_user(second) is None
    third = accounts.start_session(user.id, timedelta(hours=1))
    assert accounts.set_user_disabled(user.id, True) == "ann"
    assert accounts.session_user(third) is None and accounts.get_user(user.id) is None


def test_an_expired_session_is_dead_and_forgotten_when_the_next_one_starts(store):
    user = accounts.add_user("ann", PASSWORD, "viewer")
    old = accounts.start_session(user.id, timedelta(seconds=60))
    store.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    store.commit()
    assert accounts.session_user(old) is None
    accounts.start_session(user.id, timedelta(hours=1))
    assert len(store.scalars(select(WebSession)).all()) == 1


def test_a_token_acts_with_its_role_and_only_its_hash_is_stored(store):
    secret = accounts.create_token("ci", "operator", "cli:root")
    assert secret.startswith(accounts.TOKEN_PREFIX)
    holder = accounts.token_identity(secret)
    assert holder == accounts.TokenHolder("ci", "operator", None)
    token = store.scalar(select(ApiToken))
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest() and token.last_used_at is not None
    with pytest.raises(ConfigError, match="exists already"):
        accounts.create_token("ci", "viewer", "cli:root")


def test_a_token_never_outranks_its_owner(store):
    accounts.add_user("ann", PASSWORD, "operator")
    with pytest.raises(ConfigError, match="cannot outrank its owner"):
        accounts.create_token("too-high", "admin", "ann", owner="ann")
    secret = accounts.create_token("ann-ci", "operator", "ann", owner="ann")
    accounts.add_user("ann", PASSWORD, "viewer")  # demoted later: the token follows her down
    assert accounts.token_identity(secret).role == "viewer"
    with pytest.raises(NotFound):
        accounts.create_token("ghost", "viewer", "x", owner="nobody")


@pytest.mark.parametrize("spoil,why", [
    ("revoke", "was revoked"), ("expire", "expired at"), ("disable owner", "disabled or deleted"),
])
def test_a_token_that_can_no_longer_act_says_why(store, spoil, why):
    user = accounts.add_user("ann", PASSWORD, "admin")
    secret = accounts.create_token("t", "viewer", "ann", owner="ann", expires_in=timedelta(days=1))
    if spoil == "revoke":
        accounts.revoke_token("t")
    elif spoil == "expire":
        store.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        store.commit()
    else:
        accounts.set_user_disabled(user.id, True)
    with pytest.raises(AccessDenied, match=why):
        accounts.token_identity(secret)


def test_unknown_or_malformed_tokens_are_refused(store):
    secret = accounts.create_token("t", "viewer", "cli")
    for bad in ("", secret[len(accounts.TOKEN_PREFIX):], secret + "x", "flt_" + "A" * 43):
        with pytest.raises(AccessDenied, match="unknown API token"):
            accounts.token_identity(bad)


@pytest.mark.parametrize("text,lifetime", [
    (None, None), ("", None), (" Never ", None), ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)),
    ("1d12h", timedelta(days=1, hours=12)),
])
def test_a_token_lifetime(text, lifetime):
    assert accounts.parse_expiry(text) == lifetime


@pytest.mark.parametrize("text", ["soon", "0h", "12", "-1d"])
def test_a_token_lifetime_that_does_not_parse_is_a_config_error(text):
    with pytest.raises(ConfigError, match="30d, 12h or 1d12h"):
        accounts.parse_expiry(text)


def test_failures_throttle_a_key_until_they_age_out_and_clearing_forgets_them(store):
    limit = Limit("account", 3, timedelta(minutes=10))
    now = utcnow()
    for _ in range(2):
        accounts.record_failure([("account", "ann"), ("address", "10.0.0.1")], now - timedelta(hours=1))
    assert accounts.throttle_wait(limit, "ann", utcnow()) == 0  # two of three allowed
    accounts.record_failure([("account", "ann")], now - timedelta(hours=1))
    wait = accounts.throttle_wait(limit, "ann", utcnow())
    assert 0 < wait <= 600
    assert accounts.throttle_wait(limit, "bob", utcnow()) == 0  # another account is not held back
    accounts.clear_failures("account", "ann")
    assert accounts.throttle_wait(limit, "ann", utcnow()) == 0
    assert {f.scope for f in store.scalars(select(AuthFailure))} == {"address"}


def test_old_failures_are_dropped_when_a_new_one_is_counted(store):
    accounts.record_failure([("token", "10.0.0.9")], utcnow())
    store.execute(update(AuthFailure).values(at=utcnow() - timedelta(days=2)))
    store.commit()
    accounts.record_failure([("token", "10.0.0.8")], utcnow() - timedelta(days=1))
    assert store.scalars(select(AuthFailure.key)).all() == ["10.0.0.8"]


def test_the_audit_log_pages_newest_first_and_keeps_details_bounded(store):
    for number in range(5):
        accounts.audit("cli:root", "run.request", f"web{number}", "x" * 3000 if number == 4 else "")
    page = accounts.audit_page(size=3)
    assert [e.target for e in page] == ["web4", "web3", "web2"] and page.more
    assert len(page.items[0].detail) == 2000
    rest = accounts.audit_page(before=page.cursor(), size=3)
    assert [e.target for e in rest] == ["web1", "web0"] and not rest.more
