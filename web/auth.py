"""Who is asking: log in and out, roles, API tokens, CSRF, security headers.

A browser identifies with a signed session cookie (HttpOnly, SameSite=Lax,
Secure unless served on loopback); every state-changing request it makes
must carry the session's CSRF token. A script identifies with a bearer
token and needs no CSRF token, since a browser never sends one by itself.

Roles: viewer reads; operator also runs checks and converges and approves;
admin also manages users and tokens and reads the audit log.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlparse

from flask import (
    Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for,
)

from fleet.store import accounts

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


def load_identity() -> None:
    g.identity = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = accounts.token_identity(header.removeprefix("Bearer ").strip())
        if token is not None:
            g.identity = Identity(f"token:{token.name}", token.role, "token")
        return
    user_id = session.get("user_id")
    if user_id is not None:
        user = accounts.get_user(user_id)
        if user is None:
            session.clear()
        else:
            g.identity = Identity(user.name, user.role, "session")


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


def audit(action: str, target: str = "", detail: str = "") -> None:
    """Record a state change by whoever is asking."""
    identity = g.get("identity")
    accounts.audit(identity.name if identity else "anonymous", action, target, detail,
                   request.remote_addr or "")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        user = accounts.authenticate(request.form.get("name", ""), request.form.get("password", ""))
        if user is None:
            accounts.audit(request.form.get("name", "")[:255] or "anonymous", "login.failed", "",
                           "", request.remote_addr or "")
            flash("Wrong name or password.", "error")
            return render_template("auth/login.html"), 401
        session.clear()  # a fresh session (and CSRF token) on every login
        session["user_id"] = user.id
        session.permanent = True
        accounts.audit(user.name, "login", "", "", request.remote_addr or "")
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html")


@bp.post("/logout")
def logout():
    identity = g.get("identity")
    if identity is not None:
        accounts.audit(identity.name, "logout", "", "", request.remote_addr or "")
    session.clear()
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str:
    """Only redirect to a path on this site after login, never to another host."""
    if not target:
        return url_for("ui.dashboard") if "ui.dashboard" in current_app.view_functions else "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target
