"""Writes: revisions, source state, hosts, runs and their results.

Task results and output are written by RunRecorder in batches, one
transaction per batch, never one commit per event.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

from fleet.drift import HostVerdict, TaskResult
from fleet.errors import FleetError, NotFound
from fleet.store import leases, queries
from fleet.store.db import Model, commit, db
from fleet.store.leases import KEPT_LOCK_MESSAGE
from fleet.store.models import (
    Approval,
    ControllerState,
    DriftResolution,
    Host,
    HostLock,
    PrunedRunDurations,
    Revision,
    RevisionInventory,
    Run,
    RunHost,
    RunOutput,
    SourceState,
    TaskResultRow,
)
from fleet.store.views import ApprovalView, RevisionView, RunView, SourceView, view_of
from fleet.text import clean_text
from fleet.vocabulary import (
    APPROVAL_OPEN_STATUSES,
    COUNTED_VERDICTS,
    RUN_ACTIVE_STATUSES,
    RUN_DURATION_BUCKETS,
    RUN_FINAL_STATUSES,
    ApprovalKind,
    ApprovalStatus,
    HostStatus,
    RevisionStatus,
    RunKind,
    RunStatus,
    Trigger,
    aware,
    utcnow,
)

if TYPE_CHECKING:
    from fleet.runner import InventoryHost
    from fleet.source import CommitInfo

BATCH_ROWS = 500
# A check that ends in one of these reached the host and judged it: a successful check (metrics' check age).
JUDGED_VERDICTS = (HostStatus.IN_SYNC, HostStatus.DRIFTED, HostStatus.UNVERIFIED)
BATCH_SECONDS = 0.5


def record_revision(info: CommitInfo, ok: bool, error: str = "", rewrites_history: bool = False) -> RevisionView:
    """Store a fetched commit with its validation result (once per sha)."""
    revision = db.session.scalar(select(Revision).where(Revision.sha == info.sha))
    if revision is None:
        revision = Revision(sha=info.sha)
        db.session.add(revision)
    revision.ref = info.ref
    revision.author = info.author
    revision.authored_at = info.authored_at
    revision.message = info.message
    revision.signature = info.signature
    revision.status = RevisionStatus.VALID if ok else RevisionStatus.REJECTED
    revision.error = error
    revision.rewrites_history = rewrites_history
    commit()
    return view_of(RevisionView, revision)


def note_rewrites_history(sha: str, rewrites_history: bool) -> RevisionView:
    """Judge a stored revision's history flag again (it is about to become desired)."""
    revision = db.session.scalar(select(Revision).where(Revision.sha == sha))
    assert revision is not None  # the caller read it from the store (revisions._judge_history_again)
    revision.rewrites_history = rewrites_history
    commit()
    return view_of(RevisionView, revision)


def _source_row() -> SourceState:
    state = db.session.get(SourceState, 1)
    if state is None:
        state = SourceState(id=1)
        db.session.add(state)
    return state


def record_fetch(repo: str, head_sha: str | None, desired_sha: str | None, error: str = "") -> SourceView:
    """Note the outcome of one fetch; an error marks the source stale but keeps the desired revision."""
    state = _source_row()
    state.repo = repo
    state.last_fetch_at = utcnow()
    state.last_error = error
    state.stale = bool(error)
    if head_sha:
        state.head_sha = head_sha
    if desired_sha:
        state.desired_sha = desired_sha
    commit()
    return view_of(SourceView, state)


def withdraw_desired() -> None:
    """No revision is desired any more (the desired one lost its trust); nothing runs until one is."""
    _source_row().desired_sha = None
    commit()


def sync_hosts(inventory_hosts: Iterable[InventoryHost]) -> None:
    """Make the hosts table match the desired revision's inventory."""
    wanted = {h.name: h for h in inventory_hosts}
    existing = {h.name: h for h in db.session.scalars(select(Host))}
    for name, entry in wanted.items():
        host = existing.get(name) or Host(name=name)
        host.address, host.port = entry.address, entry.port
        host.groups = " ".join(entry.groups)
        host.in_inventory = True
        db.session.add(host)
    for name, host in existing.items():
        if name not in wanted:
            host.in_inventory = False
    commit()


def create_run(
    kind: str,
    trigger: str,
    sha: str | None,
    limit: str,
    requested_by: str,
    pid: int | None,
    lease_seconds: int = leases.DEFAULT_LEASE_SECONDS,
) -> RunView:
    """A run that starts now, in process `pid` (this one when None), which holds its lease from now on."""
    holder = leases.holder_for(pid)
    run = Run(
        kind=kind,
        trigger=trigger,
        status=RunStatus.RUNNING,
        revision_sha=sha,
        limit=limit or "",
        requested_by=requested_by,
        started_at=utcnow(),
        pid=holder.pid,
        lease_holder=holder.id,
        lease_expires_at=leases.until(lease_seconds),
    )
    db.session.add(run)
    commit()
    return view_of(RunView, run)


def start_queued_run(
    run: Run | RunView | int, sha: str, pid: int, lease_seconds: int = leases.DEFAULT_LEASE_SECONDS
) -> RunView:
    """Mark a queued run (its row, view or id) running at `sha` in process `pid`, which holds its lease."""
    holder = leases.holder_for(pid)
    run = _run_row(run)
    run.status = RunStatus.RUNNING
    run.revision_sha = sha
    run.started_at = utcnow()
    run.pid = holder.pid
    run.lease_holder, run.lease_expires_at = holder.id, leases.until(lease_seconds)
    commit()
    return view_of(RunView, run)


def acquire_host_locks(run_id: int, hosts: list[str]) -> list[tuple[str, int]]:
    """Lock every host for run_id, or none: return the (host, holder run) pairs that stood in the way."""
    held = db.session.execute(select(HostLock.host, HostLock.run_id).where(HostLock.host.in_(hosts))).all()
    conflicts = [(host, holder) for host, holder in held if holder != run_id]
    if conflicts:
        return conflicts
    already = {host for host, _ in held}
    wanted = [{"host": h, "run_id": run_id, "acquired_at": utcnow()} for h in hosts if h not in already]
    if not wanted:  # this run holds them all already (an empty insert is an error to SQLAlchemy)
        return []
    try:
        db.session.execute(insert(HostLock), wanted)
        commit()
    except IntegrityError:  # another process took one between our read and our write
        db.session.rollback()
        return acquire_host_locks(run_id, hosts) or [(hosts[0], -1)]
    return []


def release_host_locks(run_id: int, keep: dict[str, str] | None = None) -> None:
    """Free the run's hosts, but those in `keep` (host -> why): their locks outlive the run with the reason."""
    db.session.rollback()  # whatever failed mid-transaction must not keep the locks
    for host, reason in (keep or {}).items():
        db.session.execute(
            update(HostLock)
            .where(HostLock.run_id == run_id, HostLock.host == host)
            .values(kept_reason=reason or KEPT_LOCK_MESSAGE)
        )
    db.session.execute(delete(HostLock).where(HostLock.run_id == run_id, HostLock.host.not_in(list(keep or {}))))
    commit()


@dataclass(frozen=True)
class KeptLock:
    """A host lock kept after its run ended: the run could not confirm its work there stopped."""

    host: str
    run_id: int
    reason: str
    acquired_at: datetime


def kept_locks(hosts: list[str] | None = None) -> list[KeptLock]:
    """The kept host locks (of `hosts`, or all), by host name."""
    query = select(HostLock).where(HostLock.kept_reason != "").order_by(HostLock.host)
    if hosts is not None:
        query = query.where(HostLock.host.in_(hosts))
    rows = db.session.scalars(query).all()
    db.session.rollback()  # end the read
    return [KeptLock(r.host, r.run_id, r.kept_reason, r.acquired_at) for r in rows]


def release_kept_lock(host: str, why: str) -> KeptLock | None:
    """Drop the kept lock of `host` (confirmed stopped, or an operator's release); None when it has none.

    The host keeps reading `incomplete` (nothing about it was proven since), with `why` as its message.
    """
    row = db.session.scalar(select(HostLock).where(HostLock.host == host, HostLock.kept_reason != ""))
    if row is None:
        db.session.rollback()
        return None
    kept = KeptLock(row.host, row.run_id, row.kept_reason, row.acquired_at)
    db.session.delete(row)
    db.session.execute(
        update(Host).where(Host.name == host, Host.message.startswith(KEPT_LOCK_MESSAGE)).values(message=why)
    )
    commit()
    return kept


def note_strategy(run_id: int, strategy: str) -> None:
    db.session.execute(update(Run).where(Run.id == run_id).values(strategy=strategy))
    commit()  # not held open: host probes follow, and other processes write meanwhile


def note_ansible_path(run_id: int, path: str) -> None:
    """How Ansible ran: 'warm' or 'cold: <why>' (fleet.warm.path_text), 'mixed: ...' for shards that differ."""
    db.session.execute(update(Run).where(Run.id == run_id).values(ansible_path=path))
    commit()


def note_ansible_pid(run_id: int, pid: int) -> None:
    db.session.execute(update(Run).where(Run.id == run_id).values(ansible_pid=pid))
    commit()


def request_cancel(run_id: int, reason: str) -> RunView:
    """Ask for a run to stop: a queued run is canceled at once, a running one at its next event."""
    run = db.session.get(Run, run_id)
    assert run is not None  # the caller read the run first (actions.cancel_run)
    if run.status == RunStatus.QUEUED:
        run.status, run.error, run.finished_at = RunStatus.CANCELED, reason, utcnow()
    run.cancel_requested = True
    run.cancel_reason = reason
    commit()
    return view_of(RunView, run)


def note_run_waiting(run_id: int, reason: str) -> None:
    """Why a run waits ('' once it no longer does): the broker is down, a worker refuses its shards."""
    db.session.execute(update(Run).where(Run.id == run_id).values(waiting_reason=reason))
    commit()


def note_cancel(run_id: int, reason: str) -> None:
    """Record why a run is being stopped (the first reason given wins)."""
    run = db.session.get(Run, run_id)
    if run is not None and not run.cancel_reason:
        run.cancel_requested, run.cancel_reason = True, reason
        commit()


def cancel_requested(run_id: int) -> bool:
    return bool(db.session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def cancel_reason(run_id: int) -> str:
    return db.session.scalar(select(Run.cancel_reason).where(Run.id == run_id)) or ""


# --- bounded text: what one event may put in the store ------------------------------

# One event's stdout, diff or message is kept up to this size; the rest is cut and the cut marked.
# A task that prints a 50 MB file must not land whole in the database, nor in every page that reads it.
OUTPUT_CAP_BYTES = 64 * 1024
DIFF_CAP_BYTES = 64 * 1024
NOTE_CAP_BYTES = 16 * 1024
CUT_MARKER = "\u2026 [fleet: {cut} of {what} cut; the event's first {kept} kept{digest}]"


def cap_text(text: str, limit: int, what: str, fingerprint: bool = False) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else its first `limit` bytes and a line saying what was cut.

    `fingerprint` adds the SHA-256 of the whole text to the marker, so two diffs
    that differ only past the cut still differ as stored (an approval pins the
    exact drift by its stored diffs: `plan.drift_signature`).
    """
    if not text:
        return text
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")  # never split a character
    cut = len(data) - len(kept.encode("utf-8", errors="surrogatepass"))
    digest = f"; sha256 of the whole {what} {hashlib.sha256(data).hexdigest()}" if fingerprint else ""
    marker = CUT_MARKER.format(cut=size_text(cut), what=what, kept=size_text(limit), digest=digest)
    return f"{kept}\n{marker}"


def size_text(count: int) -> str:
    """A byte count as people read it: 512 bytes, 64 KiB, 1.2 MB."""
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB" if count % 1024 == 0 else f"{count / 1024:.1f} KiB"
    return f"{count / 1_000_000:.1f} MB"


class RunRecorder:
    """Buffers task results and stdout of one run; flushes them in batches.

    Every text an event brings is capped first (`cap_text`), so a batch holds
    at most BATCH_ROWS capped rows, whatever Ansible printed. A batch the store
    refuses is written again row by row (`_write_each`): a value the store will
    not take costs that value only, replaced by a marked placeholder and named
    in `problems`; a store that refuses even the placeholders is down, and the
    batch is kept whole or not at all. So is a store that says itself it is
    locked, full or gone (`store_down`): then no row is tried again.
    """

    def __init__(self, run_id: int):
        self.run_id = run_id
        self._tasks: list[dict[str, Any]] = []
        self._output: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self.problems: list[str] = []  # each value the store refused and a placeholder took the place of

    def add_task(self, result: TaskResult) -> None:
        self._tasks.append(
            {
                "run_id": self.run_id,
                "seq": result.seq,
                "host": result.host,
                "task": result.task,
                "action": result.action,
                "status": result.status,
                "unverified": result.unverified,
                "handler": result.handler,
                "note": cap_text(result.note, NOTE_CAP_BYTES, "message"),
                "diff": cap_text(result.diff, DIFF_CAP_BYTES, "diff", fingerprint=True),
                "duration": result.duration,
                "path": result.path,
                "reason": result.reason,
                "accepted": result.accepted,
                "executed": result.executed,
                "rescued": result.rescued,
                "cause": result.cause,
                "flapping": result.flapping,
            }
        )
        self._maybe_flush()

    def add_output(self, seq: int, text: str) -> None:
        """Buffer one event's stdout, cut to OUTPUT_CAP_BYTES (the cut is marked in the stored text)."""
        if text:
            self._output.append({"run_id": self.run_id, "seq": seq, "text": cap_text(text, OUTPUT_CAP_BYTES, "output")})
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        pending = len(self._tasks) + len(self._output)
        if pending >= BATCH_ROWS or time.monotonic() - self._last_flush >= BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered in one transaction; a refused batch is written again row by row, values the
        store refuses replaced; if even that is refused (the store is down), none of the batch is kept."""
        try:
            try:
                # Core inserts of the tables: the ORM's bulk path costs more per row than SQLite does.
                if self._tasks:
                    db.session.execute(_table(TaskResultRow).insert(), self._tasks)
                if self._output:
                    db.session.execute(_table(RunOutput).insert(), self._output)
                commit()
            except VALUE_REFUSALS as exc:
                if store_down(exc):
                    raise
                db.session.rollback()
                if not self._write_each(exc):
                    return
        except BaseException:
            db.session.rollback()
            self.discard()
            raise
        self.rows_written += len(self._tasks) + len(self._output)
        self._tasks, self._output = [], []
        self._last_flush = time.monotonic()

    def _write_each(self, refusal: BaseException) -> bool:
        """The refused batch again in one transaction, each row in a savepoint of its own; False when the
        retry may not be written (see `_reopen_batch`). Raises `refusal` when a row is refused even with
        every text replaced: then the store itself refuses, and nothing of the batch is kept."""
        if not self._reopen_batch():
            db.session.rollback()
            self.discard()
            return False
        problems = []
        for table, what, rows, columns in (
            (TaskResultRow, "task result", self._tasks, TASK_TEXT_COLUMNS),
            (RunOutput, "output", self._output, ("text",)),
        ):
            for row in rows:
                replaced = _insert_replacing(table, row, columns)
                if replaced is None:
                    raise refusal
                problems += [_problem(what, row, column, message) for column, message in replaced]
        commit()
        self.problems += problems
        return True

    def _reopen_batch(self) -> bool:
        """Statements the retry's transaction must begin with (a shard's fence); False: write nothing."""
        return True

    def discard(self) -> None:
        """Drop what is buffered (after the store refused a batch, nothing more is written)."""
        self._tasks, self._output = [], []


# What a write of a value the store will not take raises: the database's refusal, or the driver's (a lone
# surrogate is refused by the UTF-8 encoder before the database sees it; psycopg refuses NUL as a ValueError).
VALUE_REFUSALS = (SQLAlchemyError, UnicodeError, ValueError)
# The texts of a task result a placeholder may stand in for (never host, seq, status: what a verdict reads).
TASK_TEXT_COLUMNS = ("diff", "note", "reason", "path", "task", "action")
PLACEHOLDER = "[fleet: the store refused this {column} ({message}); this note stands in its place]"


def store_down(exc: BaseException) -> bool:
    """A refusal of the store itself (locked, full, gone), not of a value: retrying row by row would only wait."""
    return isinstance(exc, (OperationalError, InterfaceError)) or bool(getattr(exc, "connection_invalidated", False))


def _insert_replacing(
    table: type[Model], row: dict[str, Any], columns: tuple[str, ...]
) -> list[tuple[str, str]] | None:
    """Insert `row`; if refused, with one text column replaced by a placeholder, then with all of them.

    Returns the (column, refusal) pairs replaced ([] when the row went in as it was), None when the
    store refused the row even then.
    """
    refusal = _try_insert(table, row)
    if refusal is None:
        return []
    filled = [column for column in columns if row.get(column)]
    for column in filled:
        if _try_insert(table, {**row, column: PLACEHOLDER.format(column=column, message=refusal)}) is None:
            return [(column, refusal)]
    placeholders = {column: PLACEHOLDER.format(column=column, message=refusal) for column in filled}
    if filled and _try_insert(table, {**row, **placeholders}) is None:
        return [(column, refusal) for column in filled]
    return None


def _try_insert(table: type[Model], row: dict[str, Any]) -> str | None:
    """Insert one row in a savepoint: None when it went in, else the store's words for the refusal."""
    try:
        with db.session.begin_nested():
            db.session.execute(_table(table).insert(), [row])
    except VALUE_REFUSALS as exc:
        if store_down(exc):
            raise
        return refusal_text(exc)
    return None


def _table(model: type[Model]) -> Table:
    """A model's Core table (for Core inserts); a declarative model's __table__ is a Table, typed FromClause."""
    return cast(Table, model.__table__)


def refusal_text(exc: BaseException) -> str:
    """The database's (or driver's) own words, without the statement and its parameters, storable and short."""
    words = str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__
    return clean_text(words.splitlines()[0])[:200]


def _problem(what: str, row: dict[str, Any], column: str, message: str) -> str:
    where = f"{row['host']}, '{row['task']}'" if "host" in row else f"event {row['seq']}"
    return clean_text(
        f"the {column} of a {what} ({where[:200]}) was refused by the store ({message}) and replaced by a note"
    )


def _run_row(run: Run | RunView | int) -> Run:
    """The session's row of a run given as a row (merged in if detached), a view, or an id."""
    if isinstance(run, Run):
        return db.session.merge(run)
    row = db.session.get(Run, run if isinstance(run, int) else run.id)
    assert row is not None  # callers name a run they read or started (runs are never deleted while open)
    return row


def finish_run(run: Run | RunView | int, status: str, verdicts: list[HostVerdict], error: str = "") -> RunView:
    """Write each host's verdict, update the hosts, and close the run (given as a row, a view or an id).

    All in one transaction: if the store refuses any of it, none is written. A run
    already closed (interrupted by someone who found its lease lapsed) is left as it is.
    """
    run = _run_row(run)
    if run.status not in RUN_ACTIVE_STATUSES:
        db.session.rollback()
        return view_of(RunView, run)
    run.status = status
    run.error = error
    run.finished_at = utcnow()
    run.pid = None
    run.ansible_pid = None
    _write_run_hosts(run, verdicts)
    _update_hosts(run, verdicts)
    commit()
    return view_of(RunView, run)


def _write_run_hosts(run: Run, verdicts: list[HostVerdict]) -> None:
    rows = [
        {
            "run_id": run.id,
            "host": v.name,
            "status": v.status,
            "message": v.message,
            "ok": v.ok,
            "changed": v.changed,
            "failed": v.failed,
            "skipped": v.skipped,
            "unreachable": v.unreachable,
            "unverified": v.unverified,
            "accepted": v.accepted,
            "verified": v.verified,
            "executed": v.executed,
        }
        for v in verdicts
    ]
    if rows:
        db.session.execute(insert(RunHost), rows)
    counts = {s: sum(1 for v in verdicts if v.status == s) for s in COUNTED_VERDICTS}
    run.hosts_total = len(verdicts)
    run.hosts_in_sync = counts[HostStatus.IN_SYNC]
    run.hosts_drifted = counts[HostStatus.DRIFTED]
    run.hosts_unverified = counts[HostStatus.UNVERIFIED]
    run.hosts_unreachable = counts[HostStatus.UNREACHABLE]
    run.hosts_failed = counts[HostStatus.FAILED]


def _update_hosts(run: Run, verdicts: list[HostVerdict]) -> None:
    hosts = {h.name: h for h in db.session.scalars(select(Host).where(Host.name.in_([v.name for v in verdicts])))}
    for verdict in verdicts:
        if verdict.status == HostStatus.INCOMPLETE and not verdict.message.startswith(KEPT_LOCK_MESSAGE):
            continue  # a stopped run proves nothing about this host; keep what we knew
        if verdict.status == HostStatus.INCOMPLETE:  # its work there may go on: say so until confirmed
            host = hosts.get(verdict.name) or Host(name=verdict.name)
            db.session.add(host)
            host.status, host.message = HostStatus.INCOMPLETE, verdict.message
            continue
        host = hosts.get(verdict.name) or Host(name=verdict.name)
        db.session.add(host)
        _apply_verdict(host, run, verdict)


def _apply_verdict(host: Host, run: Run, verdict: HostVerdict) -> None:
    _track_drift(host, run, verdict.status)
    host.status = verdict.status
    host.message = verdict.message
    if verdict.facts:
        host.os = verdict.facts.get("os", "")
        host.virtualization = verdict.facts.get("virtualization", "")
    if run.kind == RunKind.CHECK:
        host.last_check_at = run.finished_at
        host.last_check_sha = run.revision_sha
        host.last_check_run_id = run.id
        if verdict.status in JUDGED_VERDICTS:
            host.last_ok_check_at = run.finished_at
        host.drifted_tasks = verdict.changed
        host.verified_tasks = verdict.verified
        host.total_tasks = verdict.coverage_total
        host.flapping = json.dumps(sorted(verdict.flapping)) if verdict.flapping else ""
    elif verdict.status == HostStatus.IN_SYNC:
        host.last_converge_at = run.finished_at
        host.last_converge_sha = run.revision_sha
        host.drifted_tasks = 0


def _track_drift(host: Host, run: Run, status: str) -> None:
    """Start a drift episode when a host is first found drifted; end it, recording how long it took,
    only when the host is proven in_sync (unreachable or unverified in between prove nothing)."""
    if status == HostStatus.DRIFTED and host.drift_since is None:
        host.drift_since = run.finished_at
    elif status == HostStatus.IN_SYNC and host.drift_since is not None:
        assert run.finished_at is not None  # finish_run set it before it updates the hosts
        seconds = max(0.0, (aware(run.finished_at) - aware(host.drift_since)).total_seconds())
        db.session.add(
            DriftResolution(
                host=host.name, run_id=run.id, drifted_at=host.drift_since, resolved_at=run.finished_at, seconds=seconds
            )
        )
        host.drift_since = None


def fold_pruned_runs(run_ids: list[int]) -> None:
    """Add these ended runs to pruned_run_durations (how many per status, how long they took), just before
    retention deletes them.

    No commit: the deletion's transaction carries both, so each run is counted either stored or
    folded, never both and never neither (fleet_runs_total and the duration histogram never go down).
    """
    statuses = {key: n for key, n in queries.run_counts(run_ids).items() if key[1] in RUN_FINAL_STATUSES}
    durations = queries.stored_run_durations(RUN_DURATION_BUCKETS, run_ids)
    for kind in sorted({kind for kind, _ in statuses} | set(durations)):
        row = _pruned_runs_row(kind)
        row.statuses = _add_counts(row.statuses, {status: n for (k, status), n in statuses.items() if k == kind})
        histogram = durations.get(kind)
        if histogram is not None:
            row.buckets = _add_counts(
                row.buckets, {repr(b): n for b, n in zip(histogram.bounds, histogram.counts, strict=False)}
            )
            row.count = (row.count or 0) + histogram.count
            row.total_seconds = (row.total_seconds or 0.0) + histogram.total


def _pruned_runs_row(kind: str) -> PrunedRunDurations:
    row = db.session.get(PrunedRunDurations, kind)
    if row is None:
        row = PrunedRunDurations(kind=kind, count=0, total_seconds=0.0, buckets="{}", statuses="{}")
        db.session.add(row)
    return row


def _add_counts(stored: str | None, more: dict[str, int]) -> str:
    """A JSON object of counts with `more` added."""
    counts = json.loads(stored or "{}")
    for key, n in more.items():
        counts[key] = counts.get(key, 0) + n
    return json.dumps(counts, sort_keys=True)


def mark_key_blocked(name: str, blocked: bool) -> None:
    db.session.execute(update(Host).where(Host.name == name).values(key_blocked=blocked))
    commit()


# --- the queue ----------------------------------------------------------------


def enqueue_run(
    kind: str, trigger: str, limit: str, requested_by: str, approval_id: int | None = None
) -> tuple[RunView, bool]:
    """Queue a run; an identical check already queued is joined instead. Returns (run, joined)."""
    if kind == RunKind.CHECK and approval_id is None:
        waiting = db.session.scalar(
            select(Run).where(Run.status == RunStatus.QUEUED, Run.kind == RunKind.CHECK, Run.limit == (limit or ""))
        )
        if waiting is not None:
            return view_of(RunView, waiting), True
    run = Run(
        kind=kind,
        trigger=trigger,
        status=RunStatus.QUEUED,
        limit=limit or "",
        requested_by=requested_by,
        approval_id=approval_id,
    )
    db.session.add(run)
    commit()
    return view_of(RunView, run), False


def _controller_row() -> ControllerState:
    state = db.session.get(ControllerState, 1)
    if state is None:
        state = ControllerState(id=1)
        db.session.add(state)
    return state


def _update_controller(**values: object) -> None:
    state = _controller_row()
    for name, value in values.items():
        setattr(state, name, value)
    commit()


def request_fetch() -> None:
    """Ask the controller to fetch the source now (the webhook's only effect)."""
    _update_controller(fetch_requested=True)


def clear_fetch_request() -> None:
    _update_controller(fetch_requested=False)


def write_heartbeat(now: datetime) -> None:
    """The controller is alive at `now` (the dashboard shows when it last said so)."""
    _update_controller(heartbeat_at=now)


def write_controller_pid(pid: int) -> None:
    _update_controller(pid=pid)


def schedule_fetch(next_at: datetime, failures: int) -> None:
    """When to fetch next, and how many fetches failed in a row (the backoff)."""
    _update_controller(next_fetch_at=next_at, fetch_failures=failures)


def note_check_queued(trigger: str, sha: str | None, now: datetime) -> None:
    """A check was queued at `now`: a commit check also marks its sha as checked.

    Either kind takes the schedule slot (a commit check stands in for the scheduled one).
    """
    values: dict[str, object] = {"last_scheduled_check_at": now}
    if trigger == Trigger.COMMIT:
        values["commit_checked_sha"] = sha
    _update_controller(**values)


def discard_pending() -> None:
    """Throw away what a failed step left half-written in the session."""
    db.session.rollback()


def fail_run(run_id: int, error: str) -> RunView | None:
    """Close a run that could not start or go on as failed (if it is still queued or running)."""
    db.session.rollback()  # whatever failed mid-transaction is not part of the record
    run = db.session.get(Run, run_id)
    if run is not None and run.status in RUN_ACTIVE_STATUSES:
        return finish_run(run, RunStatus.FAILED, [], error)
    return view_of(RunView, run) if run is not None else None


def interrupt_queued_converges(reason: str) -> list[RunView]:
    """Converges queued before a crash do not start by surprise after it."""
    queued = list(db.session.scalars(select(Run).where(Run.status == RunStatus.QUEUED, Run.kind == RunKind.CONVERGE)))
    for run in queued:
        run.status, run.error, run.finished_at = RunStatus.INTERRUPTED, reason, utcnow()
    interrupted = [view_of(RunView, run) for run in queued]  # before the commit expires the rows: no reloads
    commit()
    return interrupted


# --- approvals ------------------------------------------------------------------


def open_approval(
    host: str, check_run_id: int, sha: str, signature: str, summary: str, reason: str = ""
) -> ApprovalView:
    """A pending approval for this drift at this revision (the signature covers both), unless one for the
    very same already waits; the host's other open drift approvals are superseded."""
    existing = db.session.scalars(
        select(Approval).where(
            Approval.host == host, Approval.kind == ApprovalKind.DRIFT, Approval.status.in_(APPROVAL_OPEN_STATUSES)
        )
    ).all()
    for approval in existing:
        if approval.drift_signature == signature:
            return view_of(ApprovalView, approval)
        approval.status, approval.note = (
            ApprovalStatus.SUPERSEDED,
            "the drift or the revision changed; a new approval was opened",
        )
    approval = Approval(
        host=host,
        check_run_id=check_run_id,
        revision_sha=sha,
        drift_signature=signature,
        summary=summary,
        status=ApprovalStatus.PENDING,
        kind=ApprovalKind.DRIFT,
        reason=reason,
    )
    db.session.add(approval)
    commit()
    return view_of(ApprovalView, approval)


def _inventory_row(sha: str, hosts: Iterable[str]) -> RevisionInventory:
    row = db.session.scalar(select(RevisionInventory).where(RevisionInventory.sha == sha))
    if row is None:
        row = RevisionInventory(sha=sha, accepted=False)
        db.session.add(row)
    row.hosts, row.judged_at = json.dumps(sorted(hosts)), utcnow()
    return row


def _supersede_inventory_approvals(other_than: str, note: str) -> None:
    for approval in db.session.scalars(
        select(Approval).where(
            Approval.kind == ApprovalKind.INVENTORY,
            Approval.revision_sha != other_than,
            Approval.status.in_(APPROVAL_OPEN_STATUSES),
        )
    ):
        approval.status, approval.note = ApprovalStatus.SUPERSEDED, note


def accept_inventory(sha: str, hosts: Iterable[str]) -> None:
    """The inventory of ``sha`` may carry auto converge: it is the baseline of the revisions after it.

    Inventory approvals still waiting for other revisions are superseded: the fleet moved on.
    """
    _inventory_row(sha, hosts).accepted = True
    _supersede_inventory_approvals(sha, f"the inventory of {sha[:12]} was accepted since; nothing left to approve")
    commit()


def open_inventory_approval(sha: str, hosts: Iterable[str], check_run_id: int, reason: str) -> ApprovalView:
    """One pending approval that lets auto converge go on at ``sha`` despite its inventory jump.

    The revision's inventory is noted, not accepted; approvals of other
    revisions' jumps are superseded, and one already open for ``sha`` is reused.
    """
    _inventory_row(sha, hosts)
    _supersede_inventory_approvals(sha, f"the desired revision moved on to {sha[:12]}; a new approval was opened")
    approval = db.session.scalar(
        select(Approval).where(
            Approval.kind == ApprovalKind.INVENTORY,
            Approval.revision_sha == sha,
            Approval.status.in_(APPROVAL_OPEN_STATUSES),
        )
    )
    if approval is None:
        approval = Approval(
            host="",
            check_run_id=check_run_id,
            revision_sha=sha,
            drift_signature="",
            summary=reason,
            reason=reason,
            status=ApprovalStatus.PENDING,
            kind=ApprovalKind.INVENTORY,
        )
        db.session.add(approval)
    commit()
    return view_of(ApprovalView, approval)


def _approval_row(approval: Approval | ApprovalView | int) -> Approval:
    """The session's row of an approval given as a row (merged in if detached), a view, or an id."""
    if isinstance(approval, Approval):
        return db.session.merge(approval)
    row = db.session.get(Approval, approval if isinstance(approval, int) else approval.id)
    assert row is not None  # callers name an approval they read (approvals are never deleted while open)
    return row


def decide_approval(approval_id: int, who: str) -> ApprovalView:
    """An operator approves a pending approval; anything already decided is refused (FleetError)."""
    approval = db.session.get(Approval, approval_id)
    if approval is None:
        raise NotFound(f"no approval with id {approval_id}; `fleet approvals` lists them")
    if approval.status != ApprovalStatus.PENDING:
        raise FleetError(f"approval {approval_id} is {approval.status}, not pending; nothing to approve")
    approval.status, approval.decided_by, approval.decided_at = ApprovalStatus.APPROVED, who, utcnow()
    if approval.kind == ApprovalKind.INVENTORY:
        # The operator vouches for this inventory: auto converge goes on at it, and it is the next baseline.
        inventory = db.session.scalar(select(RevisionInventory).where(RevisionInventory.sha == approval.revision_sha))
        if inventory is not None:
            inventory.accepted, inventory.judged_at = True, utcnow()
    commit()
    return view_of(ApprovalView, approval)


def close_approval(
    approval: Approval | ApprovalView | int, status: str, note: str, converge_run_id: int | None = None
) -> None:
    """Settle an approval (given as a row, a view or an id): applied, failed or superseded."""
    approval = _approval_row(approval)
    approval.status, approval.note = status, note
    if converge_run_id:
        approval.converge_run_id = converge_run_id
    commit()
