"""Admin: users (list, add, disable), API tokens (list, create for an owner, expiring; revoke), the audit log.

A new token's secret and a generated password are shown once, in the answer
to the POST that made them (not through a redirect): they are never stored,
not even in the session cookie, so they cannot be shown again.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from fleet.web.auth import actor, require_role
from fleet.web.ui.common import int_arg, who

from fleet import actions
from fleet.errors import ConfigError, NotFound
from fleet.store import accounts

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PER_PAGE = 100


@bp.get("/users")
@require_role("admin")
def users():
    return render_template("admin/users.html", users=accounts.list_users(), roles=accounts.ROLES)


@bp.post("/users")
@require_role("admin")
def add_user():
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "")
    password = request.form.get("password", "")
    if not name or len(name) > 255:
        return _form_error("users", "a user needs a name (at most 255 characters)")
    generated = "" if password else accounts.generate_password()
    try:
        actions.add_user(actor(), name, password or generated, role)
    except (ConfigError, actions.Refused) as exc:
        return _form_error("users", str(exc))
    if not generated:
        flash(f"user {name} ({role}) added", "info")
        return redirect(url_for("ui.admin.users"), 303)
    return render_template(
        "admin/secret.html", what=f"password of user {name} ({role})", secret=generated, back=url_for("ui.admin.users")
    )


@bp.post("/users/<int:user_id>/disable")
@require_role("admin")
def disable_user(user_id: int):
    return _set_disabled(user_id, True)


@bp.post("/users/<int:user_id>/enable")
@require_role("admin")
def enable_user(user_id: int):
    return _set_disabled(user_id, False)


def _set_disabled(user_id: int, disabled: bool):
    try:
        name = actions.set_user_disabled(actor(), user_id, disabled)
    except NotFound as exc:
        abort(404, description=str(exc))
    except actions.Refused as exc:
        return _form_error("users", str(exc))
    flash(f"user {name} {'disabled' if disabled else 'enabled'}", "info")
    return redirect(url_for("ui.admin.users"), 303)


@bp.get("/tokens")
@require_role("admin")
def tokens():
    listed = accounts.list_tokens()
    return render_template(
        "admin/tokens.html",
        tokens=listed,
        roles=accounts.ROLES,
        expired={t.id for t in listed if accounts.token_expired(t)},
        owners=[u.name for u in accounts.list_users() if not u.disabled],
    )


@bp.post("/tokens")
@require_role("admin")
def create_token():
    """A token for a user (default: the admin making it), at most with that user's role, maybe expiring."""
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "")
    owner = request.form.get("owner", "").strip() or who()
    if not name or len(name) > 255:
        return _form_error("tokens", "a token needs a name (at most 255 characters)")
    try:
        secret = actions.create_token(actor(), name, role, owner, request.form.get("expires", ""))
    except (ConfigError, NotFound) as exc:
        return _form_error("tokens", str(exc))
    return render_template(
        "admin/secret.html", what=f"API token {name} ({role})", secret=secret, back=url_for("ui.admin.tokens")
    )


@bp.post("/tokens/<int:token_id>/revoke")
@require_role("admin")
def revoke_token(token_id: int):
    name = accounts.token_name(token_id) or abort(404, description=f"no token with id {token_id}")
    actions.revoke_token(actor(), name)
    flash(f"token {name} revoked", "info")
    return redirect(url_for("ui.admin.tokens"), 303)


@bp.get("/audit")
@require_role("admin")
def audit_log():
    before = int_arg("before")
    page = accounts.audit_page(before, AUDIT_PER_PAGE)
    return render_template("admin/audit.html", entries=page.items, more=page.more, before=before)


def _form_error(page: str, message: str):
    """Show the page again with the reason, as a 400 (nothing was changed)."""
    flash(message, "error")
    return (users() if page == "users" else tokens()), 400
