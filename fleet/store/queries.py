"""Reads for the CLI, UI and API; each returns views (`views`) or plain values, in a fixed number of queries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, ScalarResult, Select, SQLColumnExpression, case, func, literal, select, text
from sqlalchemy.orm import QueryableAttribute

from fleet.errors import NotFound
from fleet.store.db import db
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
from fleet.store.pages import Page, keyset_page, newer_page
from fleet.store.views import (
    ApprovalView,
    ControllerView,
    HistogramView,
    HostView,
    InventoryView,
    OutputView,
    RevisionView,
    RunHostView,
    RunView,
    SourceView,
    TaskView,
    V,
    view_of,
)
from fleet.vocabulary import (
    APPROVAL_OPEN_STATUSES,
    CONVERGE_ENDED_STATUSES,
    DRIFT_FIX_BUCKETS,
    RUN_ACTIVE_STATUSES,
    RUN_DURATION_BUCKETS,
    RUN_FINAL_STATUSES,
    ApprovalKind,
    ApprovalStatus,
    RevisionStatus,
    RunKind,
    RunStatus,
    TaskStatus,
    hosts_named_by,
    limits_overlap,
)

PAGE_SIZE = 50
# Output and task results are read in pages: a run with 20,000 output chunks or thousands of
# task results never reaches a page, an API answer or memory all at once.
OUTPUT_PAGE_BYTES = 256 * 1024
OUTPUT_PAGE_CHUNKS = 2000
OUTPUT_READ_BATCH = 64  # rows fetched at a time while filling a page, so a full page stops the read
STDOUT_READ_ROWS = 500
TASK_PAGE_ROWS = 1000
TASK_PAGE_BYTES = 1024 * 1024  # diffs and messages of one page of task results (each diff is capped at 64 KiB)


def ping() -> None:
    """Fail unless the store answers (liveness)."""
    db.session.execute(text("SELECT 1"))


def get_host(name: str) -> HostView:
    host = db.session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise NotFound(f"no host named {name!r}; `fleet status` lists the hosts")
    return _host_view(host)


def _host_view(row: Host) -> HostView:
    return view_of(HostView, row)


def _run_view(row: Run) -> RunView:
    return view_of(RunView, row)


def _revision_view(row: Revision | None) -> RevisionView | None:
    return view_of(RevisionView, row) if row is not None else None


def _approval_view(row: Approval) -> ApprovalView:
    return view_of(ApprovalView, row)


def _approvals(query: Select[Approval]) -> list[ApprovalView]:
    return [_approval_view(row) for row in db.session.scalars(query)]


def _tasks(query: Select[TaskResultRow]) -> list[TaskView]:
    return [view_of(TaskView, row) for row in db.session.scalars(query)]


def verdict_tasks(hosts: list[HostView]) -> dict[str, list[TaskView]]:
    """What explains each host's last check (drifted, unverified, executed tasks), in one query."""
    pairs = [(h.last_check_run_id, h.name) for h in hosts if h.last_check_run_id]
    found: dict[str, list[TaskView]] = {name: [] for _, name in pairs}
    if not pairs:
        return found
    run_ids = {run_id for run_id, _ in pairs}
    wanted = set(pairs)
    rows = db.session.scalars(
        select(TaskResultRow)
        .where(
            TaskResultRow.run_id.in_(run_ids),
            (TaskResultRow.status == TaskStatus.CHANGED)
            | TaskResultRow.unverified.is_(True)
            | TaskResultRow.executed.is_(True),
        )
        .order_by(TaskResultRow.seq)
    )
    for row in rows:
        if (row.run_id, row.host) in wanted:
            found[row.host].append(view_of(TaskView, row))
    return found


def get_run(run_id: int) -> RunView:
    run = db.session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}; `fleet runs` lists them")
    return _run_view(run)


def run_hosts(run_id: int) -> list[RunHostView]:
    query = select(RunHost).where(RunHost.run_id == run_id).order_by(RunHost.host)
    return [view_of(RunHostView, row) for row in db.session.scalars(query)]


def run_verdicts(run_id: int) -> list[tuple[str, RunHostView, list[TaskView]]]:
    """Each host's verdict in a run with the task results that explain it, by host name, in one query.

    The (name, verdict, tasks) triples `fleet.shapes.run_report_json` takes.
    """
    explains = (
        (TaskResultRow.status == TaskStatus.CHANGED)
        | TaskResultRow.unverified.is_(True)
        | TaskResultRow.executed.is_(True)
        | TaskResultRow.flapping.is_(True)
    )
    rows = db.session.execute(
        select(RunHost, TaskResultRow)
        .outerjoin(
            TaskResultRow, (TaskResultRow.run_id == RunHost.run_id) & (TaskResultRow.host == RunHost.host) & explains
        )
        .where(RunHost.run_id == run_id)
        .order_by(RunHost.host, TaskResultRow.seq)
    )
    found: dict[str, tuple[RunHostView, list[TaskView]]] = {}
    for verdict, task in rows:
        entry = found.setdefault(verdict.host, (view_of(RunHostView, verdict), []))
        if task is not None:
            entry[1].append(view_of(TaskView, task))
    return [(name, verdict, tasks) for name, (verdict, tasks) in found.items()]


def run_tasks(run_id: int) -> list[TaskView]:
    return _tasks(select(TaskResultRow).where(TaskResultRow.run_id == run_id).order_by(TaskResultRow.seq))


def run_stdout(run_id: int) -> str:
    """A run's whole output as one string (for callers that need it whole; prefer `iter_run_stdout`)."""
    return "".join(iter_run_stdout(run_id))


def iter_run_stdout(run_id: int, rows: int = STDOUT_READ_ROWS) -> Iterator[str]:
    """A run's whole output in event order, as pieces to write out one after another (chunks joined by newlines).

    `rows` chunks per query, keyset on (seq, id): however long the output,
    memory holds one batch, never the whole text.
    """
    seq, row_id, first = -1, 0, True
    while True:
        batch = db.session.execute(
            select(RunOutput.seq, RunOutput.id, RunOutput.text)
            .where(
                RunOutput.run_id == run_id,
                (RunOutput.seq > seq) | ((RunOutput.seq == seq) & (RunOutput.id > row_id)),
            )
            .order_by(RunOutput.seq, RunOutput.id)
            .limit(rows)
        ).all()
        for seq, row_id, chunk in batch:  # noqa: B007  the last row's seq and id are the next page's cursor
            yield chunk if first else f"\n{chunk}"
            first = False
        if len(batch) < rows:
            return


def output_page(
    run_id: int,
    after_seq: int = 0,
    upto_seq: int | None = None,
    max_bytes: int = OUTPUT_PAGE_BYTES,
    max_chunks: int = OUTPUT_PAGE_CHUNKS,
) -> Page[OutputView]:
    """Output chunks with after_seq < seq (<= upto_seq), in event order, up to `max_bytes` or `max_chunks`.

    One query, its rows streamed so the read stops at the budget. `more` says
    chunks past the page exist; `cursor("seq")` is the next page's after_seq.
    A page holds at least one chunk and never splits the rows of one event.
    """
    query = select(RunOutput).where(RunOutput.run_id == run_id, RunOutput.seq > after_seq)
    if upto_seq is not None:
        query = query.where(RunOutput.seq <= upto_seq)
    rows = db.session.scalars(
        query.order_by(RunOutput.seq, RunOutput.id).limit(max_chunks + 1).execution_options(yield_per=OUTPUT_READ_BATCH)
    )
    taken, left_out = _take_within(rows, OutputView, _output_weight, max_chunks, max_bytes)
    return _whole_events(taken, _seq_of(left_out), lambda seq: _output_of_event(run_id, seq))


def output_tail(
    run_id: int, max_bytes: int = OUTPUT_PAGE_BYTES, max_chunks: int = OUTPUT_PAGE_CHUNKS
) -> Page[OutputView]:
    """The newest output chunks, in event order, up to `max_bytes` or `max_chunks`; `more`: older chunks exist.

    What a live page starts from: the end of the output, then new chunks as they come. One query.
    """
    rows = db.session.scalars(
        select(RunOutput)
        .where(RunOutput.run_id == run_id)
        .order_by(RunOutput.seq.desc(), RunOutput.id.desc())
        .limit(max_chunks + 1)
        .execution_options(yield_per=OUTPUT_READ_BATCH)
    )
    taken, left_out = _take_within(rows, OutputView, _output_weight, max_chunks, max_bytes)
    return Page(list(reversed(taken)), left_out is not None)


def tasks_page(
    run_id: int,
    after_seq: int = 0,
    upto_seq: int | None = None,
    size: int = TASK_PAGE_ROWS,
    max_bytes: int = TASK_PAGE_BYTES,
) -> Page[TaskView]:
    """Task results with after_seq < seq (<= upto_seq), in event order, at most `size` of them and about
    `max_bytes` of diffs and messages (one query, streamed like `output_page`'s).

    Like `output_page`: `cursor("seq")` is the next page's after_seq, and one event's results stay together.
    """
    query = select(TaskResultRow).where(TaskResultRow.run_id == run_id, TaskResultRow.seq > after_seq)
    if upto_seq is not None:
        query = query.where(TaskResultRow.seq <= upto_seq)
    rows = db.session.scalars(
        query.order_by(TaskResultRow.seq, TaskResultRow.id)
        .limit(size + 1)
        .execution_options(yield_per=OUTPUT_READ_BATCH)
    )
    taken, left_out = _take_within(rows, TaskView, _task_weight, size, max_bytes)
    return _whole_events(taken, _seq_of(left_out), lambda seq: _tasks_of_event(run_id, seq))


class _Sequenced(Protocol):
    """A row or view of one event's output or task results: its event's seq."""

    @property
    def seq(self) -> int: ...


StreamedRow = TypeVar("StreamedRow", RunOutput, TaskResultRow)
Seq = TypeVar("Seq", bound=_Sequenced)


def _seq_of(left_out: _Sequenced | None) -> int | None:
    return left_out.seq if left_out is not None else None


def _take_within(
    rows: ScalarResult[StreamedRow], view: type[V], weigh: Callable[[StreamedRow], int], max_rows: int, max_bytes: int
) -> tuple[list[V], StreamedRow | None]:
    """Views of streamed `rows` while they fit in `max_rows` and `max_bytes` (at least one), and the first row
    left out (None when all fit); the rest of the stream is not read."""
    taken: list[V] = []
    size = 0
    try:
        for row in rows:
            size += weigh(row)
            if taken and (len(taken) >= max_rows or size > max_bytes):
                return taken, row
            taken.append(view_of(view, row))
    finally:
        rows.close()
    return taken, None


def _output_weight(row: RunOutput) -> int:
    return len(row.text.encode("utf-8", errors="replace")) + 1


def _task_weight(row: TaskResultRow) -> int:
    return len(row.diff) + len(row.note) + len(row.task) + 200  # a row costs something even when bare


def _whole_events(items: list[Seq], left_out: int | None, rows_of_event: Callable[[int], list[Seq]]) -> Page[Seq]:
    """A page that ends on a whole event: rows sharing the first left-out row's seq go to the next page.

    When that event's rows are all the page would hold, the page is that event, read whole (`rows_of_event`).
    """
    if left_out is None:
        return Page(items, False)
    kept = [item for item in items if item.seq != left_out]
    return Page(kept or rows_of_event(left_out), True)


def _output_of_event(run_id: int, seq: int) -> list[OutputView]:
    return [
        view_of(OutputView, row)
        for row in db.session.scalars(
            select(RunOutput).where(RunOutput.run_id == run_id, RunOutput.seq == seq).order_by(RunOutput.id)
        )
    ]


def _tasks_of_event(run_id: int, seq: int) -> list[TaskView]:
    return _tasks(
        select(TaskResultRow).where(TaskResultRow.run_id == run_id, TaskResultRow.seq == seq).order_by(TaskResultRow.id)
    )


def get_revision(sha: str) -> RevisionView | None:
    return _revision_view(db.session.scalar(select(Revision).where(Revision.sha == sha)))


def last_valid_revision() -> RevisionView | None:
    return _revision_view(
        db.session.scalar(
            select(Revision)
            .where(Revision.status == RevisionStatus.VALID)
            .order_by(Revision.fetched_at.desc(), Revision.id.desc())
        )
    )


def approved_waiting() -> list[ApprovalView]:
    """Approvals an operator granted that the controller has not acted on yet."""
    return _approvals(select(Approval).where(Approval.status == ApprovalStatus.APPROVED).order_by(Approval.id))


def _approval_task_filter() -> ColumnElement[bool]:
    """What an approval covers: drift (changed, not run for real in a check) and tasks check mode could not tell."""
    drift = (TaskResultRow.status == TaskStatus.CHANGED) & TaskResultRow.executed.is_(False)
    return drift | TaskResultRow.unverified.is_(True)


def approval_tasks_of(run_id: int, host: str) -> list[TaskView]:
    """A host's tasks an approval covers in one run: its drift and its unverified tasks, in run order."""
    return _tasks(
        select(TaskResultRow)
        .where(
            TaskResultRow.run_id == run_id,
            TaskResultRow.host == host,
            _approval_task_filter(),
        )
        .order_by(TaskResultRow.seq)
    )


def approval_tasks_of_pairs(pairs: list[tuple[int, str]]) -> dict[tuple[int, str], list[TaskView]]:
    """approval_tasks_of for several (run id, host) pairs, in one query."""
    found: dict[tuple[int, str], list[TaskView]] = {pair: [] for pair in pairs}
    if not pairs:
        return found
    rows = db.session.scalars(
        select(TaskResultRow)
        .where(
            TaskResultRow.run_id.in_({run_id for run_id, _ in pairs}),
            TaskResultRow.host.in_({host for _, host in pairs}),
            _approval_task_filter(),
        )
        .order_by(TaskResultRow.seq)
    )
    for row in rows:
        if (row.run_id, row.host) in found:
            found[(row.run_id, row.host)].append(view_of(TaskView, row))
    return found


def pending_inventory_approvals() -> list[ApprovalView]:
    """Revisions whose inventory jump holds auto converge until an operator approves, newest first."""
    return _approvals(
        select(Approval)
        .where(Approval.kind == ApprovalKind.INVENTORY, Approval.status == ApprovalStatus.PENDING)
        .order_by(Approval.id.desc())
    )


def revision_inventory(sha: str) -> InventoryView | None:
    """The inventory guard's record of one revision, if it judged it."""
    row = db.session.scalar(select(RevisionInventory).where(RevisionInventory.sha == sha))
    return view_of(InventoryView, row) if row else None


def inventory_baseline(sha: str) -> InventoryView | None:
    """The newest accepted inventory of another revision: what ``sha``'s inventory is compared with."""
    row = db.session.scalar(
        select(RevisionInventory)
        .where(RevisionInventory.accepted.is_(True), RevisionInventory.sha != sha)
        .order_by(RevisionInventory.judged_at.desc(), RevisionInventory.id.desc())
        .limit(1)
    )
    return view_of(InventoryView, row) if row else None


def changed_tasks_of(run_id: int, host: str) -> list[TaskView]:
    """A host's drifted tasks in one run (changed, not run for real in a check): what an approval covers."""
    return _tasks(
        select(TaskResultRow)
        .where(
            TaskResultRow.run_id == run_id,
            TaskResultRow.host == host,
            TaskResultRow.status == TaskStatus.CHANGED,
            TaskResultRow.executed.is_(False),
        )
        .order_by(TaskResultRow.seq)
    )


def last_converged_sha() -> str | None:
    """The revision of the newest converge run that reached its end."""
    return db.session.scalar(
        select(Run.revision_sha)
        .where(Run.kind == RunKind.CONVERGE, Run.status.in_(CONVERGE_ENDED_STATUSES))
        .order_by(Run.id.desc())
        .limit(1)
    )


# --- web UI pages: each read is one query, whatever the length of the history --------------


def count_hosts_by_status() -> dict[str, int]:
    """Hosts of the inventory per status, in one GROUP BY."""
    rows = db.session.execute(
        select(Host.status, func.count()).where(Host.in_inventory.is_(True)).group_by(Host.status)
    )
    return {status: count for status, count in rows}


def recent_run_verdicts(limit: int = 30) -> tuple[list[RunView], list[tuple[int, str, str]]]:
    """The newest ended runs that judged hosts (oldest first) and their (run id, host, status) verdicts.

    Two queries, at most `limit` runs: what a drift-over-time chart replays.
    """
    runs = list(
        db.session.scalars(
            select(Run)
            .where(Run.status.not_in(RUN_ACTIVE_STATUSES), Run.hosts_total > 0)
            .order_by(Run.id.desc())
            .limit(limit)
        )
    )
    if not runs:
        return [], []
    verdicts = db.session.execute(
        select(RunHost.run_id, RunHost.host, RunHost.status).where(RunHost.run_id.in_([run.id for run in runs]))
    ).all()
    return [_run_view(run) for run in reversed(runs)], [(run_id, host, status) for run_id, host, status in verdicts]


def host_statuses() -> dict[str, str]:
    """Every inventory host's current status by name (one row per host, never per run)."""
    return dict(db.session.execute(select(Host.name, Host.status).where(Host.in_inventory.is_(True))).all())


def hosts_named(names: list[str]) -> list[HostView]:
    """These hosts as stored (those fleet has seen), in one query."""
    if not names:
        return []
    return [_host_view(host) for host in db.session.scalars(select(Host).where(Host.name.in_(names)))]


def inventory_hosts(status: str | None = None, group: str | None = None) -> list[HostView]:
    """Every inventory host by name, optionally of one status or group, in one query."""
    return [_host_view(host) for host in db.session.scalars(_hosts_query(status, group).order_by(Host.name))]


def hosts_page(
    status: str | None = None, group: str | None = None, after: str | None = None, size: int = 200
) -> Page[HostView]:
    """Inventory hosts by name, one keyset page: names after `after`."""
    return keyset_page(_hosts_query(status, group), Host.name, size, cursor=after, descending=False).map(_host_view)


def _hosts_query(status: str | None, group: str | None) -> Select[Host]:
    query = select(Host).where(Host.in_inventory.is_(True))
    if status:
        query = query.where(Host.status == status)
    if group:
        # groups is a space-separated string: pad it so " web " matches whole names only.
        query = query.where((literal(" ") + Host.groups + literal(" ")).contains(f" {group} ", autoescape=True))
    return query


def inventory_groups() -> list[str]:
    """Every group name of the inventory's hosts, sorted (one query over the hosts, not the history)."""
    names: set[str] = set()
    for groups in db.session.scalars(select(Host.groups).where(Host.in_inventory.is_(True))):
        names.update(groups.split())
    return sorted(names)


def host_history_page(name: str, before: int | None = None, size: int = 20) -> Page[tuple[RunView, RunHostView]]:
    """The runs that touched a host with its verdict in each, newest first, one keyset page."""
    query = select(Run, RunHost).join(RunHost, RunHost.run_id == Run.id).where(RunHost.host == name)
    page = keyset_page(query, RunHost.run_id, size, cursor=before, rows=True)
    return page.map(lambda row: (_run_view(row[0]), view_of(RunHostView, row[1])))


def host_check_tasks(run_id: int | None, host: str) -> list[TaskView]:
    """The drifted, failed, unverified and executed tasks of one host in one run: what its page explains."""
    if not run_id:
        return []
    worth_explaining = (
        TaskResultRow.status.in_((TaskStatus.CHANGED, TaskStatus.FAILED, TaskStatus.UNREACHABLE))
        | TaskResultRow.unverified.is_(True)
        | TaskResultRow.executed.is_(True)
    )
    return _tasks(
        select(TaskResultRow)
        .where(TaskResultRow.run_id == run_id, TaskResultRow.host == host, worth_explaining)
        .order_by(TaskResultRow.seq)
    )


def active_runs(kind: str | None = None) -> list[RunView]:
    """Queued and running runs (a short list by nature), oldest first."""
    query = select(Run).where(Run.status.in_(RUN_ACTIVE_STATUSES)).order_by(Run.id)
    if kind:
        query = query.where(Run.kind == kind)
    return [_run_view(run) for run in db.session.scalars(query)]


def runs_page(
    kind: str | None = None,
    status: str | None = None,
    host: str | None = None,
    trigger: str | None = None,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
) -> Page[RunView]:
    """Newest runs first, one keyset page: ids below `before`, or the page just above `after`.

    `host` keeps the runs that recorded a verdict for that host (queued runs have none yet).
    """
    query, key = select(Run), Run.id
    if host:  # walk the host's (host, run_id) index newest first rather than every run
        query, key = query.join(RunHost, RunHost.run_id == Run.id).where(RunHost.host == host), RunHost.run_id
    for column, value in ((Run.kind, kind), (Run.status, status), (Run.trigger, trigger)):
        if value:
            query = query.where(column == value)
    if after:
        return newer_page(query, key, size, after).map(_run_view)
    return keyset_page(query, key, size, cursor=before).map(_run_view)


def recent_runs(count: int) -> list[RunView]:
    """The newest `count` runs, newest first."""
    return runs_page(size=count).items


def task_results_after(run_id: int, after_seq: int = 0, limit: int = 500) -> list[TaskView]:
    """Task results of a run with seq > after_seq: what a live page has not shown yet."""
    return _tasks(
        select(TaskResultRow)
        .where(TaskResultRow.run_id == run_id, TaskResultRow.seq > after_seq)
        .order_by(TaskResultRow.seq)
        .limit(limit)
    )


def changed_tasks_of_pairs(pairs: list[tuple[int, str]]) -> dict[tuple[int, str], list[TaskView]]:
    """Drifted tasks (changed, not run for real in a check) for several (run id, host) pairs in one query."""
    found: dict[tuple[int, str], list[TaskView]] = {pair: [] for pair in pairs}
    if not pairs:
        return found
    rows = db.session.scalars(
        select(TaskResultRow)
        .where(
            TaskResultRow.run_id.in_({run_id for run_id, _ in pairs}),
            TaskResultRow.host.in_({host for _, host in pairs}),
            TaskResultRow.status == TaskStatus.CHANGED,
            TaskResultRow.executed.is_(False),
        )
        .order_by(TaskResultRow.seq)
    )
    for row in rows:
        if (row.run_id, row.host) in found:
            found[(row.run_id, row.host)].append(view_of(TaskView, row))
    return found


def count_pending_approvals() -> int:
    query = select(func.count()).select_from(Approval).where(Approval.status == ApprovalStatus.PENDING)
    return db.session.scalar(query) or 0


def revisions_page(before: int | None = None, size: int = PAGE_SIZE) -> Page[RevisionView]:
    """Fetched revisions newest first, one keyset page."""
    return keyset_page(select(Revision), Revision.id, size, cursor=before).map(lambda row: view_of(RevisionView, row))


def source_state() -> SourceView | None:
    """Where the source stands (desired revision, last fetch, staleness); None before the first fetch.

    A read never inserts the row (pages only read); `records` writes it.
    """
    row = db.session.get(SourceState, 1)
    return view_of(SourceView, row) if row is not None else None


def desired_sha() -> str | None:
    """The desired revision's sha, None before the first valid fetch."""
    return db.session.scalar(select(SourceState.desired_sha).where(SourceState.id == 1))


def controller_heartbeat() -> datetime | None:
    """When the controller last said it was alive (None if it never ran against this store)."""
    return controller_state().heartbeat_at


def controller_state() -> ControllerView:
    """The controller's bookkeeping (defaults before it ever ran); a read that never inserts the row."""
    row = db.session.get(ControllerState, 1)
    return view_of(ControllerView, row) if row is not None else ControllerView()


def next_queued_run() -> RunView | None:
    """The oldest queued run: the next the controller starts."""
    run = db.session.scalar(select(Run).where(Run.status == RunStatus.QUEUED).order_by(Run.id).limit(1))
    return _run_view(run) if run is not None else None


def get_approval(approval_id: int) -> ApprovalView:
    approval = db.session.get(Approval, approval_id)
    if approval is None:
        raise NotFound(f"no approval with id {approval_id}; `fleet approvals` lists them")
    return _approval_view(approval)


def open_approvals_of(host: str) -> list[ApprovalView]:
    """A host's approvals that still wait (pending) or are about to be acted on (approved)."""
    return _approvals(
        select(Approval)
        .where(Approval.host == host, Approval.status.in_(APPROVAL_OPEN_STATUSES))
        .order_by(Approval.id.desc())
    )


# --- JSON API reads ---------------------------------------------------------------
# Each function below costs one query, whatever the size of the history.


def run_last_seq(run_id: int) -> int:
    """The highest event seq stored for a run (tasks and output share the event counter), 0 if none."""
    tasks = select(func.max(TaskResultRow.seq)).where(TaskResultRow.run_id == run_id).scalar_subquery()
    output = select(func.max(RunOutput.seq)).where(RunOutput.run_id == run_id).scalar_subquery()
    highest = db.session.execute(select(tasks, output)).one()
    return max(highest[0] or 0, highest[1] or 0)


def converge_conflict(limit: str) -> str | None:
    """Why a converge of `limit` must wait (an explanation), or None when nothing stands in its way.

    The one rule the API and the UI apply (`vocabulary.limits_overlap`): a queued
    or running converge conflicts when its limit may touch a host the request
    may touch, judged on the hosts fleet knows (names and groups, no
    ansible-inventory here); and a host the request names or covers that a
    running converge holds locked conflicts too. Three queries at most.
    """
    active = db.session.execute(
        select(Run.id, Run.limit, Run.status)
        .where(Run.kind == RunKind.CONVERGE, Run.status.in_(RUN_ACTIVE_STATUSES))
        .order_by(Run.id)
    ).all()
    known = known_hosts() if active else []
    for run in active:
        if limits_overlap(limit, run.limit, known):
            return _already_converging(limit, run.id, run.status)
    locked = db.session.execute(
        select(HostLock.host, HostLock.run_id)
        .join(Run, Run.id == HostLock.run_id)
        .where(HostLock.host.in_(hosts_named_by(limit, known)), Run.kind == RunKind.CONVERGE)
        .order_by(HostLock.host)
        .limit(1)
    ).first()
    if locked is not None:
        return _already_converging(locked.host, locked.run_id, RunStatus.RUNNING)
    return None


def _already_converging(limit: str, run_id: int, status: str) -> str:
    target = (
        f"host {limit}"
        if limit and not any(ch in limit for ch in ",:*?[!&~")
        else (f"hosts matching {limit!r}" if limit else "every host")
    )
    return f"{target} is already being converged by run {run_id} ({status}); wait for it to finish or cancel it first"


def known_hosts() -> list[tuple[str, list[str]]]:
    """(name, groups) of every inventory host: what host patterns are matched against, in one query."""
    return [
        (name, groups.split())
        for name, groups in db.session.execute(select(Host.name, Host.groups).where(Host.in_inventory.is_(True)))
    ]


def approvals_page(status: str | None = None, before: int | None = None, size: int = PAGE_SIZE) -> Page[ApprovalView]:
    """Approvals newest first, one keyset page (ids < before), optionally of one status."""
    query = select(Approval).where(Approval.status == status) if status else select(Approval)
    return keyset_page(query, Approval.id, size, cursor=before).map(_approval_view)


def run_counts(run_ids: list[int] | None = None) -> dict[tuple[str, str], int]:
    """How many stored runs (or of these) there are per (kind, status), queued and running included, in one
    GROUP BY."""
    query = select(Run.kind, Run.status, func.count()).group_by(Run.kind, Run.status)
    if run_ids is not None:
        query = query.where(Run.id.in_(run_ids))
    return {(kind, status): count for kind, status, count in db.session.execute(query)}


# --- metrics: each read is one aggregate query, however many runs and drifts the history holds ----------


def drift_fix_histogram(bounds: tuple[float, ...] = DRIFT_FIX_BUCKETS) -> HistogramView:
    """How long each drift fixed so far took to reach in_sync (drift_resolutions), in buckets."""
    seconds = DriftResolution.seconds
    row = db.session.execute(select(func.count(), func.sum(seconds), *_bucket_counts(seconds, bounds))).one()
    return _histogram(bounds, row)


def run_totals(
    bounds: tuple[float, ...] = RUN_DURATION_BUCKETS,
) -> tuple[dict[tuple[str, str], int], dict[str, HistogramView]]:
    """Runs per (kind, status), queued and running included, and how long ended runs took per kind, in
    buckets. Both count the runs retention deleted too (folded into pruned_run_durations just before), so
    neither ever goes down. Three queries, whatever the history's length."""
    counts = run_counts()
    live = stored_run_durations(bounds)
    pruned_rows = list(db.session.scalars(select(PrunedRunDurations)))
    for row in pruned_rows:
        for status, count in json.loads(row.statuses or "{}").items():
            counts[(row.kind, status)] = counts.get((row.kind, status), 0) + count
    pruned = {row.kind: _pruned_histogram(bounds, row) for row in pruned_rows}
    durations = {kind: _add_histograms(live.get(kind), pruned.get(kind)) for kind in sorted(set(live) | set(pruned))}
    return counts, durations


def stored_run_durations(
    bounds: tuple[float, ...] = RUN_DURATION_BUCKETS, run_ids: list[int] | None = None
) -> dict[str, HistogramView]:
    """How long the stored ended runs (or these of them) took, in buckets, per kind, in one query
    (runs that never started are left out)."""
    seconds = _seconds_between(Run.started_at, Run.finished_at)
    query = (
        select(Run.kind, func.count(), func.sum(seconds), *_bucket_counts(seconds, bounds))
        .where(Run.status.in_(RUN_FINAL_STATUSES), Run.started_at.is_not(None), Run.finished_at.is_not(None))
        .group_by(Run.kind)
    )
    if run_ids is not None:
        query = query.where(Run.id.in_(run_ids))
    return {row[0]: _histogram(bounds, row[1:]) for row in db.session.execute(query)}


def _pruned_histogram(bounds: tuple[float, ...], row: PrunedRunDurations) -> HistogramView:
    # Counts are stored per bound; a bound added since gets the count of the nearest stored one below it,
    # which keeps the buckets cumulative (never more than the next one up).
    stored = sorted((float(bound), count) for bound, count in json.loads(row.buckets or "{}").items())
    counts = tuple(max((count for bound, count in stored if bound <= wanted), default=0) for wanted in bounds)
    return HistogramView(bounds=tuple(bounds), counts=counts, count=row.count or 0, total=row.total_seconds or 0.0)


def _add_histograms(first: HistogramView | None, second: HistogramView | None) -> HistogramView:
    if first is None or second is None:
        either = first or second
        assert either is not None  # its kind came from the live histograms or the pruned ones
        return either
    return HistogramView(
        bounds=first.bounds,
        counts=tuple(a + b for a, b in zip(first.counts, second.counts, strict=False)),
        count=first.count + second.count,
        total=first.total + second.total,
    )


def _bucket_counts(seconds: SQLColumnExpression[Any], bounds: tuple[float, ...]) -> list[ColumnElement[Any]]:
    return [func.sum(case((seconds <= bound, 1), else_=0)) for bound in bounds]


def _histogram(bounds: tuple[float, ...], row: Sequence[Any]) -> HistogramView:
    # SUM over no rows is NULL, and PostgreSQL's epoch arithmetic gives Decimals: plain numbers out.
    count, total, *counts = row
    return HistogramView(
        bounds=tuple(bounds), counts=tuple(int(c or 0) for c in counts), count=int(count or 0), total=float(total or 0)
    )


def _seconds_between(
    start: QueryableAttribute[datetime | None], end: QueryableAttribute[datetime | None]
) -> ColumnElement[Any]:
    """SQL for the seconds from start to end: SQLite has no interval type, PostgreSQL does."""
    if db.session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)
