"""Workers and shards as operators see them (FLEET_EXECUTOR=celery): who is there, what runs where.

Two sides. The writer side is called by each `fleet worker` process: a
heartbeat every few seconds (`record_heartbeat`, an upsert by the worker's
name) and a last word on a clean stop (`record_stopped`). The reader side
serves `fleet workers`, the web panel and the controller: `list_workers`
derives each worker's state from the clock, `online_capacity` is what the
controller may spread a run over, `run_placement` / `shards_of_run` show
which worker ran which hosts of a run.

A worker's state is never stored, only derived, so a worker killed with -9
turns `lost` by itself once its heartbeat is older than WORKER_STALE_SECONDS:

    online   a heartbeat within WORKER_STALE_SECONDS
    stopped  it said goodbye (`fleet worker` stopped cleanly)
    lost     silent for longer, without a goodbye (killed, its machine down)

Times are the wall clock (they are about real processes), as in `leases`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from fleet.store.db import db
from fleet.store.models import Run, Shard, Worker
from fleet.vocabulary import ShardStatus, aware, utcnow

WORKER_STALE_SECONDS = 30
ONLINE, STOPPED, LOST = "online", "stopped", "lost"
WORKER_STATES = (ONLINE, LOST, STOPPED)  # also the order workers are listed in


@dataclass(frozen=True)
class WorkerView:
    """A worker as it last reported itself, with what the store derives: its state, whether its fleet
    version is the controller's, and how many shards run on it now (from the shards table)."""

    name: str
    host: str
    pid: int | None
    version: str
    concurrency: int
    queues: tuple[str, ...]
    running: int
    started_at: datetime | None
    heartbeat_at: datetime | None
    stopped_at: datetime | None
    refusing: str
    state: str
    version_ok: bool

    def heartbeat_age(self, now: datetime) -> float | None:
        """Seconds since the last heartbeat (None: it never sent one)."""
        return (now - self.heartbeat_at).total_seconds() if self.heartbeat_at else None


@dataclass(frozen=True)
class ShardReport:
    """Part of a run's hosts and what became of it on the worker that ran it (the last attempt);
    `history` holds one line per earlier attempt."""

    index: int
    hosts: tuple[str, ...]
    status: str
    attempt: int
    worker: str
    reason: str
    outcome: str
    strategy: str
    started_at: datetime | None
    finished_at: datetime | None
    history: tuple[str, ...]
    ansible_path: str = ""  # 'warm' | 'cold: <why>' (fleet.shapes.ansible_path_json)


@dataclass(frozen=True)
class RunPlacement:
    """Where a run stands with the workers: why it waits while queued, and its shards (none for a local run)."""

    waiting_reason: str
    shards: tuple[ShardReport, ...]


# --- the writer side: a worker process reports itself --------------------------------------------


def record_heartbeat(
    name: str, host: str, pid: int, version: str, concurrency: int, queues: list[str], running: int, refusing: str = ""
) -> None:
    """The worker `name` is alive now: its row is created or updated (heartbeat_at = now, stopped_at
    cleared) and committed. A new process under a known name (another pid, or after a stop) starts anew."""
    now = utcnow()
    fields = {
        "host": host,
        "pid": pid,
        "version": version,
        "concurrency": concurrency,
        "queues": ",".join(queues),
        "running": running,
        "refusing": refusing,
        "heartbeat_at": now,
        "stopped_at": None,
    }
    if _update_worker(name, pid, fields, now):
        return
    try:
        db.session.add(Worker(name=name, started_at=now, **fields))
        db.session.commit()
    except IntegrityError:  # the same name inserted meanwhile (a restart racing its predecessor): update it
        db.session.rollback()
        _update_worker(name, pid, fields, now)


def _update_worker(name: str, pid: int, fields: dict[str, object], now: datetime) -> bool:
    """Update the row of `name`; False when there is none. started_at moves when the process is new."""
    row = db.session.scalar(select(Worker).where(Worker.name == name))
    if row is None:
        return False
    if row.pid != pid or row.stopped_at is not None:
        row.started_at = now
    for column, value in fields.items():
        setattr(row, column, value)
    db.session.commit()
    return True


def record_stopped(name: str) -> None:
    """The worker `name` stopped cleanly: stopped_at = now, nothing running; committed (no row: nothing)."""
    db.session.execute(update(Worker).where(Worker.name == name).values(stopped_at=utcnow(), running=0))
    db.session.commit()


# --- the reader side -------------------------------------------------------------------------------


def worker_state(heartbeat_at: datetime | None, stopped_at: datetime | None, now: datetime) -> str:
    """online, stopped or lost (see the module's docstring)."""
    if stopped_at is not None:
        return STOPPED
    if heartbeat_at is not None and now - aware(heartbeat_at) <= timedelta(seconds=WORKER_STALE_SECONDS):
        return ONLINE
    return LOST


def list_workers(now: datetime, controller_version: str) -> list[WorkerView]:
    """Every worker ever seen, online first, then lost, then stopped, by name; one query, whatever their number
    (the running shards of all workers are counted in the same statement)."""
    running = (
        select(Shard.worker, func.count().label("shards"))
        .where(Shard.status == ShardStatus.RUNNING)
        .group_by(Shard.worker)
        .subquery()
    )
    rows = db.session.execute(
        select(Worker, func.coalesce(running.c.shards, 0)).outerjoin(running, running.c.worker == Worker.name)
    ).all()
    views = [_worker_view(row, shards, now, controller_version) for row, shards in rows]
    return sorted(views, key=lambda w: (WORKER_STATES.index(w.state), w.name))


def _worker_view(row: Worker, running: int, now: datetime, controller_version: str) -> WorkerView:
    heartbeat, stopped = aware(row.heartbeat_at), aware(row.stopped_at)
    return WorkerView(
        name=row.name,
        host=row.host,
        pid=row.pid,
        version=row.version,
        concurrency=row.concurrency,
        queues=tuple(q for q in (row.queues or "").split(",") if q),
        running=int(running),
        started_at=aware(row.started_at),
        heartbeat_at=heartbeat,
        stopped_at=stopped,
        refusing=row.refusing or "",
        state=worker_state(heartbeat, stopped, now),
        version_ok=row.version == controller_version,
    )


def capacity_of(listed: list[WorkerView]) -> int:
    """What `online_capacity` counts, from workers already listed: online, this version, refusing nothing."""
    return sum(w.concurrency for w in listed if w.state == ONLINE and w.version_ok and not w.refusing)


def online_capacity(now: datetime, version: str) -> int:
    """How many shards the workers can run at once: the concurrency of every online worker of this fleet
    `version` that refuses nothing (a worker that refuses shards is no capacity). 0 when there is none."""
    fresh = now - timedelta(seconds=WORKER_STALE_SECONDS)
    total = db.session.scalar(
        select(func.coalesce(func.sum(Worker.concurrency), 0)).where(
            Worker.heartbeat_at >= fresh, Worker.stopped_at.is_(None), Worker.version == version, Worker.refusing == ""
        )
    )
    return int(total or 0)


def run_placement(run_id: int) -> RunPlacement:
    """The run's waiting reason and its shards in index order, in one query (no run: nothing, no shards)."""
    rows = db.session.execute(
        select(Run.waiting_reason, Shard)
        .outerjoin(Shard, Shard.run_id == Run.id)
        .where(Run.id == run_id)
        .order_by(Shard.index)
    ).all()
    reason = (rows[0][0] or "") if rows else ""
    return RunPlacement(reason, tuple(_shard_report(shard) for _, shard in rows if shard is not None))


def shards_of_run(run_id: int) -> list[ShardReport]:
    """The run's shards in index order (empty for a run the local executor ran)."""
    return list(run_placement(run_id).shards)


def _shard_report(row: Shard) -> ShardReport:
    return ShardReport(
        index=row.index,
        hosts=tuple(_host_names(row.hosts)),
        status=row.status,
        attempt=row.attempt,
        worker=row.worker or "",
        reason=row.reason or "",
        outcome=row.outcome or "",
        strategy=row.strategy or "",
        started_at=aware(row.started_at),
        finished_at=aware(row.finished_at),
        history=tuple(line for line in (row.history or "").splitlines() if line.strip()),
        ansible_path=row.ansible_path or "",
    )


def _host_names(text: str) -> list[str]:
    """The stored JSON list of host names; an unreadable value shows as no hosts rather than a 500."""
    try:
        names = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(name) for name in names] if isinstance(names, list) else []
