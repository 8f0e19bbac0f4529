"""The controller: keeps the fleet matching git without anyone at the keyboard.

A reconcile loop shaped like Flux's: every tick is a short chain of steps,
each returning its result, the first error stopping the chain, and the
heartbeat written on every path:

    sync source -> plan -> execute (run through jobs, which records) -> remediate

`fleet.plan` makes every decision (is a fetch or a check due, which run is
next, what a check's drift calls for, the next rollout batch, an approval's
fate) from plain dataclasses; this module observes the store, asks the plan,
and carries out the actions it gets back. An action's outcome may call for
follow-ups (rollout batches, verifying checks, approval steps): the plan
decides them from that outcome and they run next, one after another, before
anything else.

Runs are executed one after another, so the controller never holds two
runs on one host; host locks in the store keep the CLI from colliding
with it. State that must survive a restart lives in the store, and a
run whose process died (its lease lapsed) becomes `interrupted`.

Several controllers may share one store: one leads (the leader lock in the
store, renewed with the heartbeat every tick and during long runs), the
others wait, serving their web UI, and take over once the leader's lock
lapses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta

import git

from fleet import jobs, notify, plan, policy, revisions, source
from fleet.drift import HostVerdict, TaskResult
from fleet.errors import FleetError, RevisionRejected, SourceError, StoreError
from fleet.runner import Runner
from fleet.settings import Settings
from fleet.store import leases, queries, records, retention
from fleet.store.db import Store, current_store
from fleet.store.views import ApprovalView, RunView, TaskView
from fleet.vocabulary import ApprovalKind, RunKind, RunStatus, Trigger, utcnow

log = logging.getLogger("fleet.controller")

IDLE_SLEEP_SECONDS = 1.0
PRUNE_EVERY = timedelta(days=1)
PRUNE_RETRY = timedelta(hours=1)
HEARTBEAT_SECONDS = 2.0  # during a long run, the leader lock and heartbeat are renewed this often
STUCK_SECONDS = 600  # a loop silent this long is stuck: its leader lock is renewed no more, another may lead
# A tick waits this long for a fetch it started (most end sooner); a slower one is collected by a later tick.
FETCH_WAIT_SECONDS = 2.0


@dataclass
class ControllerStatus:
    """What this process's controller is doing, as healthz reports it (read from the web's threads)."""

    standby: bool = False  # another controller leads; this one waits
    leader: leases.Leader | None = None


class Controller:
    """The loop: sync source -> plan -> execute, once per tick, until asked to stop."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event | None = None,
        runner: Runner | None = None,
        holder: leases.Holder | None = None,
        store: Store | None = None,
    ):
        self.settings = settings
        self.store = store  # None: the store bound to the thread that runs the loop
        self.stop = stop or threading.Event()
        self.holder = holder or leases.this_process()  # who this controller leads as
        self.status = ControllerStatus()
        self.leading = False
        self._next_heartbeat = 0.0
        self.last_beat = time.monotonic()  # when the loop last wrote the heartbeat
        # Renewals come well within a lease, whatever its length.
        self.renew_every = min(HEARTBEAT_SECONDS, settings.lease_seconds / 3) if settings else HEARTBEAT_SECONDS
        # One runner for the controller's life: jobs caches inventory listings per runner.
        # One notifier: it groups, rate-limits and sends from a thread of its own, so no step waits on it.
        self.notifier = notify.Notifier(settings.link_base if settings else "")
        self.actions = ActionExecutor(
            settings,
            self.stop,
            runner or revisions.default_runner(settings),
            self.keep_leading,
            self.holder,
            self.notifier,
        )
        self._fetching: _Fetching | None = None  # a fetch still running in its thread
        self._source_problem = ""  # the source problem logged last, so it is logged once

    def recover(self) -> None:
        """Close what a dead controller left behind (runs whose lease lapsed, converges it queued); resume nothing."""
        jobs.close_lapsed_runs(self.settings)
        for run in records.interrupt_queued_converges(
            "the controller restarted before this converge started; request it again if still wanted"
        ):
            log.warning("queued converge %s not started after a restart; marked interrupted", run.id)
        records.write_controller_pid(os.getpid())

    def run_forever(self) -> None:
        """Loop until asked to stop, with its store bound to this thread (the lock keeper's thread binds it too)."""
        with (self.store or current_store()).bound() as store:
            self._loop(store)

    def _loop(self, store: Store) -> None:
        log.info(
            "controller started: source %s, poll every %ss",
            source.display_url(self.settings.repo),
            self.settings.poll_interval,
        )
        keeper = _LockKeeper(self, store)
        try:
            while not self.stop.is_set():
                try:
                    worked = self.tick(utcnow())
                except Exception:  # one bad step must not stop the controller; the next tick retries
                    log.exception("controller step failed")
                    records.discard_pending()
                    worked = False
                if not worked:
                    self.stop.wait(IDLE_SLEEP_SECONDS)
        finally:
            keeper.close()
            self.notifier.close()
            if self.leading:
                leases.release_leadership(self.holder)  # the controller waiting takes over at once
        log.info("controller stopped")

    def tick(self, now: datetime) -> bool:
        """One pass of the loop at ``now``; True when it did something worth looping again at once for.

        Leading comes first: it renews the leader lock and writes the heartbeat,
        so both are written on every path; a controller that does not lead does
        nothing else. An error in a step propagates and skips the steps after it.
        """
        if not self.lead():
            return False
        jobs.close_lapsed_runs(self.settings)
        self.sync_source(now)
        self.keep_leading()  # a heartbeat between steps that may take a while (validation, prune)
        self.prune_if_due(now)
        self.keep_leading()
        return self.execute(self.plan_next(now), now)

    def lead(self) -> bool:
        """Take or renew the leader lock (and heartbeat); on taking it, recover what a dead leader left."""
        leadership = leases.hold_leadership(self.holder, self.settings.lease_seconds)
        self._next_heartbeat = self.last_beat = time.monotonic()
        self._next_heartbeat += self.renew_every
        was_leading, was_standby = self.leading, self.status.standby
        self.leading = leadership.held
        self.status.standby, self.status.leader = not leadership.held, leadership.leader
        if leadership.held and not was_leading:
            log.info("leading the controllers of this store (pid %s on %s)", self.holder.pid, self.holder.host)
            self.recover()
        elif not leadership.held and not was_standby:
            leader = leadership.leader
            log.info(
                "another controller (pid %s on %s) is leading; waiting",
                leader.pid if leader else "?",
                leader.host if leader else "?",
            )
        return self.leading

    def keep_leading(self) -> bool:
        """During a run: renew the leader lock and heartbeat every few seconds; False once it was lost."""
        if time.monotonic() >= self._next_heartbeat:
            try:
                leadership = leases.hold_leadership(self.holder, self.settings.lease_seconds)
            except StoreError as exc:  # the run goes on; the lock keeper and the next tick try again
                records.discard_pending()
                log.warning("could not write the heartbeat: %s", exc)
                return self.leading
            self._next_heartbeat = self.last_beat = time.monotonic()
            self._next_heartbeat += self.renew_every
            self.leading = leadership.held
        return self.leading

    # When the store is pruned next (retention: in fleet.yml): at start, then once a day.
    next_prune_at: datetime | None = None

    def prune_if_due(self, now: datetime) -> None:
        """Prune runs, audit entries and exports past the retention, at start and daily; a failed prune
        is logged and tried again an hour later, and never stops the tick."""
        if self.next_prune_at is not None and now < self.next_prune_at:
            return
        self.next_prune_at = now + PRUNE_EVERY
        try:
            # Between batches the prune renews the heartbeat and leader lock, as a long run does.
            rules = current_policy(self.settings).retention
            report = retention.prune(self.settings, rules, now, go_on=self.keep_leading, actor="controller")
        except Exception:
            log.exception("pruning the store failed; trying again in an hour")
            records.discard_pending()
            self.next_prune_at = now + PRUNE_RETRY
            return
        if report.runs or report.audit_entries or report.exports or report.run_dirs:
            log.info("retention: %s", report.describe().replace("\n", "; "))
        else:
            log.info("retention: nothing older than %s days to prune", rules.days)

    def sync_source(self, now: datetime) -> str:
        """Fetch when the plan says so (interval, backoff or webhook): "fetched", "rejected", "stale",
        "fetching" (still running), "stopped" or "not due".

        The network half of a fetch runs in a thread of its own, so a remote
        that hangs holds only that thread (until FLEET_GIT_TIMEOUT kills git)
        while the loop goes on with queued and scheduled runs of the current
        desired revision, cancels and the heartbeat. A tick waits a moment for
        a fetch it started; a slower one is picked up by a later tick.
        """
        fetching = self._fetching or self._start_fetch(now)
        if fetching is None:
            return "not due"
        self._fetching = fetching
        if not fetching.wait(FETCH_WAIT_SECONDS):
            return "fetching"
        self._fetching = None
        if self.stop.is_set():  # a fetch cut short by SIGTERM says nothing about the source: record nothing
            return "stopped"
        outcome, problem = self._fetch(fetching)
        schedule = plan.after_fetch(observe_state(), outcome, self.settings.poll_interval, now)
        records.schedule_fetch(schedule.next_at, schedule.failures)
        if schedule.failures:
            problem += f"; retrying in {int((schedule.next_at - now).total_seconds())}s, backing off while it fails"
        self._report_source(problem, outcome)
        return outcome

    def _start_fetch(self, now: datetime) -> _Fetching | None:
        if plan.plan_fetch(observe_state(), now) is None:
            return None
        records.clear_fetch_request()  # a webhook during the fetch asks for the next one
        return _Fetching(self.settings, self.stop)

    def _fetch(self, fetching: _Fetching) -> tuple[str, str]:
        """Record a finished fetch through jobs (which validates a new head): its outcome and problem."""
        try:
            revisions.adopt_fetch(self.settings, fetching.result, runner=self.actions.runner)
        except RevisionRejected as exc:  # recorded; the last good revision stays desired
            return "rejected", str(exc)
        except SourceError as exc:  # recorded as stale by revisions.adopt_fetch
            return "stale", f"cannot fetch the source: {exc}"
        return "fetched", ""

    def _report_source(self, problem: str, outcome: str = "") -> None:
        """Log (and notify) a source problem when it appears or changes, not on every retry; and when it is gone."""
        # Compared without the retry delay, which grows with every failure.
        key = problem.split("; retrying in ")[0]
        if key == self._source_problem:
            return
        if problem:
            log.warning("%s", problem)
            self.notifier.notify(current_policy(self.settings).notify, notify.source_event(outcome, key))
        else:
            log.info("the source is fetched and valid again")
        self._source_problem = key

    def plan_next(self, now: datetime) -> list[plan.Action]:
        """What to do next, as the plan decides it from the store's view of things."""
        return plan.plan(
            observe_desired(), observe_state(), observe_queue(), observe_approvals(), current_policy(self.settings), now
        )

    def execute(self, actions: list[plan.Action], now: datetime) -> bool:
        """Carry out ``actions`` in order, each one's follow-ups right after it; True when there were any."""
        pending = deque(actions)
        while pending:
            follow_ups = self.actions.perform(pending.popleft(), now)
            pending.extendleft(reversed(follow_ups))
        return bool(actions)


class _Fetching:
    """One fetch (`source.fetch_head`) running in a thread of its own; `result` hands its head or raises.

    Not a daemon: at exit Python waits for it, and it ends within a moment
    of `stop` being set, killing git with it, so no git outlives fleet.
    """

    def __init__(self, settings: Settings, stop: threading.Event):
        self._outcome: Future[source.Head] = Future()
        self._thread = threading.Thread(target=self._run, args=(settings, stop), name="fleet-fetch")
        self._thread.start()

    def _run(self, settings: Settings, stop: threading.Event) -> None:
        try:
            self._outcome.set_result(source.fetch_head(settings, stop))
        except BaseException as exc:  # noqa: BLE001  handed to the loop, which records or raises it
            self._outcome.set_exception(exc)

    def wait(self, seconds: float) -> bool:
        """True once the fetch has ended (waiting at most `seconds`)."""
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def result(self) -> source.Head:
        return self._outcome.result(timeout=0)


class _LockKeeper:
    """Renews the leader lock from a thread of its own while the controller leads.

    So a long step of the loop (validating a big revision, a prune) does not
    hand the lead to a waiting controller halfway through. The heartbeat stays
    the loop's own, so healthz still shows a slow loop; and a loop silent for
    STUCK_SECONDS gets no renewal: its lock lapses and another controller
    takes over. A process killed with -9 takes this thread with it.
    """

    def __init__(self, controller: Controller, store: Store) -> None:
        self.controller, self.store = controller, store
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="fleet-leader-lock", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        controller = self.controller
        while not self._closed.wait(controller.renew_every):
            if not controller.leading or time.monotonic() - controller.last_beat > STUCK_SECONDS:
                continue
            try:
                with self.store.bound():
                    held = leases.renew_leadership(controller.holder, controller.settings.lease_seconds)
            except StoreError as exc:  # the loop's next lead() tries again and says what failed
                log.warning("could not renew the leader lock: %s", exc)
                continue
            if not held:
                controller.leading = False  # taken over after the lock lapsed; the next tick stands by

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=HEARTBEAT_SECONDS * 2)


BROKER_RETRY_SECONDS = 2.0


class ActionExecutor:
    """Carries out the plan's actions: runs through jobs, approvals and the queue through the store.

    Each method returns the follow-up actions the plan gives for its outcome.
    """

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        runner: Runner,
        keep_leading: Callable[[], bool] = lambda: True,
        holder: leases.Holder | None = None,
        notifier: notify.Notifier | None = None,
    ):
        self.settings = settings
        self.notifier = notifier or notify.Notifier(settings.link_base if settings else "")
        self.stop = stop
        self.runner = runner  # the Ansible boundary every job goes through
        self.keep_leading = keep_leading  # polled during runs: renews the leader lock and the heartbeat
        self.holder = holder or leases.this_process()  # holds the lease of every run it performs
        self._ancestry: dict[tuple[str, str], bool] = {}  # (older, newer) -> newer descends from older

    def perform(self, action: plan.Action, now: datetime) -> list[plan.Action]:
        """Carry out one action of `plan.plan` or of a follow-up (FetchSource is the sync step's own)."""
        handler: Callable[[plan.Action, datetime], list[plan.Action]] = getattr(self, _HANDLERS[type(action)])
        return handler(action, now)

    def queue_check(self, action: plan.QueueCheck, now: datetime) -> list[plan.Action]:
        records.enqueue_run(RunKind.CHECK, action.trigger, "", "controller")
        records.note_check_queued(action.trigger, action.sha, now)
        return []

    def start_run(self, action: plan.StartRun, now: datetime) -> list[plan.Action]:
        run = queries.next_queued_run()
        if run is None or run.id != action.run_id:  # canceled since the plan saw it: plan again
            return []
        if self.waits_for_broker(run):
            return []
        finished = self.run_queued(run)
        return plan.after_run(finished, current_policy(self.settings), now, self.stop.is_set())

    def waits_for_broker(self, run: RunView) -> bool:
        """With the celery executor and the broker down, a queued run stays queued, saying why."""
        if self.settings.executor != "celery":
            return False
        from fleet.executor.celery_app import broker_problem

        problem = broker_problem(self.settings.broker_url)
        if problem != run.waiting_reason:
            records.note_run_waiting(run.id, f"{problem}; the run starts once it answers" if problem else "")
            if problem:
                log.warning("run %s waits: %s", run.id, problem)
        if problem:
            self.stop.wait(BROKER_RETRY_SECONDS)  # the next tick asks again, not at once
        return bool(problem)

    def apply_approval(self, action: plan.ApplyApproval, now: datetime) -> list[plan.Action]:
        """Check again before acting: the approved host (drift), or every host (an inventory change)."""
        approval = action.approval
        if approval.kind == ApprovalKind.INVENTORY:
            recheck = self.run_now(RunKind.CHECK, "", approval.id)
            return plan.after_inventory_recheck(
                approval, recheck, current_policy(self.settings), now, self.stop.is_set()
            )
        recheck = self.run_now(RunKind.CHECK, approval.host, approval.id)
        signature = approval_signature(recheck.id, approval.host, recheck.sha) if recheck else ""
        return plan.after_recheck(approval, recheck, signature)

    def converge_approved(self, action: plan.ConvergeApproved, now: datetime) -> list[plan.Action]:
        # Pinned to the approved revision: a `fleet check` elsewhere may have moved the desired one since.
        converge = self.run_now(RunKind.CONVERGE, action.approval.host, action.approval.id, action.approval.sha)
        return plan.after_approved_converge(action.approval, converge)

    def converge_batch(self, action: plan.ConvergeBatch, now: datetime) -> list[plan.Action]:
        converge = self.run_now(RunKind.CONVERGE, ",".join(action.progress.batch))
        follow_ups = plan.after_batch(action.progress, converge, self.stop.is_set())
        for stop in (a for a in follow_ups if isinstance(a, plan.Hold) and a.warn):
            self.notifier.notify(
                self.notify_rules(), notify.rollout_event(converge.id if converge else None, stop.reason)
            )
        return follow_ups

    def verify_check(self, action: plan.VerifyCheck, now: datetime) -> list[plan.Action]:
        self.run_now(RunKind.CHECK, action.limit)
        return []

    def open_approval(self, action: plan.OpenApproval, now: datetime) -> list[plan.Action]:
        tasks = queries.approval_tasks_of(action.check_run_id, action.host)
        changed, unverified = _split_unverified(tasks)
        summary = ", ".join(t.task for t in changed)
        if unverified:
            summary += f"; unverified: {', '.join(t.task for t in unverified)}"
        approval = records.open_approval(
            action.host,
            action.check_run_id,
            action.sha,
            plan.drift_signature(action.sha, changed, unverified),
            summary[:500],
            action.reason,
        )
        log.info(
            "drift on %s waits for approval %s%s",
            action.host,
            approval.id,
            f": {action.reason}" if action.reason else "",
        )
        self.notify_approval(approval, action.check_run_id)
        return []

    def open_inventory_approval(self, action: plan.OpenInventoryApproval, now: datetime) -> list[plan.Action]:
        approval = records.open_inventory_approval(action.sha, action.hosts, action.check_run_id, action.reason)
        log.warning("auto converge at %s waits for approval %s: %s", action.sha[:12], approval.id, action.reason)
        self.notify_approval(approval, action.check_run_id)
        return []

    def notify_approval(self, approval: ApprovalView, check_run_id: int) -> None:
        """An approval this check opened (not one already waiting for the same drift) is news."""
        if approval.check_run_id == check_run_id and approval.status == "pending":
            self.notifier.notify(
                self.notify_rules(), notify.approval_event(approval.id, approval.host, approval.summary)
            )

    def notify_rules(self) -> tuple[policy.NotifyRule, ...]:
        return current_policy(self.settings).notify

    def accept_inventory(self, action: plan.AcceptInventory, now: datetime) -> list[plan.Action]:
        records.accept_inventory(action.sha, action.hosts)
        return []

    def close_approval(self, action: plan.CloseApproval, now: datetime) -> list[plan.Action]:
        records.close_approval(action.approval_id, action.status, action.note, action.converge_run_id)
        return []

    def hold(self, action: plan.Hold, now: datetime) -> list[plan.Action]:
        log.log(logging.WARNING if action.warn else logging.INFO, "%s", action.reason)
        return []

    def run_queued(self, run: RunView, pinned_sha: str = "") -> plan.FinishedRun | None:
        """Run one queued run (its view) to its end; None when it could not start (it is closed as failed).

        With ``pinned_sha``, only at that revision: a run the desired revision moved away from fails unstarted.
        """
        try:
            desired = revisions.desired_state(self.settings, runner=self.runner)
            if pinned_sha and desired.revision.sha != pinned_sha:
                raise FleetError(
                    f"the desired revision moved to {desired.revision.sha[:12]} since {pinned_sha[:12]} "
                    "was approved and re-checked; nothing was converged, the next check asks again"
                )
            run = records.start_queued_run(run, desired.revision.sha, os.getpid(), self.settings.lease_seconds)
            targets = jobs.resolve_targets(self.settings, desired, run.limit or None, runner=self.runner)
            report = jobs.perform_run(
                self.settings,
                run,
                desired,
                targets,
                should_cancel=lambda: self._should_cancel(run.id),
                runner=self.runner,
                holder=self.holder,
            )
        except FleetError as exc:
            records.fail_run(run.id, str(exc))
            log.warning("run %s failed: %s", run.id, exc)
            if run.kind == RunKind.CONVERGE:
                failed = plan.FinishedRun(run.id, run.kind, run.trigger, RunStatus.FAILED, note=str(exc))
                self.notifier.notify_run(self.notify_rules(), failed)
            return None
        log.info("run %s (%s, %s) ended %s", run.id, run.kind, run.trigger, report.run.status)
        self.notifier.notify_run(self.notify_rules(), finished_run(report, desired))
        if report.run.kind != RunKind.CHECK:
            return finished_run(report, desired)
        # What remediation must weigh besides the verdicts: rollbacks per host, and the inventory's change.
        diverged = self.observe_divergence(desired.revision.sha, [v.name for v in report.verdicts])
        inventory = observe_inventory(self.settings, desired.revision.sha, [h.name for h in desired.hosts])
        return finished_run(report, desired, diverged, inventory)

    def observe_divergence(self, sha: str, names: list[str]) -> dict[str, str]:
        """Hosts whose last converged revision ``sha`` does not descend from (or the mirror does not know),
        each with that revision: converging them to ``sha`` could roll them back."""
        converged = {h.name: h.last_converge_sha for h in queries.hosts_named(names) if h.last_converge_sha}
        return {name: older for name, older in converged.items() if older != sha and not self.descends(older, sha)}

    def descends(self, older: str, newer: str) -> bool:
        """Does ``newer`` descend from ``older`` in the mirror? Asked once per pair: the answer never changes
        (the mirror holds all of ``newer``'s history, so an ``older`` it lacks is no ancestor)."""
        if (older, newer) not in self._ancestry:
            try:
                with git.Repo(source.mirror_path(self.settings)) as repo:
                    self._ancestry[(older, newer)] = source.is_ancestor(repo, older, newer)
            except (git.NoSuchPathError, git.InvalidGitRepositoryError):
                return False  # no mirror to ask: in doubt, not a descendant (and not cached)
        return self._ancestry[(older, newer)]

    def run_now(
        self, kind: str, limit: str, approval_id: int | None = None, pinned_sha: str = ""
    ) -> plan.FinishedRun | None:
        """Queue a policy run and execute it at once, so policy steps run back to back."""
        run, _ = records.enqueue_run(kind, Trigger.POLICY, limit, "controller", approval_id)
        if run.status != RunStatus.QUEUED:
            return None
        return self.run_queued(run, pinned_sha)

    def _should_cancel(self, run_id: int) -> bool:
        """Polled during a run (jobs polls the store's cancel flag itself): stop on SIGTERM or lost leadership."""
        if self.stop.is_set():
            records.note_cancel(run_id, "fleet is stopping (SIGTERM); the run was stopped, partial results kept")
            return True
        if not self.keep_leading():
            records.note_cancel(
                run_id,
                "another controller took the lead while this one ran the run "
                "(its leader lock lapsed); the run was stopped, partial results kept",
            )
            return True
        return False


_HANDLERS = {
    plan.QueueCheck: "queue_check",
    plan.StartRun: "start_run",
    plan.ApplyApproval: "apply_approval",
    plan.ConvergeApproved: "converge_approved",
    plan.ConvergeBatch: "converge_batch",
    plan.VerifyCheck: "verify_check",
    plan.OpenApproval: "open_approval",
    plan.CloseApproval: "close_approval",
    plan.Hold: "hold",
    plan.OpenInventoryApproval: "open_inventory_approval",
    plan.AcceptInventory: "accept_inventory",
}


def finished_run(
    report: jobs.RunReport,
    desired: revisions.DesiredState,
    diverged: dict[str, str] | None = None,
    inventory: plan.InventoryChange | None = None,
) -> plan.FinishedRun:
    """A run's report as the plan judges it and notifications tell it: each host's verdict, groups, drifted
    tasks and the revision it was converged to when the run's revision does not descend from it
    (``diverged``); a check's inventory."""
    groups = {h.name: tuple(h.groups) for h in desired.hosts}
    diverged = diverged or {}
    run = report.run
    hosts = tuple(
        host_outcome(v, groups.get(v.name, ()), report.tasks_by_host.get(v.name, []), diverged.get(v.name, ""))
        for v in report.verdicts
    )
    return plan.FinishedRun(
        id=run.id,
        kind=run.kind,
        trigger=run.trigger,
        status=run.status,
        limit=run.limit or "",
        sha=desired.revision.sha,
        hosts=hosts,
        inventory=inventory,
    )


def host_outcome(
    verdict: HostVerdict, groups: tuple[str, ...], tasks: Sequence[TaskResult], diverged_from: str = ""
) -> plan.HostOutcome:
    drift = [t for t in tasks if t.drift]
    return plan.HostOutcome(
        verdict.name,
        verdict.status,
        groups,
        tuple(t.task for t in drift),
        tuple(t.task for t in drift if t.flapping),
        diverged_from,
    )


def _split_unverified(tasks: list[TaskView]) -> tuple[list[TaskView], list[TaskView]]:
    """An approval's tasks as (changed, unverified)."""
    return [t for t in tasks if not t.unverified], [t for t in tasks if t.unverified]


def approval_signature(run_id: int, host: str, sha: str) -> str:
    """The drift a run found on a host, as plan.drift_signature pins it (changed and unverified tasks)."""
    changed, unverified = _split_unverified(queries.approval_tasks_of(run_id, host))
    return plan.drift_signature(sha, changed, unverified)


def policy_at(settings: Settings, sha: str) -> policy.Policy:
    """fleet.yml of one revision; the default policy when its export is gone or it does not parse."""
    tree = source.export_path(settings, sha)
    try:
        return revisions.load_policy(tree) if tree.exists() else policy.DEFAULT_POLICY
    except (policy.PolicyError, OSError):
        return policy.DEFAULT_POLICY


def observe_inventory(settings: Settings, sha: str, names: list[str]) -> plan.InventoryChange:
    """The inventory of ``sha`` against the baseline (the newest accepted inventory of another revision).

    Accepted only while ``sha``'s own acceptance is the newest one: a revision
    desired again after others (a rollback) is judged again.
    """
    hosts = tuple(sorted(set(names)))
    judged, baseline = queries.revision_inventory(sha), queries.inventory_baseline(sha)
    accepted = bool(judged and judged.accepted and (baseline is None or judged.judged_at >= baseline.judged_at))
    if baseline is None:
        return plan.InventoryChange(sha, hosts, accepted=accepted)
    before, now = set(baseline.names), set(hosts)
    return plan.InventoryChange(
        sha,
        hosts,
        baseline.sha,
        len(before),
        len(now - before),
        len(before - now),
        accepted,
        policy_at(settings, baseline.sha).max_inventory_change,
    )


def current_policy(settings: Settings) -> policy.Policy:
    """fleet.yml of the desired revision (asked every tick; revisions.load_policy parses each revision once)."""
    sha = queries.desired_sha()
    tree = source.export_path(settings, sha) if sha else None
    return revisions.load_policy(tree) if tree and tree.exists() else policy.DEFAULT_POLICY


# --- the store's view, in the plan's terms ------------------------------------------------


def observe_state() -> plan.Observed:
    state = queries.controller_state()
    return plan.Observed(
        fetch_requested=state.fetch_requested,
        fetch_failures=state.fetch_failures,
        next_fetch_at=state.next_fetch_at,
        commit_checked_sha=state.commit_checked_sha,
        last_scheduled_check_at=state.last_scheduled_check_at,
    )


def observe_desired() -> plan.Desired:
    return plan.Desired(sha=queries.desired_sha())


def observe_queue() -> list[plan.QueuedRun]:
    """The oldest queued run (the plan starts one run at a time)."""
    run = queries.next_queued_run()
    return [plan.QueuedRun(run.id, run.kind, run.trigger, run.limit or "")] if run else []


def observe_approvals() -> list[plan.ApprovedDrift]:
    return [
        plan.ApprovedDrift(a.id, a.host, a.drift_signature, a.revision_sha, a.kind) for a in queries.approved_waiting()
    ]
