"""Users, API tokens and the audit log.

Passwords are hashed with werkzeug (scrypt); API tokens are random and
only their SHA-256 is stored, so a database leak reveals neither.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from fleet.errors import ConfigError, NotFound
from fleet.store.db import db
from fleet.store.models import ApiToken, AuditEntry, User
from fleet.store.pages import Page, keyset_page
from fleet.vocabulary import utcnow

ROLES = ("viewer", "operator", "admin")
TOKEN_PREFIX = "flt_"
MIN_PASSWORD_LENGTH = 10


def role_allows(role: str, needed: str) -> bool:
    """viewer < operator < admin: does `role` include what `needed` may do?"""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")


def add_user(name: str, password: str, role: str) -> User:
    """Create (or reset the password and role of) a user."""
    _check_role(role)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    user = db.session.scalar(select(User).where(User.name == name)) or User(name=name)
    user.password_hash = generate_password_hash(password)
    user.role = role
    user.disabled = False
    db.session.add(user)
    db.session.commit()
    return user


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def authenticate(name: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None or user.disabled:
        check_password_hash(_DUMMY_HASH, password)  # same work either way: no user-name oracle by timing
        return None
    return user if check_password_hash(user.password_hash, password) else None


_DUMMY_HASH = generate_password_hash("fleet-no-such-user")


def get_user(user_id: int) -> User | None:
    user = db.session.get(User, user_id)
    return None if user is None or user.disabled else user


def user_exists(name: str) -> bool:
    return db.session.scalar(select(User.id).where(User.name == name)) is not None


def set_user_disabled(user_id: int, disabled: bool) -> str:
    """Disable or enable an account (its sessions end at their next request); returns its name."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    user.disabled = disabled
    db.session.commit()
    return user.name


def user_name(user_id: int) -> str | None:
    return db.session.scalar(select(User.name).where(User.id == user_id))


def token_name(token_id: int) -> str | None:
    return db.session.scalar(select(ApiToken.name).where(ApiToken.id == token_id))


def user_count() -> int:
    return len(db.session.scalars(select(User.id)).all())


def create_token(name: str, role: str, created_by: str) -> str:
    """A new API token; the returned secret is never stored and cannot be shown again."""
    _check_role(role)
    if db.session.scalar(select(ApiToken).where(ApiToken.name == name)):
        raise ConfigError(f"a token named {name!r} exists already; pick another name")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(name=name, token_hash=_digest(secret), role=role, created_by=created_by))
    db.session.commit()
    return secret


def token_identity(secret: str) -> ApiToken | None:
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(secret)))
    if token is None or token.revoked:
        return None
    token.last_used_at = utcnow()
    db.session.commit()
    return token


def revoke_token(name: str) -> None:
    token = db.session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token named {name!r}")
    token.revoked = True
    db.session.commit()


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.name)))


def list_tokens() -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).order_by(ApiToken.name)))


def audit(actor: str, action: str, target: str = "", detail: str = "", remote_addr: str = "") -> None:
    """Record a state change. Callers pass no secrets in `detail`."""
    db.session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail[:2000],
                              remote_addr=remote_addr))
    db.session.commit()


def audit_page(before: int | None = None, size: int = 100) -> Page[AuditEntry]:
    """The audit log newest first, one keyset page (ids < before)."""
    return keyset_page(select(AuditEntry), AuditEntry.id, size, cursor=before)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
