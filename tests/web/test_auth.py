"""Accounts under attack, through Flask's test client and a real SQLite store.

A captured session cookie dies with logout, a password change or a disabled
account; logins are throttled per account and per address (429 with
Retry-After, even for the right password) and every failure and refusal is
audited; bearer tokens belong to a user, never outrank them, may expire, and
bad ones are throttled per address.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from fleet.store import accounts, db
from fleet.store.models import ApiToken, AuditEntry, AuthFailure, Run, User
from fleet.vocabulary import utcnow
from tests.web.conftest import PASSWORD, make_app

NEW_PASSWORD = "staple battery horse"
WINDOW = 900


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


def csrf_of(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def try_login(client, name: str, password: str):
    return client.post("/login", data={"name": name, "password": password, "csrf_token": csrf_of(client)})


def login(app, name: str, password: str = PASSWORD):
    client = app.test_client()
    answer = try_login(client, name, password)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


def post(client, path: str, data: dict | None = None):
    return client.post(path, data={"csrf_token": csrf_of(client, "/account/password"), **(data or {})})


def steal_cookie(app, victim):
    """Another browser holding a copy of the victim's session cookie."""
    thief = app.test_client()
    thief.set_cookie("fleet_session", victim.get_cookie("fleet_session").value)
    return thief


def logged_in(client) -> bool:
    return client.get("/api/v1/hosts").status_code == 200


def audit_rows(app, action: str) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [(e.actor, e.remote_addr, e.detail) for e in rows]


def text(answer) -> str:
    return answer.get_data(as_text=True)


# --- sessions end on the server ------------------------------------------------------------

def test_a_captured_cookie_stops_working_at_logout(app):
    vera = login(app, "vera")
    thief = steal_cookie(app, vera)
    assert logged_in(thief)  # the copy works while the session lives
    assert vera.post("/logout", data={"csrf_token": csrf_of(vera, "/")}).status_code == 302
    assert thief.get("/").status_code == 302 and "/login" in thief.get("/").headers["Location"]
    assert thief.get("/api/v1/hosts").status_code == 401


def test_a_password_change_ends_every_other_session_and_keeps_this_one(app):
    vera = login(app, "vera")
    thief = steal_cookie(app, vera)
    answer = post(vera, "/account/password", {"current": PASSWORD, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert answer.status_code == 303
    assert not logged_in(thief)
    assert logged_in(vera)
    assert "every other session" in text(vera.get("/account/password"))
    assert audit_rows(app, "user.passwd") == [("vera", "127.0.0.1", "own password, in the web UI")]
    assert try_login(app.test_client(), "vera", PASSWORD).status_code == 401
    login(app, "vera", NEW_PASSWORD)


def test_a_password_set_by_an_admin_ends_every_session(app):
    vera = login(app, "vera")
    with app.app_context():
        accounts.change_password("vera", NEW_PASSWORD)
    assert not logged_in(vera)
    with app.app_context():
        accounts.add_user("vera", PASSWORD, "viewer")  # `fleet user add` on an existing name resets too
    vera = login(app, "vera")
    with app.app_context():
        accounts.add_user("vera", NEW_PASSWORD, "viewer")
    assert not logged_in(vera)


def test_disabling_a_user_deletes_their_sessions(app):
    vera = login(app, "vera")
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.name == "vera"))
        accounts.set_user_disabled(user_id, True)
        accounts.set_user_disabled(user_id, False)
    assert not logged_in(vera)  # enabling again does not bring the old session back


def test_a_signed_cookie_without_a_server_side_session_is_not_enough(app):
    """The old cookie (a user id signed with the secret key) no longer identifies anyone."""
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.name == "ada"))
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = user_id
        session["sid"] = "made-up-session-id"
    assert client.get("/admin/users").status_code == 302


def test_an_expired_session_is_refused(app):
    vera = login(app, "vera")
    with app.app_context():
        db.session.execute(update(accounts.WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert not logged_in(vera)


@pytest.mark.parametrize("form, status, message", [
    pytest.param({"current": "not-my-password", "new": NEW_PASSWORD, "confirm": NEW_PASSWORD}, 401,
                 "current password is wrong", id="wrong current password"),
    pytest.param({"current": PASSWORD, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD + "!"}, 400,
                 "differ", id="confirmation differs"),
    pytest.param({"current": PASSWORD, "new": "short", "confirm": "short"}, 400, "at least 10", id="too short"),
])
def test_a_refused_password_change_changes_nothing(app, form, status, message):
    vera = login(app, "vera")
    answer = post(vera, "/account/password", form)
    assert answer.status_code == status
    assert message in text(answer)
    assert logged_in(vera)
    with app.app_context():
        assert accounts.authenticate("vera", PASSWORD) is not None


def test_a_wrong_current_password_counts_as_a_failed_login(app):
    vera = login(app, "vera")
    for _ in range(5):
        post(vera, "/account/password", {"current": "guess-guess-guess", "new": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    answer = post(vera, "/account/password", {"current": PASSWORD, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert answer.status_code == 429  # a stolen session cannot brute-force the password either
    assert len(audit_rows(app, "password.failed")) == 5
    assert [actor for actor, *_ in audit_rows(app, "password.throttled")] == ["vera"]


def test_the_password_page_needs_a_browser_session(app):
    assert "/login" in app.test_client().get("/account/password").headers["Location"]


# --- login throttling ------------------------------------------------------------------------

def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(app):
    client = app.test_client()
    for _ in range(5):
        assert try_login(client, "vera", "wrong-wrong-wrong").status_code == 401
    answer = try_login(client, "vera", PASSWORD)
    assert answer.status_code == 429
    assert 0 < int(answer.headers["Retry-After"]) <= WINDOW
    assert "too many failed logins for &#39;vera&#39;" in text(answer) and "15 minutes" in text(answer)
    assert audit_rows(app, "login.failed") == [("vera", "127.0.0.1", "")] * 5
    [(actor, address, detail)] = audit_rows(app, "login.throttled")
    assert (actor, address) == ("vera", "127.0.0.1") and "try again in" in detail
    assert try_login(client, "otto", PASSWORD).status_code == 302  # other accounts are not locked


def test_the_account_works_again_once_the_window_has_passed(app):
    client = app.test_client()
    for _ in range(5):
        try_login(client, "vera", "wrong-wrong-wrong")
    assert try_login(client, "vera", PASSWORD).status_code == 429
    with app.app_context():  # the window passes: every failure is now older than it
        db.session.execute(update(AuthFailure).values(at=AuthFailure.at - timedelta(seconds=WINDOW)))
        db.session.commit()
    assert try_login(client, "vera", PASSWORD).status_code == 302


def test_a_successful_login_resets_the_account_count(app):
    client = app.test_client()
    for _ in range(3):
        for _ in range(4):
            assert try_login(client, "vera", "wrong-wrong-wrong").status_code == 401
        assert try_login(client, "vera", PASSWORD).status_code == 302


def test_twenty_failures_from_one_address_lock_every_account_from_it(app):
    client = app.test_client()
    for n in range(20):
        assert try_login(client, f"nobody{n}", "wrong-wrong-wrong").status_code == 401
    answer = try_login(client, "otto", PASSWORD)
    assert answer.status_code == 429
    assert "from 127.0.0.1" in text(answer)
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert try_login(other, "otto", PASSWORD).status_code == 302


def test_refused_attempts_are_not_counted_as_failures(app):
    """Refusals never check the password, so they do not stretch the window."""
    client = app.test_client()
    for _ in range(50):
        try_login(client, "vera", "wrong-wrong-wrong")
    with app.app_context():
        assert db.session.query(AuthFailure).filter_by(scope="account", key="vera").count() == 5
    assert len(audit_rows(app, "login.throttled")) == 45


# --- tokens belong to users ---------------------------------------------------------------

def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def api_get(app, secret: str, path: str = "/api/v1/hosts"):
    return app.test_client().get(path, headers=bearer(secret))


def test_a_token_of_a_disabled_user_is_401_and_works_again_when_enabled(app):
    with app.app_context():
        secret = accounts.create_token("otto-ci", "operator", "ada", owner="otto")
        user_id = db.session.scalar(select(User.id).where(User.name == "otto"))
    assert api_get(app, secret).status_code == 200
    with app.app_context():
        accounts.set_user_disabled(user_id, True)
    answer = api_get(app, secret)
    assert answer.status_code == 401
    assert "disabled" in answer.get_json()["error"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    with app.app_context():
        accounts.set_user_disabled(user_id, False)
    assert api_get(app, secret).status_code == 200


def test_a_token_of_a_deleted_user_is_401(app):
    with app.app_context():
        secret = accounts.create_token("otto-ci", "operator", "ada", owner="otto")
        db.session.execute(delete(User).where(User.name == "otto"))
        db.session.commit()
    answer = api_get(app, secret)
    assert answer.status_code == 401
    assert "unknown API token" in answer.get_json()["error"]  # the token went with its owner


def test_an_expired_token_is_401_with_a_clear_message(app):
    with app.app_context():
        secret = accounts.create_token("short-lived", "viewer", "ada", owner="vera",
                                       expires_in=accounts.parse_expiry("30d"))
    assert api_get(app, secret).status_code == 200
    with app.app_context():
        db.session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    answer = api_get(app, secret)
    assert answer.status_code == 401
    error = answer.get_json()["error"]
    assert "'short-lived' expired at" in error and "ask an admin for a new token" in error
    assert [(a, d) for a, _, d in audit_rows(app, "token.failed")] == [("anonymous", error)]


def test_a_revoked_token_says_so(app):
    with app.app_context():
        secret = accounts.create_token("gone", "viewer", "ada", owner="vera")
        accounts.revoke_token("gone")
    assert "'gone' was revoked" in api_get(app, secret).get_json()["error"]


def test_a_token_never_outranks_its_owner(app):
    with app.app_context():
        with pytest.raises(accounts.ConfigError, match="cannot outrank its owner: vera is viewer"):
            accounts.create_token("sneaky", "admin", "ada", owner="vera")
        secret = accounts.create_token("otto-ci", "operator", "ada", owner="otto")
        accounts.add_user("otto", PASSWORD, "viewer")  # demoted after the token was made
    answer = app.test_client().post("/api/v1/runs", json={"kind": "check"}, headers=bearer(secret))
    assert answer.status_code == 403
    assert "yours is viewer" in answer.get_json()["error"]
    with app.app_context():
        assert db.session.query(Run).count() == 0


def test_a_token_for_a_missing_or_disabled_owner_is_not_made(app):
    with app.app_context():
        with pytest.raises(accounts.NotFound, match="no user named 'nobody'"):
            accounts.create_token("t1", "viewer", "ada", owner="nobody")
        accounts.set_user_disabled(db.session.scalar(select(User.id).where(User.name == "vera")), True)
        with pytest.raises(accounts.ConfigError, match="vera' is disabled"):
            accounts.create_token("t2", "viewer", "ada", owner="vera")
        assert accounts.list_tokens() == []


@pytest.mark.parametrize("text_in, expected", [
    ("", None), ("never", None), ("30d", timedelta(days=30)), ("1d12h", timedelta(days=1, hours=12)),
])
def test_parse_expiry(text_in, expected):
    assert accounts.parse_expiry(text_in) == expected


@pytest.mark.parametrize("text_in", ["30 days", "-1d", "0d", "soon"])
def test_parse_expiry_refuses_what_is_not_a_lifetime(text_in):
    with pytest.raises(accounts.ConfigError, match="30d, 12h or 1d12h"):
        accounts.parse_expiry(text_in)


def test_twenty_bad_tokens_from_one_address_are_throttled_and_good_tokens_still_work(app):
    with app.app_context():
        good = accounts.create_token("ci", "viewer", "ada", owner="vera")
    for n in range(20):
        assert api_get(app, f"flt_guess{n}").status_code == 401
    answer = api_get(app, "flt_guess-again")
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    assert "too many failed API tokens from 127.0.0.1" in answer.get_json()["error"]
    assert api_get(app, good).status_code == 200  # 256 random bits: a good token is never guessed
    assert len(audit_rows(app, "token.failed")) == 20
    assert [(a, addr) for a, addr, _ in audit_rows(app, "token.throttled")] == [("anonymous", "127.0.0.1")]


# --- the admin page ------------------------------------------------------------------------------

def test_admins_make_tokens_for_an_owner_with_an_expiry_and_see_both(app):
    ada = login(app, "ada")
    form = {"name": "ci", "role": "viewer", "owner": "vera", "expires": "30d"}
    answer = ada.post("/admin/tokens", data={"csrf_token": csrf_of(ada, "/admin/tokens"), **form})
    assert answer.status_code == 200
    secret = re.search(r'<code id="secret">(flt_[^<]+)</code>', text(answer)).group(1)
    assert api_get(app, secret).status_code == 200
    with app.app_context():
        token = accounts.list_tokens()[0]
        assert token.owner.name == "vera" and token.created_by == "ada"
        expires = token.expires_at
    page = text(ada.get("/admin/tokens"))
    assert "<td>vera</td>" in page and expires.strftime("%Y-%m-%d") in page
    too_high = {"name": "ci2", "role": "admin", "owner": "vera", "expires": ""}
    answer = ada.post("/admin/tokens", data={"csrf_token": csrf_of(ada, "/admin/tokens"), **too_high})
    assert answer.status_code == 400 and "cannot outrank its owner" in text(answer)
    bad_expiry = {"name": "ci3", "role": "viewer", "owner": "vera", "expires": "soon"}
    assert ada.post("/admin/tokens", data={"csrf_token": csrf_of(ada, "/admin/tokens"), **bad_expiry}).status_code == 400
    with app.app_context():
        db.session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(days=1)))
        db.session.commit()
    assert '<span class="word">expired</span>' in text(ada.get("/admin/tokens"))


def test_an_admins_token_defaults_to_the_admin_as_owner(app):
    ada = login(app, "ada")
    ada.post("/admin/tokens", data={"csrf_token": csrf_of(ada, "/admin/tokens"), "name": "mine", "role": "admin"})
    with app.app_context():
        assert accounts.list_tokens()[0].owner.name == "ada"
