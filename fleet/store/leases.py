"""Leases: every running run, and the leading controller, is held by a process that keeps saying so.

A lease is a holder (`host:pid:token`, one per process) and an expiry. The
holder renews it while it works: a run's from the runner's event loop and
cancel poll, the leader lock from the controller's tick. A process killed
with -9 stops renewing; whoever looks next (the controller's tick, `fleet
check`, `fleet runs`, `fleet cancel`) finds the lease lapsed and closes what
it guarded: the run becomes `interrupted` and its host locks are freed. A
holder on this very machine whose pid is gone need not wait for the expiry.

The leader lock is one row (controller_state), taken with a single
conditional UPDATE, so two controllers on one database can never both lead:
the UPDATE succeeds only for the holder itself or once the lease lapsed.
Times here are the wall clock (leases are about real processes), never a
tick's planning time.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from fleet.store.db import db, rowcount
from fleet.store.models import ControllerState, HostLock, Run
from fleet.store.views import RunView, view_of
from fleet.vocabulary import RunStatus, aware, utcnow

DEFAULT_LEASE_SECONDS = 30
# What a host reads (status `incomplete`) while a stopped run could not confirm its work there ended, before
# the reason; its lock is kept meanwhile (HostLock.kept_reason), and no lapsed-run sweep frees it.
KEPT_LOCK_MESSAGE = "remote work may still run"


@dataclass(frozen=True)
class Holder:
    """One process that can hold leases: its machine, its pid, and a token that tells a reused pid apart."""

    host: str
    pid: int
    token: str = ""

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a stored id names (None for an empty or unreadable one)."""
        host, _, rest = (text or "").rpartition(":")
        host, _, pid = host.rpartition(":")
        return cls(host, int(pid), rest) if host and pid.isdigit() else None


_this: Holder | None = None


def this_process() -> Holder:
    """The holder this process leases as (a fresh token after a fork, as the pid changes too)."""
    global _this
    if _this is None or _this.pid != os.getpid():
        _this = Holder(socket.gethostname(), os.getpid(), secrets.token_hex(4))
    return _this


def holder_for(pid: int | None) -> Holder:
    """This process, or another process `pid` on this machine (whose token we cannot know)."""
    me = this_process()
    return me if pid in (None, me.pid) else Holder(me.host, pid)


def until(seconds: int, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=seconds)


# --- runs -----------------------------------------------------------------------------


def claim_run(run_id: int, holder: Holder, seconds: int) -> bool:
    """`holder` works on the running run from now on; False when it is no longer running."""
    return _set_run_lease(run_id, holder, seconds, Run.status == RunStatus.RUNNING)


def renew_run(run_id: int, holder: Holder, seconds: int) -> bool:
    """Push the run's lease `seconds` ahead; False when it was lost (closed by someone else meanwhile)."""
    return _set_run_lease(run_id, holder, seconds, Run.status == RunStatus.RUNNING, Run.lease_holder == holder.id)


def _set_run_lease(run_id: int, holder: Holder, seconds: int, *conditions: ColumnElement[bool]) -> bool:
    result = db.session.execute(
        update(Run)
        .where(Run.id == run_id, *conditions)
        .values(lease_holder=holder.id, lease_expires_at=until(seconds), pid=holder.pid)
    )
    db.session.commit()
    return rowcount(result) == 1


@dataclass(frozen=True)
class LapsedRun:
    """A run closed because its holder stopped renewing: the run as closed, and who held it."""

    run: RunView
    holder: Holder | None


def close_lapsed_runs(
    is_gone: Callable[[Holder], bool], grace_seconds: int = DEFAULT_LEASE_SECONDS, now: datetime | None = None
) -> list[LapsedRun]:
    """Close as `interrupted` every running run whose lease lapsed or whose holder `is_gone`; free their locks.

    A run without a lease (written before leases existed) lapses `grace_seconds` after it started.
    """
    now = now or utcnow()
    running = db.session.scalars(select(Run).where(Run.status == RunStatus.RUNNING)).all()
    lapsed = [(run, Holder.parse(run.lease_holder)) for run in running if _lapsed(run, is_gone, grace_seconds, now)]
    stray = _stray_locks()
    if not lapsed and not stray:
        db.session.rollback()  # end the read, so the next look sees fresh rows
        return []
    interrupted = [(run.id, holder) for run, holder in lapsed if _interrupt(run, holder, now)]
    db.session.execute(
        delete(HostLock).where(
            HostLock.run_id.in_([run_id for run_id, _ in interrupted] + stray), HostLock.kept_reason == ""
        )
    )
    db.session.commit()
    return [LapsedRun(view_of(RunView, db.session.get(Run, run_id)), holder) for run_id, holder in interrupted]


def _stray_locks() -> list[int]:
    """Runs that hold host locks though they are no longer running (their release was refused)."""
    running = select(Run.id).where(Run.status == RunStatus.RUNNING)
    stray = select(HostLock.run_id).where(HostLock.run_id.not_in(running), HostLock.kept_reason == "")
    return list(db.session.scalars(stray.distinct()))


def _lapsed(run: Run, is_gone: Callable[[Holder], bool], grace_seconds: int, now: datetime) -> bool:
    holder = Holder.parse(run.lease_holder)
    if holder is not None and is_gone(holder):
        return True
    expires = run.lease_expires_at or (run.started_at and run.started_at + timedelta(seconds=grace_seconds))
    return expires is None or aware(expires) < now


def _interrupt(run: Run, holder: Holder | None, now: datetime) -> bool:
    """Close the run as seen, unless its holder renewed or closed it meanwhile (then leave it be)."""
    who = f"pid {holder.pid} on {holder.host}" if holder else f"pid {run.pid}"
    since = aware(run.lease_expires_at).strftime("%H:%M:%S UTC") if run.lease_expires_at else "its start"
    error = (
        f"the fleet process ({who}) stopped while this run was running (its lease ran out at {since}); "
        "results recorded so far are kept and nothing was resumed; request the run again if needed"
    )
    seen = (Run.lease_expires_at == run.lease_expires_at) if run.lease_expires_at else Run.lease_expires_at.is_(None)
    result = db.session.execute(
        update(Run)
        .where(
            Run.id == run.id,
            Run.status == RunStatus.RUNNING,
            Run.lease_holder == run.lease_holder,
            seen,
        )
        .values(status=RunStatus.INTERRUPTED, finished_at=now, error=error)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


# --- the leader lock -----------------------------------------------------------------


@dataclass(frozen=True)
class Leader:
    """Who leads the controllers of this store, as the lock row says."""

    id: str
    pid: int | None
    host: str
    expires_at: datetime | None


@dataclass(frozen=True)
class Leadership:
    """The outcome of trying to lead: whether `holder` leads now, and who does."""

    held: bool
    leader: Leader | None


def hold_leadership(holder: Holder, seconds: int) -> Leadership:
    """Take or renew the leader lock for `seconds`, writing the heartbeat with it; or say who holds it."""
    now = utcnow()
    _ensure_controller_row()
    free = or_(
        ControllerState.leader_id == "",
        ControllerState.leader_id.is_(None),
        ControllerState.leader_id == holder.id,
        ControllerState.leader_expires_at < now,
    )
    result = db.session.execute(
        update(ControllerState)
        .where(ControllerState.id == 1, free)
        .values(
            leader_id=holder.id,
            leader_pid=holder.pid,
            leader_host=holder.host,
            leader_expires_at=until(seconds, now),
            heartbeat_at=now,
            pid=holder.pid,
        )
    )
    db.session.commit()
    return Leadership(held=rowcount(result) == 1, leader=current_leader(now))


def renew_leadership(holder: Holder, seconds: int) -> bool:
    """Push the leader lock `seconds` ahead if `holder` still holds it (the heartbeat is not touched)."""
    result = db.session.execute(
        update(ControllerState)
        .where(ControllerState.id == 1, ControllerState.leader_id == holder.id)
        .values(leader_expires_at=until(seconds))
    )
    db.session.commit()
    return rowcount(result) == 1


def release_leadership(holder: Holder) -> None:
    """Give the lock up at a clean stop, so a waiting controller takes over at once."""
    db.session.rollback()
    db.session.execute(
        update(ControllerState)
        .where(ControllerState.id == 1, ControllerState.leader_id == holder.id)
        .values(leader_id="", leader_expires_at=None)
    )
    db.session.commit()


def current_leader(now: datetime | None = None) -> Leader | None:
    """The controller holding an unexpired leader lock, if any."""
    row = db.session.execute(
        select(
            ControllerState.leader_id,
            ControllerState.leader_pid,
            ControllerState.leader_host,
            ControllerState.leader_expires_at,
        ).where(ControllerState.id == 1)
    ).first()
    if row is None or not row.leader_id or row.leader_expires_at is None:
        return None
    expires = aware(row.leader_expires_at)
    return Leader(row.leader_id, row.leader_pid, row.leader_host, expires) if expires >= (now or utcnow()) else None


def _ensure_controller_row() -> None:
    if db.session.get(ControllerState, 1) is not None:
        return
    db.session.add(ControllerState(id=1))
    try:
        db.session.commit()
    except IntegrityError:  # another controller wrote it first
        db.session.rollback()
