"""The words every part of fleet shares: statuses, kinds, triggers, coverage, time, host patterns.

Pure: no I/O, no SQLAlchemy, no Flask. The enums are `StrEnum`s, so a member
equals the plain string the store keeps (`HostStatus.IN_SYNC == "in_sync"`)
and prints as it; the tuples give each list one order, the order pages and
filters show it in.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import overload


class HostStatus(StrEnum):
    UNKNOWN = "unknown"  # never checked
    IN_SYNC = "in_sync"
    DRIFTED = "drifted"
    UNVERIFIED = "unverified"
    UNREACHABLE = "unreachable"
    FAILED = "failed"
    INCOMPLETE = "incomplete"  # a stopped run proved nothing about it


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"
    TIMEOUT = "timeout"


class RunKind(StrEnum):
    CHECK = "check"
    CONVERGE = "converge"


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    COMMIT = "commit"
    MANUAL = "manual"
    WEBHOOK = "webhook"
    POLICY = "policy"


class TaskStatus(StrEnum):
    """What Ansible said of one task on one host."""

    OK = "ok"
    CHANGED = "changed"  # in a check: drift (unless it ran for real)
    FAILED = "failed"
    SKIPPED = "skipped"
    UNREACHABLE = "unreachable"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    APPLIED = "applied"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class ApprovalKind(StrEnum):
    DRIFT = "drift"  # one host's exact drift at one revision
    INVENTORY = "inventory"  # a revision whose inventory changed more than max_inventory_change allows


class RevisionStatus(StrEnum):
    VALID = "valid"
    REJECTED = "rejected"  # failed validation: nothing ever runs from it


class ShardStatus(StrEnum):
    """One shard of a run on the celery executor: a part of its hosts, sent to a `fleet worker`."""

    PENDING = "pending"
    SENT = "sent"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    LOST = "lost"  # its worker went away: a check shard is sent again, a converge shard ends interrupted
    INTERRUPTED = "interrupted"
    REFUSED = "refused"  # a worker of another version or without the revision would not take it
    CANCELED = "canceled"


class RunnerStatus(StrEnum):
    """How one Ansible run ended, as ansible-runner says it (anything else it says counts as failed)."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"


# One display order per list: the best news first for hosts, the life of a run for runs.
HOST_STATUSES = (
    HostStatus.IN_SYNC,
    HostStatus.DRIFTED,
    HostStatus.UNVERIFIED,
    HostStatus.FAILED,
    HostStatus.UNREACHABLE,
    HostStatus.INCOMPLETE,
    HostStatus.UNKNOWN,
)
# The verdicts a finished run counts in its own row (hosts_in_sync, hosts_drifted, ...).
COUNTED_VERDICTS = (
    HostStatus.IN_SYNC,
    HostStatus.DRIFTED,
    HostStatus.UNVERIFIED,
    HostStatus.UNREACHABLE,
    HostStatus.FAILED,
)
RUN_STATUSES = tuple(RunStatus)
RUN_ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
RUN_FINAL_STATUSES = tuple(s for s in RunStatus if s not in RUN_ACTIVE_STATUSES)
# A converge that reached its end, whatever it did to the hosts (the last converged revision).
CONVERGE_ENDED_STATUSES = (RunStatus.SUCCESSFUL, RunStatus.FAILED)
RUN_KINDS = tuple(RunKind)
TRIGGERS = tuple(Trigger)
APPROVAL_STATUSES = tuple(ApprovalStatus)
APPROVAL_OPEN_STATUSES = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
# Histogram buckets of the metrics (upper bounds, seconds). Drifts get fixed in minutes (auto) to days
# (approve, report); runs take seconds to an hour or two. Counts folded into the store are keyed by these.
DRIFT_FIX_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 259200.0, 604800.0)
RUN_DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


def is_active(run_status: str) -> bool:
    """A queued or running run: it may still change, be canceled, hold hosts."""
    return run_status in RUN_ACTIVE_STATUSES


def is_final(run_status: str) -> bool:
    return run_status in RUN_FINAL_STATUSES


# --- coverage -----------------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    """How much of a host's playbook check mode really evaluated: verified tasks of all counted tasks.

    A counted task is either verified (Ansible evaluated it) or unverified (it
    could not tell), so the total is their sum; this is the only place saying so.
    """

    verified: int
    total: int

    @classmethod
    def of(cls, verified: int | None, unverified: int | None) -> Coverage:
        return cls(verified or 0, (verified or 0) + (unverified or 0))

    @property
    def unchecked(self) -> int:
        return max(self.total - self.verified, 0)

    def as_json(self) -> dict[str, int]:
        return {"verified": self.verified, "total": self.total}

    def __str__(self) -> str:
        return f"{self.verified}/{self.total}"


def coverage_total(verified: int | None, unverified: int | None) -> int:
    return Coverage.of(verified, unverified).total


# --- time -----------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
@overload
def aware(moment: datetime | None) -> datetime | None: ...
def aware(moment: datetime | None) -> datetime | None:
    """The moment with its UTC zone: SQLite hands datetimes back naive, and fleet writes only UTC."""
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with the zone (what the JSON shows), or None for never."""
    moment = aware(moment)
    return moment.isoformat() if moment else None


def epoch_seconds(moment: datetime | None) -> float:
    """Seconds since the epoch, 0 for never."""
    moment = aware(moment)
    return moment.timestamp() if moment else 0.0


# --- host patterns ------------------------------------------------------------------------

PATTERN_SEPARATORS = re.compile(r"[,:]")


def pattern_parts(limit: str) -> list[str]:
    """The parts of an Ansible --limit, split on ',' and ':' as Ansible separates them."""
    return [part.strip() for part in PATTERN_SEPARATORS.split(limit or "") if part.strip()]


def covers(limit: str, host: str, groups: Iterable[str] = ()) -> bool:
    """Might a run with this --limit touch the host? Errs on the side of yes.

    Patterns are not resolved (that needs ansible-inventory): each part is
    matched shell-style against the host's name and groups; an empty limit,
    `all`, exclusions and intersections are taken as a match.
    """
    if not (limit or "").strip():
        return True
    for part in pattern_parts(limit):
        if part[0] in "!&~" or part == "all":
            return True
        if any(fnmatch.fnmatchcase(name, part) for name in [host, *groups]):
            return True
    return False


def limits_overlap(first: str, second: str, known_hosts: Iterable[tuple[str, Iterable[str]]]) -> bool:
    """May two runs with these limits touch a host in common? The one rule for converge conflicts.

    Yes when either limit is every host, when they are the same pattern, or when
    some known (name, groups) host is covered by both. A pattern that matches no
    known host is not guessed at: host locks catch a named host being converged.
    """
    first, second = (first or "").strip(), (second or "").strip()
    if not first or not second or first == second:
        return True
    return any(covers(first, name, groups) and covers(second, name, groups) for name, groups in known_hosts)


def hosts_named_by(limit: str, known_hosts: Iterable[tuple[str, Iterable[str]]]) -> set[str]:
    """The host names a limit may reach: the names it spells out plus the known hosts it covers."""
    named = {part for part in pattern_parts(limit) if part[0] not in "!&~"}
    return named | {name for name, groups in known_hosts if covers(limit, name, groups)}
