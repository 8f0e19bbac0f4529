"""What the controller does next, decided without doing any of it.

Pure on purpose, like policy.py and drift.py: no git, subprocess, SQLAlchemy,
Flask or ansible_runner, and no clock (``now`` is passed in). The controller
gathers what the store knows into the frozen dataclasses below, asks one of
these functions, and carries out the actions it gets back, in order:

    plan_fetch(observed, now)                      -> FetchSource or nothing
    after_fetch(observed, outcome, interval, now)  -> FetchSchedule (interval or backoff)
    plan(desired, observed, queue, approvals, policy, now)
                                                   -> QueueCheck, then ApplyApproval or StartRun
    after_run(run, policy, now, stopping)          -> AcceptInventory or OpenInventoryApproval, Hold,
                                                      OpenApproval, ConvergeBatch or VerifyCheck
    after_batch(progress, run, stopping)           -> the next ConvergeBatch, or Hold and VerifyCheck
    after_recheck(approval, run, signature)        -> CloseApproval (and OpenApproval) or ConvergeApproved
    after_inventory_recheck(approval, run, ...)    -> CloseApproval, then the remediation the guard held
    after_approved_converge(approval, run)         -> CloseApproval (and VerifyCheck)

The fetch is decided apart from the rest because the rest must see the
revision that fetch produced. Follow-ups of a run (rollout batches, verifying
checks, approval steps) are actions too: the controller runs them one after
another, each decided from the outcome of the one before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from fleet import policy
from fleet.drift import ChangedTask, UnverifiedTask, task_key
from fleet.policy import Policy, Rollout
from fleet.vocabulary import ApprovalKind, ApprovalStatus, HostStatus, RunKind, RunStatus, Trigger, aware

MAX_FETCH_BACKOFF = timedelta(minutes=15)
# A run stopped on purpose (cancel, SIGTERM, crash) proves nothing to act on.
STOPPED_STATUSES = (RunStatus.CANCELED, RunStatus.INTERRUPTED)


# --- what the controller observed --------------------------------------------


@dataclass(frozen=True)
class Desired:
    """The desired revision, as far as the plan needs it."""

    sha: str | None
    rewrites_history: bool = False


@dataclass(frozen=True)
class Observed:
    """What the controller remembers between steps (kept in the store, so it survives a restart)."""

    fetch_requested: bool = False
    fetch_failures: int = 0
    next_fetch_at: datetime | None = None
    commit_checked_sha: str | None = None
    last_scheduled_check_at: datetime | None = None


@dataclass(frozen=True)
class QueuedRun:
    """A run waiting in the store's queue, oldest first."""

    id: int
    kind: str
    trigger: str
    limit: str = ""


@dataclass(frozen=True)
class ApprovedDrift:
    """An approval an operator granted that the controller has not acted on yet.

    A drift approval covers one host's exact drift (``drift_signature``) at one
    revision (``sha``); an inventory approval lets auto converge go on at ``sha``
    though its inventory changed more than max_inventory_change allows.
    """

    id: int
    host: str
    drift_signature: str
    sha: str = ""
    kind: str = ApprovalKind.DRIFT


@dataclass(frozen=True)
class HostOutcome:
    """One host's verdict in a finished run, with its groups and drifted task names."""

    name: str
    status: str
    groups: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()  # tasks a converge would change, in run order
    flapping: tuple[str, ...] = ()  # those of them that change on every run
    # The revision this host was last converged to, when the run's revision does not descend from it
    # (or the mirror no longer knows it): converging now could roll the host back.
    diverged_from: str = ""


@dataclass(frozen=True)
class InventoryChange:
    """The inventory of a check's revision against the baseline: the last one auto converge went on at.

    The baseline is the newest earlier revision whose inventory was accepted
    (within the limit, or approved), not merely the previous one, so a second
    commit cannot carry a held jump through.
    """

    sha: str
    hosts: tuple[str, ...]  # the revision's inventory
    baseline_sha: str = ""  # "" when no revision was accepted before: nothing to compare with
    previous: int = 0  # hosts in the baseline
    added: int = 0
    removed: int = 0
    accepted: bool = False  # judged within the limit before, or approved by an operator
    baseline_limit: str | None = None  # max_inventory_change of the baseline's own fleet.yml


@dataclass(frozen=True)
class FinishedRun:
    """A run that ended: what the plan judges and what notifications tell (fleet.notify)."""

    id: int
    kind: str
    trigger: str
    status: str
    limit: str = ""
    sha: str = ""
    hosts: tuple[HostOutcome, ...] = ()
    inventory: InventoryChange | None = None  # observed for checks only
    note: str = ""  # why a converge failed before Ansible ran, when known

    def host(self, name: str) -> HostOutcome | None:
        return next((h for h in self.hosts if h.name == name), None)


@dataclass(frozen=True)
class RolloutProgress:
    """Where an auto converge stands: its batches, the next one to run, and the tallies so far."""

    rollout: Rollout
    batches: tuple[tuple[str, ...], ...]
    index: int = 0
    attempted: int = 0
    failed: int = 0
    converged: tuple[str, ...] = ()

    @property
    def batch(self) -> tuple[str, ...]:
        return self.batches[self.index]


# --- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class FetchSource:
    """Fetch and validate the source now."""


@dataclass(frozen=True)
class QueueCheck:
    """Queue a check of every host; ``commit`` also marks ``sha`` as checked."""

    trigger: Trigger  # commit | schedule
    sha: str


@dataclass(frozen=True)
class StartRun:
    """Run this queued run to its end."""

    run_id: int


@dataclass(frozen=True)
class ApplyApproval:
    """Re-check an approved host before converging exactly the approved drift."""

    approval: ApprovedDrift


@dataclass(frozen=True)
class ConvergeApproved:
    """Converge the host of an approval whose re-check found the very drift approved."""

    approval: ApprovedDrift


@dataclass(frozen=True)
class OpenApproval:
    """Ask an operator to approve the drift ``check_run_id`` found on ``host``; ``reason`` says why, when
    the host's group would not need one."""

    host: str
    check_run_id: int
    sha: str
    reason: str = ""


@dataclass(frozen=True)
class AcceptInventory:
    """Note that the inventory of ``sha`` is within max_inventory_change: the next baseline."""

    sha: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class OpenInventoryApproval:
    """Ask an operator to let auto converge go on at ``sha`` though its inventory jumped (``reason``)."""

    check_run_id: int
    sha: str
    hosts: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class CloseApproval:
    approval_id: int
    status: ApprovalStatus  # applied | superseded | failed
    note: str
    converge_run_id: int | None = None


@dataclass(frozen=True)
class ConvergeBatch:
    """Converge the next batch of a rollout (``progress.batch``)."""

    progress: RolloutProgress


@dataclass(frozen=True)
class VerifyCheck:
    """Check ``limit`` at once to prove what a converge did."""

    limit: str


@dataclass(frozen=True)
class Hold:
    """Drift policy leaves alone for now, and why (logged, nothing else)."""

    hosts: tuple[str, ...]
    reason: str
    warn: bool = False


Action = (
    FetchSource
    | QueueCheck
    | StartRun
    | ApplyApproval
    | ConvergeApproved
    | OpenApproval
    | CloseApproval
    | ConvergeBatch
    | VerifyCheck
    | Hold
    | AcceptInventory
    | OpenInventoryApproval
)


# --- the source ----------------------------------------------------------------


def plan_fetch(observed: Observed, now: datetime) -> FetchSource | None:
    """A fetch when the webhook asked for one, none was ever scheduled, or the scheduled time came."""
    next_at = observed.next_fetch_at
    if observed.fetch_requested or next_at is None or aware(now) >= aware(next_at):
        return FetchSource()
    return None


@dataclass(frozen=True)
class FetchSchedule:
    """When to fetch next, and how many fetches in a row could not reach the remote."""

    next_at: datetime
    failures: int


def after_fetch(observed: Observed, outcome: str, interval_seconds: int, now: datetime) -> FetchSchedule:
    """The next fetch once this one ended "fetched", "rejected" or "stale" (the remote failed: back off)."""
    failures = observed.fetch_failures + 1 if outcome == "stale" else 0
    return FetchSchedule(next_fetch_at(now, interval_seconds, failures), failures)


def next_fetch_at(now: datetime, interval_seconds: int, failures: int) -> datetime:
    """When to fetch again: after the poll interval, doubled per failure in a row, capped at 15 minutes."""
    interval = timedelta(seconds=interval_seconds)
    backoff: timedelta = interval * (2 ** max(failures - 1, 0))
    return now + min(backoff, max(MAX_FETCH_BACKOFF, interval))


# --- the loop's plan -----------------------------------------------------------


def plan(
    desired: Desired,
    observed: Observed,
    queue: Sequence[QueuedRun],
    approvals: Sequence[ApprovedDrift],
    rules: Policy,
    now: datetime,
) -> list[Action]:
    """The loop's next actions after the source is synced, in the order to carry them out.

    A new desired revision queues a commit check (standing in for the next
    scheduled one); else a due schedule queues a scheduled check. Then one
    approved approval is applied, or else the oldest queued run is started:
    approvals go first, so an operator's decision never waits behind a queue.
    """
    actions: list[Action] = list(plan_checks(desired, observed, rules, now))
    if approvals:
        actions.append(ApplyApproval(approvals[0]))
    elif queue:
        actions.append(StartRun(queue[0].id))
    return actions


def plan_checks(desired: Desired, observed: Observed, rules: Policy, now: datetime) -> list[QueueCheck]:
    """A commit check for a revision not checked yet, else a scheduled check when one is due."""
    if not desired.sha:
        return []
    if desired.sha != observed.commit_checked_sha:
        return [QueueCheck(Trigger.COMMIT, desired.sha)]
    if policy.check_due(rules, observed.last_scheduled_check_at, now):
        return [QueueCheck(Trigger.SCHEDULE, desired.sha)]
    return []


# --- after a run from the queue: remediation -----------------------------------


def after_run(run: FinishedRun | None, rules: Policy, now: datetime, stopping: bool) -> list[Action]:
    """What follows a run taken from the queue.

    A check's drift goes to each host's remediation mode; a converge someone
    asked for ends, like a policy one, with a check that proves the result.
    Nothing follows a run that did not start, was stopped, or was the
    policy's own.
    """
    if run is None or run.trigger == Trigger.POLICY or run.status in STOPPED_STATUSES:
        return []
    if run.kind == RunKind.CHECK:
        return remediate(run, rules, now, stopping)
    return [] if stopping else [VerifyCheck(run.limit)]


def remediate(check: FinishedRun, rules: Policy, now: datetime, stopping: bool) -> list[Action]:
    """Act on a check's drift as each host's group says: report, approve or auto.

    Automation never acts on doubt: a host whose last converge the revision
    does not descend from waits for an approval naming why, whatever its group,
    and an inventory jump above max_inventory_change holds the whole rollout
    until one approval releases it. Holds and approvals come before the rollout.
    """
    drifted = [h for h in check.hosts if h.status == HostStatus.DRIFTED]
    holds: list[Action] = [_flapping_hold(h) for h in drifted if only_flapping(h)]
    by_mode = modes_of([h for h in drifted if not only_flapping(h)], rules)
    approvals = [OpenApproval(name, check.id, check.sha, approval_reason(check, name)) for name in by_mode["approve"]]
    auto = [name for name in by_mode["auto"] if not _diverged(check, name)]
    diverged = [name for name in by_mode["auto"] if _diverged(check, name)]
    guard, held = guard_inventory(check, rules, auto)
    return (
        guard
        + holds
        + approvals
        + [a for name in diverged for a in hold_diverged(check, name)]
        + auto_converge([] if held else auto, rules, now, stopping)
    )


def _diverged(check: FinishedRun, name: str) -> str:
    host = check.host(name)
    return host.diverged_from if host else ""


def approval_reason(check: FinishedRun, name: str) -> str:
    """Why this host needs an approval beyond its group's mode ('' when it does not)."""
    converged = _diverged(check, name)
    if not converged:
        return ""
    return (
        f"desired revision {check.sha[:12]} does not descend from {converged[:12]}, which this host was "
        "converged to: history was rewritten or rolled back"
    )


def hold_diverged(check: FinishedRun, name: str) -> list[Action]:
    """An auto host the revision could roll back: held, with an approval that names the reason."""
    reason = approval_reason(check, name)
    return [
        Hold((name,), f"auto converge of {name} held: {reason}; it waits for an approval", warn=True),
        OpenApproval(name, check.id, check.sha, reason),
    ]


# --- the inventory guard --------------------------------------------------------------


def guard_inventory(check: FinishedRun, rules: Policy, auto: Sequence[str]) -> tuple[list[Action], bool]:
    """The inventory guard's actions for a check, and whether it holds the auto converge of ``auto``.

    An inventory within the limit becomes the next baseline. One above it holds
    every auto host and asks for one approval for the revision; with no auto
    drift there is nothing to hold, and the revision is judged again at the next check.
    """
    change = check.inventory
    if change is None or change.accepted:
        return [], False
    reason = inventory_hold_reason(change, rules)
    if reason is None:
        return [AcceptInventory(change.sha, change.hosts)], False
    if not auto:
        return [], False
    names = ", ".join(sorted(auto))
    return [
        Hold(
            tuple(sorted(auto)),
            f"auto converge of {names} waits: {reason}; approve the inventory change to go on",
            warn=True,
        ),
        OpenInventoryApproval(check.id, change.sha, change.hosts, reason),
    ], True


def inventory_hold_reason(change: InventoryChange, rules: Policy) -> str | None:
    """Why the inventory change holds auto converge (None when it does not).

    Both this revision's limit and the baseline's count, so a commit cannot
    lift the guard and jump past it at once. The first revision has nothing to compare with.
    """
    if not change.baseline_sha:
        return None
    changed = change.added + change.removed
    limits = [
        (rules.max_inventory_change, ""),
        (change.baseline_limit, f" (the limit of {change.baseline_sha[:12]}, the last accepted revision)"),
    ]
    for limit, whose in limits:
        if policy.inventory_change_exceeds(limit, change.previous, changed):
            return (
                f"inventory went from {change.previous} to {len(change.hosts)} hosts ({_delta(change)}), "
                f"above max_inventory_change {limit}{whose}"
            )
    return None


def _delta(change: InventoryChange) -> str:
    parts = [f"+{change.added}" if change.added else "", f"-{change.removed}" if change.removed else ""]
    return ", ".join(p for p in parts if p) or "0"


def only_flapping(host: HostOutcome) -> bool:
    """Is all of a host's drift in tasks that change on every run? A converge would not fix it."""
    return bool(host.flapping) and len(host.flapping) == len(host.drift)


def _flapping_hold(host: HostOutcome) -> Hold:
    return Hold(
        (host.name,),
        f"drift on {host.name} is only in tasks that are not idempotent "
        f"({', '.join(host.flapping)}): not converged by policy",
    )


def modes_of(hosts: Sequence[HostOutcome], rules: Policy) -> dict[str, list[str]]:
    """Host names by remediation mode (first matching rule of fleet.yml wins)."""
    by_mode: dict[str, list[str]] = {mode: [] for mode in policy.MODES}
    for host in hosts:
        by_mode[policy.mode_for(rules, host.groups)].append(host.name)
    return by_mode


def auto_converge(hosts: Sequence[str], rules: Policy, now: datetime, stopping: bool) -> list[Action]:
    """Start a rollout of ``hosts``, unless no allow window is open."""
    if not hosts:
        return []
    names = ", ".join(hosts)
    if not policy.window_open(rules, now):
        return [Hold(tuple(hosts), f"auto converge of {names} waits for the next allow window")]
    return start_rollout(sorted(hosts), rules.rollout, stopping)


# --- rollout: canary, batches, stop rules ---------------------------------------


def start_rollout(hosts: Sequence[str], rollout: Rollout, stopping: bool) -> list[Action]:
    """The first batch of a rollout of ``hosts`` (the canary, when there is one)."""
    batches = tuple(tuple(batch) for batch in policy.rollout_batches(rollout, hosts))
    return next_rollout_step(RolloutProgress(rollout, batches), stopping)


def next_rollout_step(progress: RolloutProgress, stopping: bool) -> list[Action]:
    """The next batch, or once none is left (or fleet is stopping) the verifying check."""
    if progress.index < len(progress.batches) and not stopping:
        return [ConvergeBatch(progress)]
    return verify_rollout(progress, stopping)


def verify_rollout(progress: RolloutProgress, stopping: bool) -> list[Action]:
    """One check of every host the rollout converged, to confirm each is in sync."""
    if progress.converged and not stopping:
        return [VerifyCheck(",".join(progress.converged))]
    return []


def after_batch(progress: RolloutProgress, run: FinishedRun | None, stopping: bool) -> list[Action]:
    """Tally the batch just converged; go on, or stop (canary failed, too many failed) and verify."""
    batch_failed = failed_hosts(progress.batch, run)
    done = tally_batch(progress, batch_failed)
    reason = rollout_stop_reason(progress, batch_failed, done)
    if reason:
        return [Hold(_left_after(done), reason, warn=True)] + verify_rollout(done, stopping)
    return next_rollout_step(done, stopping)


def failed_hosts(batch: Sequence[str], run: FinishedRun | None) -> tuple[str, ...]:
    """The hosts a converge left out of sync; all of the batch when the run never started."""
    if run is None:
        return tuple(batch)
    return tuple(h.name for h in run.hosts if h.status != HostStatus.IN_SYNC)


def tally_batch(progress: RolloutProgress, batch_failed: Sequence[str]) -> RolloutProgress:
    """The progress once the current batch ended with ``batch_failed``."""
    batch = progress.batch
    return replace(
        progress,
        index=progress.index + 1,
        attempted=progress.attempted + len(batch),
        failed=progress.failed + len(batch_failed),
        converged=progress.converged + tuple(h for h in batch if h not in batch_failed),
    )


def rollout_stop_reason(before: RolloutProgress, batch_failed: Sequence[str], after: RolloutProgress) -> str | None:
    """Why the rollout stops after this batch: the canary failed, or more than max_fail_percentage did."""
    rollout = before.rollout
    canary_failed = before.index == 0 and rollout.canary > 0 and bool(batch_failed)
    if not (canary_failed or policy.should_stop(rollout, after.attempted, after.failed)):
        return None
    what = "the canary failed" if canary_failed else "too many hosts failed"
    return (
        f"rollout stopped, {what}: {after.failed} of {after.attempted} hosts failed "
        f"(max {rollout.max_fail_percentage}%)"
    )


def _left_after(progress: RolloutProgress) -> tuple[str, ...]:
    return tuple(host for batch in progress.batches[progress.index :] for host in batch)


# --- approvals -----------------------------------------------------------------------


def after_recheck(approval: ApprovedDrift, run: FinishedRun | None, signature: str) -> list[Action]:
    """The approval's fate once its host was re-checked; ``signature`` is the drift that check found.

    Converge only at the approved revision and when the drift (changed and
    unverified tasks) is still exactly what was approved; drift that vanished
    closes the approval, anything else asks again.
    """
    if run is None or run.status == RunStatus.CANCELED:
        return [CloseApproval(approval.id, ApprovalStatus.FAILED, "the re-check before converging did not finish")]
    host = run.host(approval.host)
    if host is None or host.status != HostStatus.DRIFTED:
        return [CloseApproval(approval.id, ApprovalStatus.SUPERSEDED, "no drift left to converge when re-checked")]
    if run.sha != approval.sha:
        note = (
            f"the desired revision changed since it was approved ({approval.sha[:12]} -> {run.sha[:12]}); asking again"
        )
    elif signature != approval.drift_signature:
        note = "the drift changed since it was approved; asking again"
    else:
        return [ConvergeApproved(approval)]
    return [
        CloseApproval(approval.id, ApprovalStatus.SUPERSEDED, note),
        OpenApproval(approval.host, run.id, run.sha, approval_reason(run, approval.host)),
    ]


def after_inventory_recheck(
    approval: ApprovedDrift, run: FinishedRun | None, rules: Policy, now: datetime, stopping: bool
) -> list[Action]:
    """An approved inventory change, once every host was checked again: applied, then the held remediation.

    Only at the approved revision: if the desired revision moved on, the new
    one is judged on its own.
    """
    if run is None or run.status in STOPPED_STATUSES:
        return [CloseApproval(approval.id, ApprovalStatus.FAILED, "the check before the rollout did not finish")]
    if run.sha != approval.sha:
        return [
            CloseApproval(
                approval.id,
                ApprovalStatus.SUPERSEDED,
                f"the desired revision moved on to {run.sha[:12]}; its inventory is judged on its own",
            )
        ]
    return [
        CloseApproval(
            approval.id,
            ApprovalStatus.APPLIED,
            f"inventory change of {run.sha[:12]} accepted; auto converge goes on",
            run.id,
        )
    ] + remediate(run, rules, now, stopping)


def after_approved_converge(approval: ApprovedDrift, run: FinishedRun | None) -> list[Action]:
    """Applied (then verified) when every host came out in sync; failed otherwise."""
    ok = run is not None and all(h.status == HostStatus.IN_SYNC for h in run.hosts)
    close = CloseApproval(
        approval.id,
        ApprovalStatus.APPLIED if ok else ApprovalStatus.FAILED,
        "converged and verified" if ok else "the converge did not succeed",
        run.id if run else None,
    )
    return [close, VerifyCheck(approval.host)] if ok else [close]


def drift_signature(sha: str, changed: Iterable[ChangedTask], unverified: Iterable[UnverifiedTask] = ()) -> str:
    """A fingerprint of one revision and exactly which tasks drifted and how, to pin what an approval covers.

    ``changed`` tasks count by key (file and name), action and diff;
    ``unverified`` ones (check mode could not tell) by key, action and reason.
    Anything with ``task``, ``path``, ``action`` and ``diff``/``reason`` will do;
    their order does not matter.
    """
    lines = sorted(
        [f"changed\0{task_key(t)}\0{t.action}\0{t.diff}" for t in changed]
        + [f"unverified\0{task_key(t)}\0{t.action}\0{t.reason}" for t in unverified]
    )
    digest = hashlib.sha256(f"{sha}\0".encode())
    for line in lines:
        digest.update(f"{line}\0".encode())
    return digest.hexdigest()
