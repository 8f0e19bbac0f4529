"""Plain dataclasses the store hands out: runs, hosts, task results, revisions, approvals, the source, detached.

Reads in `queries`, and writes in `records` that hand back what they wrote,
return these, not ORM rows, so nothing above the store can change a row by
accident or trigger a lazy load; the attribute names are the columns', so code
and templates read them the same way. Datetimes come back aware (UTC),
whatever the database gave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from fleet.vocabulary import Coverage, aware

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

V = TypeVar("V", bound="DataclassInstance")


def view_of(cls: type[V], row: object) -> V:
    """A view of `row`: each field of `cls` read from the row's attribute of that name."""
    values = {f.name: getattr(row, f.name) for f in fields(cls)}
    return cls(**{name: aware(value) if isinstance(value, datetime) else value for name, value in values.items()})


@dataclass(frozen=True)
class RunView:
    id: int
    kind: str
    trigger: str
    status: str
    revision_sha: str | None
    limit: str
    requested_by: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str
    hosts_total: int
    hosts_in_sync: int
    hosts_drifted: int
    hosts_unreachable: int
    hosts_failed: int
    hosts_unverified: int
    pid: int | None
    ansible_pid: int | None
    cancel_requested: bool
    cancel_reason: str
    approval_id: int | None
    strategy: str
    lease_holder: str
    lease_expires_at: datetime | None
    waiting_reason: str = ""  # why a queued run waits (scale-out: the broker is down)
    ansible_path: str = ""  # 'warm' | 'cold: <why>' | 'mixed: ...' (shards) | '' not known (fleet.shapes)


@dataclass(frozen=True)
class HostView:
    id: int
    name: str
    address: str
    port: int
    groups: str  # space-separated, as stored; group_list splits it
    in_inventory: bool
    status: str
    message: str
    last_check_at: datetime | None
    last_check_sha: str | None
    last_check_run_id: int | None
    last_converge_at: datetime | None
    last_converge_sha: str | None
    drifted_tasks: int
    verified_tasks: int
    total_tasks: int
    flapping: str
    os: str
    virtualization: str
    key_blocked: bool
    drift_since: datetime | None = None  # when a check first found it drifted; None once in_sync
    last_ok_check_at: datetime | None = None  # the last check that judged it (not unreachable or failed)

    @property
    def group_list(self) -> list[str]:
        return self.groups.split()

    @property
    def coverage(self) -> Coverage:
        return Coverage(self.verified_tasks or 0, self.total_tasks or 0)


@dataclass(frozen=True)
class ControllerView:
    """The controller's bookkeeping that survives a restart (defaults before it ever ran)."""

    fetch_requested: bool = False
    fetch_failures: int = 0
    next_fetch_at: datetime | None = None
    last_scheduled_check_at: datetime | None = None
    commit_checked_sha: str | None = None
    heartbeat_at: datetime | None = None
    pid: int | None = None
    leader_id: str = ""
    leader_pid: int | None = None
    leader_host: str = ""
    leader_expires_at: datetime | None = None


@dataclass(frozen=True)
class RunHostView:
    """One host's verdict in one run, with its task counters."""

    id: int
    run_id: int
    host: str
    status: str
    message: str
    ok: int
    changed: int
    failed: int
    skipped: int
    unreachable: int
    unverified: int
    accepted: int
    verified: int
    executed: int

    @property
    def coverage(self) -> Coverage:
        return Coverage.of(self.verified, self.unverified)


@dataclass(frozen=True)
class TaskView:
    """One task result of one host in one run; `seq` orders it against the run's output."""

    id: int
    run_id: int
    seq: int
    host: str
    task: str
    action: str
    status: str
    unverified: bool
    handler: bool
    note: str
    diff: str
    duration: float
    path: str
    reason: str
    accepted: bool
    executed: bool
    rescued: bool
    cause: str
    flapping: bool


@dataclass(frozen=True)
class RevisionView:
    """A fetched commit and its validation verdict."""

    id: int
    sha: str
    ref: str
    author: str
    authored_at: datetime | None
    message: str
    signature: str
    status: str  # valid | rejected
    error: str
    rewrites_history: bool
    fetched_at: datetime | None


@dataclass(frozen=True)
class ApprovalView:
    """Drift on one host waiting for an operator, or what became of it."""

    id: int
    host: str
    check_run_id: int
    revision_sha: str
    drift_signature: str
    summary: str
    status: str  # pending | approved | applied | superseded | failed
    created_at: datetime | None
    decided_by: str
    decided_at: datetime | None
    converge_run_id: int | None
    note: str
    kind: str  # drift | inventory
    reason: str  # why automation asks, beyond the group's mode


@dataclass(frozen=True)
class InventoryView:
    """A revision's inventory as the inventory guard judged it."""

    sha: str
    hosts: str  # JSON list of host names, as stored; names decodes it
    accepted: bool
    judged_at: datetime  # NOT NULL in the table

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(json.loads(self.hosts or "[]"))


@dataclass(frozen=True)
class SourceView:
    """Where the source stands: the desired revision, the last fetch, staleness."""

    repo: str
    desired_sha: str | None
    head_sha: str | None
    last_fetch_at: datetime | None
    last_error: str
    stale: bool


@dataclass(frozen=True)
class HistogramView:
    """Observations counted into buckets: counts[i] is how many were <= bounds[i] (cumulative, as
    Prometheus wants them); count and total cover every observation, the +Inf bucket included."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float


@dataclass(frozen=True)
class OutputView:
    """One chunk of a run's Ansible output; `seq` orders it against the run's task results."""

    seq: int
    text: str
