"""Who is asking: log in and out, roles, API tokens, CSRF, throttling, security headers.

A browser identifies with a signed session cookie (HttpOnly, SameSite=Lax,
Secure unless served on loopback) that carries a server-side session id:
logging out, a password change or a disabled account deletes the session,
so a captured cookie stops working at once. Every state-changing request a
browser makes must carry the session's CSRF token. A script identifies with
a bearer token and needs no CSRF token, since a browser never sends one by
itself.

Failed logins are counted per account and per remote address, failed bearer
tokens per address, in the store (so the count survives a restart and every
process shares it); past the limit, credentials are refused with 429 and
Retry-After without being checked, until the window passes. Every failure
and every refusal is audited with the address.

Roles: viewer reads; operator also runs checks and converges and approves;
admin also manages users and tokens and reads the audit log.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlparse

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from fleet import actions, throttle
from fleet.actions import Actor
from fleet.errors import AccessDenied, ConfigError, Throttled
from fleet.store import accounts
from fleet.vocabulary import utcnow

bp = Blueprint("auth", __name__)

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
CSRF_EXEMPT_ENDPOINTS = {"hooks.git_push"}  # signed by HMAC, sent by git servers, never by browsers
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    via: str  # "session" | "token"

    def can(self, needed: str) -> bool:
        return accounts.role_allows(self.role, needed)


def init_auth(app) -> None:
    app.before_request(load_identity)
    app.before_request(check_csrf)
    app.after_request(security_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, identity=lambda: g.get("identity"))
    app.register_blueprint(bp)


def load_identity():
    g.identity = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return _load_token(header.removeprefix("Bearer ").strip())
    sid = session.get("sid")
    if sid is not None:
        user = accounts.session_user(sid)
        if user is None:
            session.clear()  # logged out, password changed, disabled or expired: log in again
        else:
            g.identity = Identity(user.name, user.role, "session")
    return None


def _load_token(secret: str):
    """A bearer token's identity; a bad one is a 401 with the reason, or a 429 once too many came from here.

    Unlike a password, a valid token (256 random bits) is never refused for its address's failures:
    nobody guesses one, and refusing it would let anyone sharing the address lock out a CI job. So
    the count is read only after a failure, and a good token costs no throttle query.
    """
    address = _address()
    try:
        holder = accounts.token_identity(secret)
    except AccessDenied as exc:
        return _refuse_token(exc, address)
    g.identity = Identity(f"token:{holder.name}", holder.role, "token")
    return None


def _refuse_token(refusal: AccessDenied, address: str):
    try:
        _refuse_if_throttled([(throttle.token_limit(_window()), address)], "API tokens")
    except Throttled as exc:
        accounts.audit("anonymous", "token.throttled", "", str(exc), address)
        return _throttled_answer(exc)
    accounts.record_failure([(throttle.TOKEN, address)], utcnow() - _window())
    accounts.audit("anonymous", "token.failed", "", str(refusal), address)
    abort(401, description=str(refusal))


def _window() -> timedelta:
    return timedelta(seconds=current_app.config["FLEET_SETTINGS"].login_window_seconds)


def _address() -> str:
    return request.remote_addr or ""


def _refuse_if_throttled(checks: list[tuple[throttle.Limit, str]], what: str) -> None:
    """Raise Throttled when any (limit, key) has had too many failures within its window."""
    now = utcnow()
    for limit, key in checks:
        wait = accounts.throttle_wait(limit, key, now)
        if wait:
            whose = f"for {key!r}" if limit.scope == throttle.ACCOUNT else f"from {key or 'this address'}"
            raise Throttled(
                f"too many failed {what} {whose} lately; try again in {throttle.wait_words(wait)}, "
                "or ask an admin to look at the audit log",
                wait,
            )


def _throttled_answer(exc: Throttled, page: str | None = None):
    """429 with Retry-After: JSON for scripts, the form again (with the reason) for a browser."""
    if page is None:
        response = jsonify(error=str(exc))
    else:
        flash(f"Refused: {exc}.", "error")
        response = current_app.make_response(render_template(page))
    response.status_code = 429
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf():
    if request.method not in STATE_CHANGING or request.endpoint in CSRF_EXEMPT_ENDPOINTS:
        return None
    identity = g.get("identity")
    if identity is not None and identity.via == "token":
        return None
    if identity is None and request.path.startswith("/api/"):
        return None  # no session, nothing to forge: the view answers 401
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent, expected):
        abort(403, description="the form's CSRF token is missing or stale; reload the page and try again")
    return None


def security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def require_role(needed: str):
    """View decorator: the caller must be logged in (or hold a token) with at least `needed`."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            identity = g.get("identity")
            if identity is None:
                if request.path.startswith("/api/"):
                    abort(401, description="authentication required: send Authorization: Bearer <token>")
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if not identity.can(needed):
                abort(403, description=f"this needs the {needed} role; yours is {identity.role}")
            return view(*args, **kwargs)

        return wrapped

    return decorator


def actor() -> Actor:
    """Whoever is asking, as fleet.actions records them."""
    identity = g.get("identity")
    return Actor(identity.name if identity else "anonymous", request.remote_addr or "")


def audit(action: str, target: str = "", detail: str = "") -> None:
    """Record a state change by whoever is asking."""
    actor().audit(action, target, detail)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("auth/login.html")
    name, address = request.form.get("name", "")[:255], _address()
    try:
        _refuse_if_throttled(_login_checks(name, address), "logins")
    except Throttled as exc:
        accounts.audit(name or "anonymous", "login.throttled", "", str(exc), address)
        return _throttled_answer(exc, "auth/login.html")
    user = accounts.authenticate(name, request.form.get("password", ""))
    if user is None:
        _count_login_failure(name, address)
        accounts.audit(name or "anonymous", "login.failed", "", "", address)
        flash("Wrong name or password.", "error")
        return render_template("auth/login.html"), 401
    accounts.clear_failures(throttle.ACCOUNT, user.name)  # the right password resets the account's count
    _start_session(user.id)
    accounts.audit(user.name, "login", "", "", address)
    return redirect(_safe_next(request.args.get("next")))


def _login_checks(name: str, address: str) -> list[tuple[throttle.Limit, str]]:
    per_account, per_address = throttle.login_limits(_window())
    return [(per_account, name), (per_address, address)]


def _count_login_failure(name: str, address: str) -> None:
    accounts.record_failure([(throttle.ACCOUNT, name), (throttle.ADDRESS, address)], utcnow() - _window())


def _start_session(user_id: int) -> None:
    """A fresh session (and CSRF token): the old cookie's contents never carry over."""
    session.clear()
    session["sid"] = accounts.start_session(user_id, current_app.permanent_session_lifetime)
    session.permanent = True


@bp.post("/logout")
def logout():
    identity = g.get("identity")
    if identity is not None:
        accounts.audit(identity.name, "logout", "", "", _address())
    if session.get("sid"):
        accounts.end_session(session["sid"])  # the cookie, if captured, is dead too
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
def change_password():
    """A logged-in user changes their own password; it needs the current one, and ends every other session."""
    identity = g.get("identity")
    if identity is None or identity.via != "session":
        return redirect(url_for("auth.login", next=request.path))
    if request.method == "GET":
        return render_template("auth/password.html")
    address = _address()
    try:
        _refuse_if_throttled(_login_checks(identity.name, address), "password checks")
    except Throttled as exc:
        accounts.audit(identity.name, "password.throttled", identity.name, str(exc), address)
        return _throttled_answer(exc, "auth/password.html")
    return _set_own_password(identity.name, address)


def _set_own_password(name: str, address: str):
    form = request.form
    user = accounts.authenticate(name, form.get("current", ""))
    if user is None:
        _count_login_failure(name, address)
        accounts.audit(name, "password.failed", name, "wrong current password", address)
        return _password_error("The current password is wrong; nothing was changed.", 401)
    if form.get("new", "") != form.get("confirm", ""):
        return _password_error("The two new passwords differ; nothing was changed.", 400)
    try:
        actions.change_password(Actor(name, address), name, form.get("new", ""), "own password, in the web UI")
    except ConfigError as exc:
        return _password_error(f"{exc}; nothing was changed.", 400)
    _start_session(user.id)  # every session ended with the old password; this browser gets a new one
    flash("Password changed; every other session of yours is logged out.", "info")
    return redirect(url_for("auth.change_password"), 303)


def _password_error(message: str, status: int):
    flash(message, "error")
    return render_template("auth/password.html"), status


def _safe_next(target: str | None) -> str:
    """Only redirect to a path on this site after login, never to another host."""
    if not target:
        return url_for("ui.dashboard") if "ui.dashboard" in current_app.view_functions else "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target
