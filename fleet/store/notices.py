"""Notifications' memory: each target's rate-limit window and last outcome, and what was told of each host.

Kept in the store so neither the rate limit nor "new drift only" starts over
when fleet restarts. Targets are keyed by a hash of their URL (`notify.target_key`);
only the masked URL is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select

from fleet.notify import Noted, Window, admit
from fleet.store.db import db
from fleet.store.models import NotifiedHost, NotifyTarget
from fleet.vocabulary import aware, utcnow


@dataclass(frozen=True)
class TargetView:
    """One target as `fleet notifications` shows it."""

    display: str
    sent_total: int
    folded: int
    last_sent_at: datetime | None
    last_error: str
    last_error_at: datetime | None


def noted_hosts(names: Iterable[str]) -> dict[str, Noted]:
    """What was last notified about these hosts (absent: nothing)."""
    names = list(names)
    if not names:
        return {}
    rows = db.session.scalars(select(NotifiedHost).where(NotifiedHost.host.in_(names))).all()
    return {r.host: Noted(r.condition, frozenset(json.loads(r.tasks or "[]"))) for r in rows}


def remember_hosts(noted: Mapping[str, Noted]) -> None:
    """Store what is noted of each host now; a host with nothing open loses its row."""
    closed = [name for name, note in noted.items() if not note.condition]
    if closed:
        db.session.execute(delete(NotifiedHost).where(NotifiedHost.host.in_(closed)))
    open_ = {name: note for name, note in noted.items() if note.condition}
    rows = {r.host: r for r in db.session.scalars(select(NotifiedHost).where(NotifiedHost.host.in_(list(open_))))}
    for name, note in open_.items():
        row = rows.get(name) or NotifiedHost(host=name)
        row.condition, row.tasks, row.noted_at = note.condition, json.dumps(sorted(note.tasks)), utcnow()
        db.session.add(row)
    db.session.commit()


def _target(key: str, display: str) -> NotifyTarget:
    row = db.session.scalar(select(NotifyTarget).where(NotifyTarget.key == key))
    if row is None:
        row = NotifyTarget(key=key, display=display, sent_in_window=0, folded=0, sent_total=0, last_error="")
        db.session.add(row)
    row.display = display
    return row


def take_slot(key: str, display: str, now: datetime, limit: int) -> bool:
    """May a message go to this target now (its rate limit)? Counts it when it may."""
    row = _target(key, display)
    window = Window(aware(row.window_start) if row.window_start else None, row.sent_in_window or 0)
    allowed, window = admit(window, now, limit)
    if allowed:
        row.window_start, row.sent_in_window = window.start, window.sent
    db.session.commit()
    return allowed


def note_held(key: str) -> None:
    """One more message held back for this target's next summary."""
    row = db.session.scalar(select(NotifyTarget).where(NotifyTarget.key == key))
    if row is not None:
        row.folded = (row.folded or 0) + 1
        db.session.commit()


def record_outcome(key: str, now: datetime, error: str, folded: int = 0) -> None:
    """A delivery's outcome: sent (counted), or its error kept as the target's last error."""
    row = db.session.scalar(select(NotifyTarget).where(NotifyTarget.key == key))
    if row is None:
        return
    if error:
        row.last_error, row.last_error_at = error[:2000], now
    else:
        row.sent_total, row.last_sent_at = (row.sent_total or 0) + 1, now
    row.folded = max(0, (row.folded or 0) - folded)
    db.session.commit()


def targets() -> list[TargetView]:
    """Every target notified so far, with its last success and last error."""
    rows = db.session.scalars(select(NotifyTarget).order_by(NotifyTarget.id)).all()
    return [
        TargetView(
            r.display,
            r.sent_total or 0,
            r.folded or 0,
            aware(r.last_sent_at) if r.last_sent_at else None,
            r.last_error or "",
            aware(r.last_error_at) if r.last_error_at else None,
        )
        for r in rows
    ]
