"""Shards: the parts of a run that `fleet worker`s execute (FLEET_EXECUTOR=celery).

A shard's life, and who moves it (every move is one conditional UPDATE, so two
processes racing for a shard cannot both win):

    pending --controller sends it--> sent --a worker claims it--> running --its worker--> done | failed | canceled
       ^                              |  \\--a worker of another version--> refused --controller--> pending
       |                              \\--controller, unclaimed too long--> sent (the message again)
       \\--controller: a check shard whose worker was lost (lease lapsed) -- attempt + 1
                      a converge shard whose worker was lost --> interrupted (never sent again)

The worker that claims a shard gets a random token and holds the shard's lease;
everything it writes (events, verdicts) is fenced by that token in the same
transaction, so once the controller gave a lost shard away, the worker it
presumed dead can write nothing more (fleet.executor.shard).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update

from fleet.drift import TaskResult
from fleet.store.db import db, rowcount
from fleet.store.leases import until
from fleet.store.models import Run, RunOutput, Shard, TaskResultRow
from fleet.store.views import view_of
from fleet.vocabulary import RunStatus, ShardStatus, aware, utcnow

SHARD_FINAL = (ShardStatus.DONE, ShardStatus.FAILED, ShardStatus.INTERRUPTED, ShardStatus.CANCELED)
# A shard its worker finished (to the end, or stopped: canceled, timed out) carries the worker's verdicts.
SHARD_WITH_VERDICTS = (ShardStatus.DONE, ShardStatus.CANCELED)
# Event numbers of a shard start at its own offset, so output and task rows of all shards keep one order:
# shard by shard, attempt by attempt within a shard.
SHARD_SEQ_SPAN = 10**9
ATTEMPT_SEQ_SPAN = 10**6


@dataclass(frozen=True)
class ShardView:
    id: int
    run_id: int
    index: int
    hosts: str  # JSON list; `names` parses it
    status: str
    attempt: int
    worker: str
    reason: str
    outcome: str
    strategy: str
    verdicts: str
    history: str
    token: str  # the claim of the attempt running it: what fences its writes
    lease_expires_at: datetime | None
    sent_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    ansible_path: str = ""  # 'warm' | 'cold: <why>' (Run.ansible_path)

    @property
    def names(self) -> list[str]:
        names: list[str] = json.loads(self.hosts)
        return names

    @property
    def final(self) -> bool:
        return self.status in SHARD_FINAL


def seq_offset(index: int, attempt: int) -> int:
    """Where a shard attempt's event numbers start."""
    return index * SHARD_SEQ_SPAN + attempt * ATTEMPT_SEQ_SPAN


# --- the controller's side -----------------------------------------------------------------


def create_shards(run_id: int, groups: list[list[str]]) -> list[ShardView]:
    """A pending shard per group of host names, in one transaction."""
    rows = [
        Shard(run_id=run_id, index=i, hosts=json.dumps(names), status=ShardStatus.PENDING, attempt=1)
        for i, names in enumerate(groups)
    ]
    db.session.add_all(rows)
    db.session.commit()
    return [view_of(ShardView, row) for row in rows]


def shards_of(run_id: int) -> list[ShardView]:
    rows = db.session.scalars(select(Shard).where(Shard.run_id == run_id).order_by(Shard.index))
    return [view_of(ShardView, row) for row in rows]


def get_shard(shard_id: int) -> ShardView | None:
    row = db.session.get(Shard, shard_id)
    return view_of(ShardView, row) if row else None


def mark_sent(shard: ShardView) -> bool:
    """The shard's message is in the broker (again, for a resend); False if the shard moved meanwhile."""
    return _move(shard, (ShardStatus.PENDING, ShardStatus.SENT), status=ShardStatus.SENT, sent_at=utcnow(), reason="")


def unsend(shard: ShardView) -> bool:
    """A shard marked sent whose message the broker did not take: pending again (if no worker took it)."""
    return _move(shard, (ShardStatus.SENT,), status=ShardStatus.PENDING, sent_at=None)


def note_waiting(shard: ShardView, reason: str) -> None:
    """Why a pending shard is not sent yet (the broker is down)."""
    _move(shard, (ShardStatus.PENDING,), reason=reason)


def back_to_pending(shard: ShardView, reason: str) -> bool:
    """A refused shard goes back to be sent again (another worker may take it); the refusal stays in its history."""
    return _move(
        shard,
        (ShardStatus.REFUSED,),
        status=ShardStatus.PENDING,
        reason=reason,
        history=_history(shard, f"refused: {reason}"),
    )


def rearm_lost(shard: ShardView, note: str) -> bool:
    """A check shard whose worker was lost: forget what its attempt wrote, run it again as attempt + 1.

    Its task rows are deleted so every host ends with the results of one attempt only; its output stays,
    followed by a line saying what happened.
    """
    moved = _move(
        shard,
        (ShardStatus.RUNNING,),
        status=ShardStatus.PENDING,
        attempt=shard.attempt + 1,
        token="",
        worker="",
        lease_expires_at=None,
        started_at=None,
        reason=note,
        history=_history(shard, note),
        commit=False,
        lapsed=True,
    )
    if moved:
        low = seq_offset(shard.index, shard.attempt)
        db.session.execute(
            delete(TaskResultRow).where(
                TaskResultRow.run_id == shard.run_id,
                TaskResultRow.seq >= low,
                TaskResultRow.seq < low + ATTEMPT_SEQ_SPAN,
            )
        )
        db.session.execute(
            insert(RunOutput),
            [{"run_id": shard.run_id, "seq": low + ATTEMPT_SEQ_SPAN - 1, "text": f"\n[fleet] {note}\n"}],
        )
    db.session.commit()
    return moved


def interrupt_lost(shard: ShardView, note: str) -> bool:
    """A converge shard whose worker was lost: `interrupted`, and never sent again."""
    return _move(
        shard,
        (ShardStatus.RUNNING,),
        status=ShardStatus.INTERRUPTED,
        finished_at=utcnow(),
        token="",
        reason=note,
        history=_history(shard, note),
        lapsed=True,
    )


def cancel_unstarted(run_id: int, reason: str) -> int:
    """Shards of a stopped run that no worker started: canceled (a late message finds nothing to claim)."""
    result = db.session.execute(
        update(Shard)
        .where(Shard.run_id == run_id, Shard.status.in_((ShardStatus.PENDING, ShardStatus.SENT, ShardStatus.REFUSED)))
        .values(status=ShardStatus.CANCELED, finished_at=utcnow(), reason=reason)
    )
    db.session.commit()
    return rowcount(result)


def give_up_running(shard: ShardView, reason: str) -> bool:
    """A running shard of a stopped run whose worker never answered the stop: closed as canceled."""
    return _move(
        shard,
        (ShardStatus.RUNNING,),
        status=ShardStatus.CANCELED,
        finished_at=utcnow(),
        token="",
        reason=reason,
        history=_history(shard, reason),
        lapsed=True,
    )


def task_results_of(run_id: int) -> dict[str, list[TaskResult]]:
    """Every task result of a run, per host in order, as workers recorded them (the run's report)."""
    rows = db.session.scalars(select(TaskResultRow).where(TaskResultRow.run_id == run_id).order_by(TaskResultRow.seq))
    found: dict[str, list[TaskResult]] = {}
    for row in rows:
        found.setdefault(row.host, []).append(
            TaskResult(
                seq=row.seq,
                host=row.host,
                task=row.task,
                action=row.action,
                status=row.status,
                unverified=row.unverified,
                note=row.note,
                diff=row.diff,
                duration=row.duration,
                path=row.path,
                handler=row.handler,
                reason=row.reason,
                accepted=row.accepted,
                executed=row.executed,
                rescued=row.rescued,
                cause=row.cause,
                flapping=row.flapping,
            )
        )
    return found


def _history(shard: ShardView, note: str) -> str:
    stamp = utcnow().strftime("%H:%M:%S")
    where = f" on {shard.worker}" if shard.worker else ""
    line = f"{stamp} attempt {shard.attempt}{where}: {note}"
    return f"{shard.history}\n{line}".strip()


def _move(
    shard: ShardView, from_statuses: tuple[str, ...], commit: bool = True, lapsed: bool = False, **values: object
) -> bool:
    """Change a shard still in one of `from_statuses` at the same attempt (with `lapsed`, only while its
    lease is still lapsed: its worker did not renew it meanwhile); False when it moved meanwhile."""
    conditions = [Shard.id == shard.id, Shard.attempt == shard.attempt, Shard.status.in_(from_statuses)]
    if lapsed:
        conditions.append(Shard.lease_expires_at < utcnow())
    result = db.session.execute(update(Shard).where(*conditions).values(**values))
    if commit:
        db.session.commit()
    return rowcount(result) == 1


# --- the worker's side -----------------------------------------------------------------


def claim(shard_id: int, attempt: int, worker: str, lease_seconds: int) -> ShardView | None:
    """Take a sent shard for this worker; None when it is not there to take (already taken, given away,
    canceled: a duplicate or late message)."""
    token = secrets.token_hex(16)
    result = db.session.execute(
        update(Shard)
        .where(Shard.id == shard_id, Shard.attempt == attempt, Shard.status == ShardStatus.SENT)
        .values(
            status=ShardStatus.RUNNING,
            worker=worker,
            token=token,
            started_at=utcnow(),
            reason="",
            lease_expires_at=until(lease_seconds),
        )
    )
    db.session.commit()
    if rowcount(result) != 1:
        return None
    return get_shard(shard_id)


def refuse(shard_id: int, attempt: int, reason: str) -> bool:
    result = db.session.execute(
        update(Shard)
        .where(Shard.id == shard_id, Shard.attempt == attempt, Shard.status == ShardStatus.SENT)
        .values(status=ShardStatus.REFUSED, reason=reason)
    )
    db.session.commit()
    return rowcount(result) == 1


def fence(shard_id: int, token: str, lease_seconds: int, **values: object) -> bool:
    """Renew the lease of a shard this worker still holds, with `values`, in the session's transaction
    (the caller commits); False when the shard was given away (or closed) and nothing must be written."""
    result = db.session.execute(
        update(Shard)
        .where(Shard.id == shard_id, Shard.token == token, Shard.status == ShardStatus.RUNNING)
        .values(lease_expires_at=until(lease_seconds), **values)
    )
    return rowcount(result) == 1


def commit() -> None:
    """Commit what was written under a fence (the fence and the rows in one transaction)."""
    db.session.commit()


def renew(shard_id: int, token: str, lease_seconds: int, **values: object) -> bool:
    held = fence(shard_id, token, lease_seconds, **values)
    db.session.commit()
    return held


def run_stopped(run_id: int) -> bool:
    """Should a worker stop this run's shard: cancel asked, or the run is no longer running (closed as
    interrupted once its controller's lease lapsed, or gone)."""
    row = db.session.execute(select(Run.cancel_requested, Run.status).where(Run.id == run_id)).first()
    return row is None or bool(row.cancel_requested) or row.status != RunStatus.RUNNING


def lease_lapsed(shard: ShardView, now: datetime) -> bool:
    return shard.status == ShardStatus.RUNNING and (
        shard.lease_expires_at is None or aware(shard.lease_expires_at) < now
    )
