"""Users, web sessions, API tokens, failed-credential counts and the audit log.

Passwords are hashed with werkzeug (scrypt); session ids and API tokens are
random and only their SHA-256 is stored, so a database leak reveals none of
them. Sessions live here, not in the cookie alone, so logging out, changing
a password or disabling an account ends them at once. A token belongs to a
user: it never outranks them and dies with their account.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from werkzeug.security import check_password_hash, generate_password_hash

from fleet.errors import AccessDenied, ConfigError, NotFound
from fleet.policy import parse_duration
from fleet.store.db import commit, db
from fleet.store.models import ApiToken, AuditEntry, AuthFailure, User, WebSession
from fleet.store.pages import Page, keyset_page
from fleet.throttle import Limit, retry_after
from fleet.vocabulary import aware, iso, utcnow

ROLES = ("viewer", "operator", "admin")
TOKEN_PREFIX = "flt_"
MIN_PASSWORD_LENGTH = 10


def role_allows(role: str, needed: str) -> bool:
    """viewer < operator < admin: does `role` include what `needed` may do?"""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def add_user(name: str, password: str, role: str) -> User:
    """Create (or reset the password and role of) a user; a reset ends the user's sessions."""
    _check_role(role)
    _check_password(password)
    user = db.session.scalar(select(User).where(User.name == name)) or User(name=name)
    user.password_hash = generate_password_hash(password)
    user.role = role
    user.disabled = False
    db.session.add(user)
    if user.id is not None:
        _drop_sessions(user.id)
    commit()
    return user


def change_password(name: str, password: str) -> User:
    """Set a user's password and end every session they have (a captured cookie dies with the old password)."""
    _check_password(password)
    user = _user_named(name)
    user.password_hash = generate_password_hash(password)
    _drop_sessions(user.id)
    commit()
    return user


def _user_named(name: str) -> User:
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}; see `fleet user list`")
    return user


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def authenticate(name: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None or user.disabled:
        check_password_hash(_dummy_hash(), password)  # same work either way: no user-name oracle by timing
        return None
    return user if check_password_hash(user.password_hash, password) else None


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to check unknown users' passwords against; made on first use: hashing costs half a second,
    which every `fleet` command would pay at import otherwise."""
    return generate_password_hash("fleet-no-such-user")


def get_user(user_id: int) -> User | None:
    user = db.session.get(User, user_id)
    return None if user is None or user.disabled else user


def user_exists(name: str) -> bool:
    return db.session.scalar(select(User.id).where(User.name == name)) is not None


def set_user_disabled(user_id: int, disabled: bool) -> str:
    """Disable (ending its sessions; its tokens stop working) or enable an account; returns its name."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}")
    user.disabled = disabled
    if disabled:
        _drop_sessions(user_id)
    commit()
    return user.name


# --- web sessions ------------------------------------------------------------------


def start_session(user_id: int, lifetime: timedelta) -> str:
    """A new session for a user; returns its id for the cookie (only its digest is stored)."""
    now = utcnow()
    db.session.execute(delete(WebSession).where(WebSession.expires_at < now))  # forget the dead ones
    secret = secrets.token_urlsafe(32)
    db.session.add(WebSession(digest=_digest(secret), user_id=user_id, created_at=now, expires_at=now + lifetime))
    commit()
    return secret


def session_user(secret: str) -> User | None:
    """The user of a live session; None when it ended, expired, never existed or the user is disabled."""
    row = db.session.execute(
        select(User, WebSession.expires_at)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.digest == _digest(secret))
    ).first()
    if row is None:
        return None
    user, expires_at = row
    if user.disabled or aware(expires_at) <= utcnow():
        return None
    return user


def end_session(secret: str) -> None:
    db.session.execute(delete(WebSession).where(WebSession.digest == _digest(secret)))
    commit()


def _drop_sessions(user_id: int) -> None:
    db.session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def user_name(user_id: int) -> str | None:
    return db.session.scalar(select(User.name).where(User.id == user_id))


def token_name(token_id: int) -> str | None:
    return db.session.scalar(select(ApiToken.name).where(ApiToken.id == token_id))


def user_count() -> int:
    return len(db.session.scalars(select(User.id)).all())


# --- API tokens ----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenHolder:
    """Who a valid token acts as: its name, and the lower of its role and its owner's role today."""

    name: str
    role: str
    owner: str | None


def create_token(
    name: str, role: str, created_by: str, owner: str | None = None, expires_in: timedelta | None = None
) -> str:
    """A new API token acting for `owner` (None: the machine's CLI), at most with the owner's role.

    The returned secret is never stored and cannot be shown again.
    """
    _check_role(role)
    if db.session.scalar(select(ApiToken).where(ApiToken.name == name)):
        raise ConfigError(f"a token named {name!r} exists already; pick another name")
    owner_id = _token_owner(owner, role).id if owner is not None else None
    expires_at = utcnow() + expires_in if expires_in is not None else None
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(
        ApiToken(
            name=name,
            token_hash=_digest(secret),
            role=role,
            created_by=created_by,
            owner_id=owner_id,
            expires_at=expires_at,
        )
    )
    commit()
    return secret


def _token_owner(name: str, role: str) -> User:
    user = _user_named(name)
    if user.disabled:
        raise ConfigError(f"user {name!r} is disabled; enable the account or pick another owner")
    if not role_allows(user.role, role):
        raise ConfigError(
            f"a token cannot outrank its owner: {name} is {user.role}, the token asks for {role}; "
            f"pick --role {user.role} or lower"
        )
    return user


def token_identity(secret: str) -> TokenHolder:
    """Who this bearer token acts as; AccessDenied says why not (unknown, revoked, expired, owner disabled)."""
    token = None
    if secret.startswith(TOKEN_PREFIX):
        token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(secret)))
    if token is None:
        raise AccessDenied("unknown API token; check it was copied whole, or ask an admin for a new one")
    owner = token.owner
    _check_token_usable(token, owner)
    token.last_used_at = utcnow()
    commit()
    role = token.role if owner is None else min(token.role, owner.role, key=ROLES.index)
    return TokenHolder(token.name, role, owner.name if owner else None)


def _check_token_usable(token: ApiToken, owner: User | None) -> None:
    ask = "ask an admin for a new token (fleet token create)"
    if token.revoked:
        raise AccessDenied(f"API token {token.name!r} was revoked; {ask}")
    if token.expires_at is not None and aware(token.expires_at) <= utcnow():
        raise AccessDenied(f"API token {token.name!r} expired at {iso(aware(token.expires_at))}; {ask}")
    if token.owner_id is not None and (owner is None or owner.disabled):
        raise AccessDenied(f"API token {token.name!r} belongs to an account that is disabled or deleted; {ask}")


def parse_expiry(text: str | None) -> timedelta | None:
    """How long a new token lives: "30d", "12h", "1d12h"; empty or "never": no end."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    try:
        return parse_duration(text)
    except ValueError:
        raise ConfigError(f"a token's lifetime looks like 30d, 12h or 1d12h (or never), got {text!r}") from None


def token_expired(token: ApiToken, now: datetime | None = None) -> bool:
    return token.expires_at is not None and aware(token.expires_at) <= (now or utcnow())


def revoke_token(name: str) -> None:
    token = db.session.scalar(select(ApiToken).where(ApiToken.name == name))
    if token is None:
        raise NotFound(f"no token named {name!r}")
    token.revoked = True
    commit()


def list_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.name)))


def list_tokens() -> list[ApiToken]:
    """Every token, its owner loaded with it (`token.owner`, None: made with the CLI)."""
    return list(db.session.scalars(select(ApiToken).order_by(ApiToken.name)))


# --- failed credentials (throttling) --------------------------------------------------


def throttle_wait(limit: Limit, key: str, now: datetime) -> int:
    """Seconds to refuse `key` (an account name or an address) under this limit; 0: go ahead."""
    times = db.session.scalars(
        select(AuthFailure.at).where(
            AuthFailure.scope == limit.scope, AuthFailure.key == key[:255], AuthFailure.at > now - limit.window
        )
    )
    return retry_after((aware(at) for at in times), limit, now)


def record_failure(scopes_keys: list[tuple[str, str]], forget_before: datetime) -> None:
    """Count one failure under each (scope, key); failures older than `forget_before` are dropped."""
    db.session.execute(delete(AuthFailure).where(AuthFailure.at < forget_before))
    now = utcnow()
    db.session.add_all([AuthFailure(scope=scope, key=key[:255], at=now) for scope, key in scopes_keys])
    commit()


def clear_failures(scope: str, key: str) -> None:
    db.session.execute(delete(AuthFailure).where(AuthFailure.scope == scope, AuthFailure.key == key[:255]))
    commit()


def audit(actor: str, action: str, target: str = "", detail: str = "", remote_addr: str = "") -> None:
    """Record a state change. Callers pass no secrets in `detail`."""
    db.session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail[:2000], remote_addr=remote_addr))
    commit()


def audit_page(before: int | None = None, size: int = 100) -> Page[AuditEntry]:
    """The audit log newest first, one keyset page (ids < before)."""
    return keyset_page(select(AuditEntry), AuditEntry.id, size, cursor=before)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
