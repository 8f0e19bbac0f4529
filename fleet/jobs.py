"""One run, start to finish: the desired revision (fleet.revisions), pre-flight the hosts, run Ansible, record.

    revisions.sync_source -> resolve targets -> probe hosts -> execute -> record

The CLI calls `execute_run` (fetch, then run at once); the controller calls
`perform_run` for runs it takes from its queue. The run row is written
before anything can fail, and closed on every path, so the history never
loses a run. Ansible and the hosts are reached only through a
`runner.Runner`: every function here takes `runner=` (default: the real
AnsibleRunner for the settings), so a whole run can be tested with
`fake_runner.FakeRunner` and no hosts. What they hand back (DesiredState,
RunReport) are plain frozen dataclasses, never rows of the store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from fleet import policy, processes, remote_stop, source
from fleet.drift import CheckContext, DriftTracker, HostHistory, HostVerdict, TaskResult, settle_incomplete
from fleet.errors import FleetError, HostBusy, StoreError
from fleet.executor.base import Executor, RunControl, RunLease, executor_for
from fleet.hostkeys import Probe
from fleet.revisions import (
    DesiredState,
    default_runner,
    inventory_hosts,
    load_policy,
    reread_dynamic_inventories,
    sync_source,
)
from fleet.runner import MAX_EVENT_RES, InventoryHost, JobSpec, Runner, RunnerOutcome, Strategy
from fleet.settings import Settings
from fleet.store import leases, pins, queries, records
from fleet.store.views import HostView, RunView
from fleet.text import clean_event, mark_escaped
from fleet.vocabulary import HostStatus, RunKind, RunStatus, aware, utcnow


@dataclass(frozen=True)
class RunReport:
    """How a run ended: the run, each host's verdict, and each host's task results."""

    run: RunView  # the store's plain view of the run row, as it ended
    verdicts: list[HostVerdict]
    tasks_by_host: dict[str, list[TaskResult]]


ProgressFn = Callable[[DriftTracker, dict[str, Any]], None]
log = logging.getLogger("fleet.jobs")


# Connections stay up at least this long, and this much past the next scheduled check.
_MIN_SSH_PERSIST = 120
_SSH_PERSIST_MARGIN = 300
# Rounded up to this step: the SSH arguments, which name it, then stay the same from run to run, and so
# do the kept Ansible process (fleet.warm) and the Mitogen connections it holds, which they key.
_SSH_PERSIST_STEP = 600


def ssh_persist(settings: Settings, tree: Path, now: datetime) -> int:
    """How long idle SSH masters live after a run: FLEET_SSH_PERSIST, else until the next scheduled check.

    So the scheduled check finds every connection already open. A fleet.yml that
    does not parse falls back to the default schedule; validation reports it.
    """
    if settings.ssh_persist:
        return settings.ssh_persist
    try:
        current = load_policy(tree)
    except (policy.PolicyError, OSError):
        current = policy.DEFAULT_POLICY
    wanted = max(_MIN_SSH_PERSIST, policy.seconds_until_next_check(current, now) + _SSH_PERSIST_MARGIN)
    return -(-wanted // _SSH_PERSIST_STEP) * _SSH_PERSIST_STEP


def execute_run(
    settings: Settings,
    kind: str,
    limit: str | None = None,
    trigger: str = "manual",
    requested_by: str = "",
    progress: ProgressFn | None = None,
    runner: Runner | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> RunReport:
    """Fetch the source, then check or converge the hosts matching `limit` now (the CLI's path)."""
    runner = runner or default_runner(settings)
    refuse_without_broker(settings)
    reread_dynamic_inventories()  # each run lists a dynamic inventory afresh, once
    desired = sync_source(settings, runner)
    targets = resolve_targets(settings, desired, limit, runner)
    run = records.create_run(
        kind,
        trigger,
        desired.revision.sha,
        limit or "",
        requested_by,
        os.getpid(),
        lease_seconds=settings.lease_seconds,
    )
    return perform_run(settings, run, desired, targets, progress=progress, should_cancel=should_cancel, runner=runner)


def refuse_without_broker(settings: Settings) -> None:
    """With the celery executor, a run started from the command line needs the broker now (the
    controller's queued runs wait for it instead)."""
    if settings.executor != "celery":
        return
    from fleet.executor.celery_app import broker_problem

    problem = broker_problem(settings.broker_url)
    if problem:
        raise FleetError(
            f"{problem}; start the broker, or `fleet request` queues the run for the controller, "
            "or FLEET_EXECUTOR=local runs it here"
        )


def resolve_targets(
    settings: Settings, desired: DesiredState, limit: str | None, runner: Runner | None = None
) -> list[InventoryHost]:
    """Inventory hosts matching `limit` at the desired revision; an error when none do."""
    targets = inventory_hosts(desired.tree, settings, runner, limit) if limit else list(desired.hosts)
    if not targets:
        raise FleetError(
            f"no inventory host matches --limit {limit!r}; `fleet status` lists the hosts"
            if limit
            else "the inventory has no hosts; add some to the source"
        )
    return targets


def perform_run(
    settings: Settings,
    run: RunView,
    desired: DesiredState,
    targets: list[InventoryHost],
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    runner: Runner | None = None,
    holder: leases.Holder | None = None,
) -> RunReport:
    """Execute an existing run (its view) on `targets` and close it, whatever happens.

    This process (or `holder`, a controller within it) holds the run's lease and renews it while Ansible runs; the
    store's cancel flag is polled too, so a cancel stops any run, whoever
    started it. Each target host is locked for the run's duration; a host
    another run holds fails this run with HostBusy before anything starts. On
    a crash the run is closed `failed` with the reason and the error is raised
    again. If the store refuses a write, Ansible is stopped, the run is closed
    `failed` without verdicts (every host keeps its status) and StoreError is raised.
    """
    close_lapsed_runs(settings)  # a killed process's locks must not block this run
    lease = RunLease(run.id, holder or leases.this_process(), settings)
    execution = Execution(settings, run, progress, should_cancel, runner or default_runner(settings), lease)
    busy = records.acquire_host_locks(run.id, [t.name for t in targets])
    if busy and _confirm_kept_locks(execution.runner, targets, busy):
        busy = records.acquire_host_locks(run.id, [t.name for t in targets])
    if busy:
        error = _busy_message(busy)
        execution.finish(RunStatus.FAILED, error)
        raise HostBusy(f"{error}; wait for it to finish or narrow --limit")
    try:
        status = _execute(execution, desired, targets)
        summary = execution.finish(status, _stop_reason(settings, run.id, status) or execution.note)
    finally:
        execution.release_locks()
    execution.raise_if_unrecorded()
    return RunReport(run=summary, verdicts=execution.verdicts(), tasks_by_host=execution.tasks_by_host)


def _confirm_kept_locks(runner: Runner, targets: list[InventoryHost], busy: list[tuple[str, int]]) -> bool:
    """Try again to confirm the end of a stopped run's work on hosts whose locks it kept; free those confirmed.

    True when any was freed. Confirmation needs the stopped run's SSH master to that host, still up."""
    kept = {lock.host: lock for lock in records.kept_locks([host for host, _ in busy])}
    wanted = [t for t in targets if t.name in kept]
    if not wanted:
        return False
    stops = runner.stop_remote_work(wanted, {t.name for t in wanted})
    freed = [
        name
        for name, stop in stops.items()
        if stop.confirmed
        and records.release_kept_lock(name, f"run {kept[name].run_id}'s work confirmed stopped later: {stop.detail}")
    ]
    for name in freed:
        log.warning(
            "%s: the work of stopped run %s there is confirmed ended now; its lock is freed", name, kept[name].run_id
        )
    return bool(freed)


def _busy_message(busy: list[tuple[str, int]]) -> str:
    kept = {lock.host: lock for lock in records.kept_locks([host for host, _ in busy])}
    return "; ".join(
        f"{host} is held by stopped run {holder}: {kept[host].reason}; once nothing of it runs there, "
        f"`fleet hosts release {host}` frees it"
        if host in kept
        else f"{host} is busy with run {holder}"
        for host, holder in busy
    )


def _execute(execution: Execution, desired: DesiredState, targets: list[InventoryHost]) -> str:
    """Run Ansible; a crash closes the run (and is raised again), a refused store write fails it."""
    try:
        return execution.run(desired, targets)
    except KeyboardInterrupt:
        # The runner killed Ansible already; what it started on the hosts is found through the masters, which
        # outlive it (work under sudo whose interpreter ended with the connection may escape: a cancel freezes first)
        if execution.remote_stops is None:
            execution.stop_remote_work(freeze=False)
        execution.finish(RunStatus.CANCELED, "canceled from the terminal")
        raise
    except StoreError as exc:  # a write outside the event stream (strategy, host keys) was refused
        execution.store_refused(exc)
        return RunStatus.FAILED
    except BaseException as exc:
        execution.finish(RunStatus.FAILED, f"fleet could not finish the run: {exc}")
        raise


def _stop_reason(settings: Settings, run_id: int, status: str) -> str:
    """What a stopped run's error says ('' for a run that reached its end)."""
    if status == RunStatus.CANCELED:
        return records.cancel_reason(run_id) or "canceled"
    if status == RunStatus.TIMEOUT:
        return f"stopped after the run timeout of {settings.run_timeout}s"
    return ""


# Events that show a task started on (or came back from) a host: Ansible reached it, so a stop must look there.
_TOUCHING_EVENTS = ("runner_on_start", "runner_on_ok", "runner_on_failed")
# How long to wait before each try at closing a run the store refused to record (then the lease takes over).
CLOSE_RETRY_DELAYS = (0, 1, 2, 4)
CANCEL_POLL_SECONDS = 1.0


class Execution:
    """The state of one run (or one shard of it) while Ansible streams its events: recorded, settled, closed.

    Where Ansible runs is its executor's business (fleet.executor.base: here, or shards on workers); who holds
    the work and how a stop is heard, its control's (the run's lease here, a shard's on a worker).
    """

    def __init__(
        self,
        settings: Settings,
        run: RunView,
        progress: ProgressFn | None,
        should_cancel: Callable[[], bool] | None,
        runner: Runner,
        control: RunControl,
        *,
        recorder: records.RunRecorder | None = None,
        private_dir: Path | None = None,
        executor: Executor | None = None,
    ):
        self.settings = settings
        self.runner = runner
        self.control = control
        self.executor = executor or executor_for(settings)
        self.should_cancel = should_cancel or (lambda: False)
        self.ansible_pid: int | None = None
        self.events_seen = 0
        self.run_id = run.id
        self.kind = run.kind
        self.progress = progress
        self.tracker = DriftTracker(check_mode=self.kind == RunKind.CHECK)  # replaced once the targets are known
        self.recorder = recorder or records.RunRecorder(run.id)
        self.tasks_by_host: dict[str, list[TaskResult]] = {}
        self.private_dir = private_dir or settings.data_dir / "runs" / str(run.id)
        self.strategy: Strategy | None = None
        self.deadline = float("inf")
        self.timed_out = False
        self.lease_lost = not control.claim()
        self.next_renewal = time.monotonic() + settings.lease_seconds / 3
        self.next_cancel_poll = 0.0
        self.store_error = ""  # why the store refused a write; nothing more is recorded once set
        # Verdicts gathered from shards (FLEET_EXECUTOR=celery), each settled by its worker; None: the tracker's.
        self.gathered: list[HostVerdict] | None = None
        self.note = ""  # what the run's error says when it ended without a stop reason (an interrupted shard)
        # The hosts Ansible was started for, and those it started a task on: where a stop must end its work.
        self.targets: list[InventoryHost] = []
        self.touched: set[str] = set()
        self.remote_stops: dict[str, remote_stop.HostStop] | None = None  # set once the run was stopped
        self.spec: JobSpec | None = None  # what Ansible was started with (a stop reads its become passwords)

    def verdicts(self) -> list[HostVerdict]:
        return self.tracker.verdicts() if self.gathered is None else self.gathered

    def run(self, desired: DesiredState, targets: list[InventoryHost]) -> str:
        return self.executor.execute(self, desired, targets)

    def track(self, desired: DesiredState, targets: list[InventoryHost]) -> None:
        """Judge the events against what the hosts' history and the revision's policy say of each task."""
        self.tracker = DriftTracker(self.kind == RunKind.CHECK, check_context(self.settings, desired, targets))

    def run_ansible(
        self, desired: DesiredState, targets: list[InventoryHost], usable: list[str], strategy: Strategy
    ) -> RunnerOutcome:
        """Ansible on the usable targets, its events recorded, until it ends or a stop is asked."""
        self.strategy = strategy
        self.targets = [t for t in targets if t.name in usable]
        self.deadline = self.control.deadline()
        self.spec = self._spec(desired, usable)
        return self.runner.run_job(self.spec, self._on_event, self.stop_requested)

    def noted(self, write: Callable[[], None]) -> None:
        """A note on the run (or shard) row; a store that refuses it stops the run, as a refused event does."""
        try:
            write()
        except StoreError as exc:
            self.store_refused(exc)

    def status_of(self, runner_status: str) -> str:
        """The run's status once Ansible ended with `runner_status`."""
        status = RunStatus.TIMEOUT if self.timed_out else runner_status
        return RunStatus.FAILED if self.halted() else _run_status(status, self.tracker.verdicts())

    def stop_requested(self) -> bool:
        """Polled by the runner, events or not: renew the lease; stop on cancel, timeout, a refused write."""
        self.timed_out = self.timed_out or time.monotonic() > self.deadline
        self.renew_lease()
        stop = self.timed_out or self.halted() or self.should_cancel() or self._cancel_flag()
        if stop and self.remote_stops is None:
            self.stop_remote_work()
        return stop

    def stop_remote_work(self, freeze: bool = True) -> None:
        """End the run's processes on the hosts it touched, before the runner kills Ansible here.

        Ansible is frozen first: its SSH sessions stay open (the remote processes keep the ancestry and the
        connection that identify them, see fleet.remote_stop) and it starts nothing more. A host whose end
        cannot be confirmed keeps its lock past the run (release_locks) and reads `incomplete`.
        """
        if freeze:
            processes.freeze_tree(self.ansible_pid)
        self.remote_stops = self.runner.stop_remote_work(
            self.targets, self.touched, self.spec, keep_alive=self._renew_lease_now
        )
        self._renew_lease_now()  # the reaper may have taken a while: renew now, not a lease period after the last
        for stop in self.remote_stops.values():
            if stop.confirmed:
                log.info("run %s: %s: %s", self.run_id, stop.host, stop.detail)
            else:
                log.error("run %s: %s: %s: %s", self.run_id, stop.host, remote_stop.REMOTE_MAY_RUN, stop.detail)

    def unconfirmed(self) -> dict[str, str]:
        """Hosts where the stopped run's work may still go on, with the message they read (none if not stopped)."""
        found = {
            name: f"{remote_stop.REMOTE_MAY_RUN}: {stop.detail}"
            for name, stop in (self.remote_stops or {}).items()
            if not stop.confirmed
        }
        for verdict in self.gathered or []:  # shards: each worker stopped its own hosts and said so in the verdict
            if verdict.status == HostStatus.INCOMPLETE and verdict.message.startswith(remote_stop.REMOTE_MAY_RUN):
                found[verdict.name] = verdict.message
        return found

    def halted(self) -> bool:
        """The run cannot go on: the store refused a write, or its work was taken away (another process closed
        the run after its lease lapsed; a shard given away)."""
        return bool(self.store_error) or self.lease_lost or self.control.lost()

    def _renew_lease_now(self) -> None:
        self.next_renewal = 0.0
        self.renew_lease()

    def renew_lease(self) -> None:
        if self.halted() or time.monotonic() < self.next_renewal:
            return
        self.next_renewal = time.monotonic() + self.settings.lease_seconds / 3
        try:
            self.lease_lost = not self.control.renew()
        except StoreError as exc:
            self.store_refused(exc)
        if self.lease_lost:
            log.error(
                "run %s was closed by another process while this one ran it (its lease lapsed); stopping Ansible",
                self.run_id,
            )

    def _cancel_flag(self) -> bool:
        """The control's `stop_asked`, read at most once a second; a store that refuses stops the run too."""
        if time.monotonic() < self.next_cancel_poll:
            return False
        self.next_cancel_poll = time.monotonic() + CANCEL_POLL_SECONDS
        try:
            return self.control.stop_asked()
        except StoreError as exc:
            self.store_refused(exc)
            return True

    def store_refused(self, exc: StoreError) -> None:
        """The store refused a write: keep what was committed, record nothing more, stop Ansible."""
        if not self.store_error:
            self.store_error = f"the store refused a write: {_store_message(exc)}; results recorded before it are kept"
            log.error("run %s: %s; stopping Ansible", self.run_id, self.store_error)
        self.recorder.discard()
        try:
            records.discard_pending()
        except StoreError:
            pass  # the retries of _close_refused start from a fresh transaction anyway

    def preflight(self, targets: list[InventoryHost]) -> list[str]:
        """Names of the targets worth starting Ansible for; the others get their verdict now."""
        usable = []
        for name, probe in self._probe_against_store_pins(targets).items():
            records.mark_key_blocked(name, probe.state == "key_changed")
            if probe.usable:
                usable.append(name)
            else:
                status = HostStatus.UNREACHABLE if probe.state == "unreachable" else HostStatus.FAILED
                self.tracker.note_host(name, status, probe.message)
        return sorted(usable)

    def _probe_against_store_pins(self, targets: list[InventoryHost]) -> dict[str, Probe]:
        """Probe the targets against the store's pins, shared by every fleet process: the known_hosts file the
        probe and Ansible's ssh read is written from the store first, and the keys pinned on first contact go
        to the store after.

        A key pinned here that lost to a different one another process pinned at the same moment is not
        trusted: the hosts that were usable are probed again against the store's pin (the file now holds it),
        which reports them as a changed key (a jump host's too), named as what happened.
        """
        known_hosts = self.settings.known_hosts_path
        with pins.probing(known_hosts):  # another run of this data directory rewrites the file after, not during
            written = pins.write_known_hosts(known_hosts)
            probes = self.runner.probe_hosts(targets)
            lost = pins.record_new_pins(known_hosts, pins.process_name(), written)
            if not lost:
                return probes
            written = pins.stored_pins()  # what record_new_pins left in the file
            again = self.runner.probe_hosts([t for t in targets if probes[t.name].usable])
            lost_again = pins.record_new_pins(known_hosts, pins.process_name(), written)
        return {**probes, **{name: _lost_race(probe, lost, lost_again) for name, probe in again.items()}}

    def _chosen_strategy(self) -> Strategy:
        assert self.strategy is not None  # run() chooses it before any job is specified
        return self.strategy

    def _spec(self, desired: DesiredState, hosts: list[str]) -> JobSpec:
        self.private_dir.mkdir(parents=True, exist_ok=True)
        limit_file = self.private_dir / "limit"
        limit_file.write_text("".join(f"{h}\n" for h in hosts))
        return JobSpec(
            kind=self.kind,
            project_dir=desired.tree,
            playbook=self.settings.playbook,
            inventory=desired.tree / self.settings.inventory,
            private_data_dir=self.private_dir,
            known_hosts=self.settings.known_hosts_path,
            control_path_dir=self.settings.control_path_dir,
            ssh_persist=ssh_persist(self.settings, desired.tree, utcnow()),
            limit_file=limit_file,
            identity=self.settings.identity_path,  # the runner creates the key pair on first use
            vault_password_file=self.settings.vault_password_file,
            forks=self.settings.forks,
            strategy=self._chosen_strategy(),
        )

    def _on_event(self, event: dict[str, Any]) -> None:
        if self.halted():
            return  # Ansible is being stopped; what it still says is not recorded
        self.events_seen += 1
        # The one place Ansible's text enters fleet: from here on every string is storable (fleet.text).
        cleaned = clean_event(event)
        stored = cleaned.value
        assert isinstance(stored, dict)  # cleaning keeps an event's shape: a dict comes back a dict
        try:
            self._record(stored, cleaned.diff_escaped)
        except StoreError as exc:
            self.store_refused(exc)
            return
        if self.progress:
            self.progress(self.tracker, stored)

    def _record(self, event: dict[str, Any], diff_escaped: bool = False) -> None:
        host = (event.get("event_data") or {}).get("host")
        if host and event.get("event") in _TOUCHING_EVENTS:
            self.touched.add(host)  # a connection to it is up, or being made: a stop must look there
        if self.ansible_pid is None and event.get("pid"):
            self.ansible_pid = int(event["pid"])
            self.control.note_ansible_pid(self.ansible_pid)
        self.recorder.add_output(int(event.get("counter") or 0), event.get("stdout") or "")
        for index, result in enumerate(self.tracker.add_all(event)):
            if index == 0:  # the event's own result (the others are tasks it says were never reached)
                _explain_text(result, event, diff_escaped)
            self.recorder.add_task(result)
            self.tasks_by_host.setdefault(result.host, []).append(result)

    def finish(self, status: str, error: str) -> RunView:
        """Flush what was recorded, write each host's verdict, close the run row.

        If the store refuses any of it, the run is closed `failed` without verdicts instead.
        """
        shutil.rmtree(self.private_dir, ignore_errors=True)
        if self.lease_lost:
            return queries.get_run(self.run_id)  # closed by whoever found the lease lapsed; not ours to write
        if not self.store_error:
            try:
                return self._record_end(status, error)
            except StoreError as exc:
                self.store_refused(exc)
        return self._close_refused()

    def _record_end(self, status: str, error: str) -> RunView:
        self.recorder.flush()
        error = with_refused_values(error, self.recorder.problems)
        verdicts = self.verdicts() if self.gathered is not None else self.settled_verdicts(status)
        records.finish_run(self.run_id, status, verdicts, error)  # one transaction: all verdicts or none
        return queries.get_run(self.run_id)

    def settled_verdicts(self, status: str) -> list[HostVerdict]:
        """The tracker's verdicts; without Ansible's recap (a stop, a lost stream), "in sync" is not proven."""
        verdicts = self.tracker.verdicts()
        if status not in _REACHED_THE_END or (self.events_seen and not self.tracker.finished):
            verdicts = settle_incomplete(verdicts)
        return _mark_unconfirmed(verdicts, self.unconfirmed())

    def _close_refused(self) -> RunView:
        """Close the run `failed` with the store's refusal and no verdicts, trying again while it refuses."""
        for delay in CLOSE_RETRY_DELAYS:
            time.sleep(delay)
            try:
                records.fail_run(self.run_id, self.store_error)
                return queries.get_run(self.run_id)
            except StoreError as exc:
                refusal = _store_message(exc)
                records.discard_pending()
        raise StoreError(
            f"run {self.run_id} could not be closed: {self.store_error}, and closing it was refused too "
            f"({refusal}); once the store takes writes again, the next `fleet runs` or controller tick marks it "
            f"interrupted (its lease lapses {self.settings.lease_seconds}s after this)"
        )

    def release_locks(self) -> None:
        """Free the run's hosts, but those where its stopped work may go on (their locks are kept, with why);
        if the store refuses, the next look at lapsed runs frees them."""
        keep = self.unconfirmed()
        for delay in CLOSE_RETRY_DELAYS:
            time.sleep(delay)
            try:
                records.release_host_locks(self.run_id, keep)
                return
            except StoreError as exc:
                log.error("run %s: releasing its host locks was refused: %s", self.run_id, _store_message(exc))
                records.discard_pending()

    def raise_if_unrecorded(self) -> None:
        """The run ended without its results recorded: say so, rather than report verdicts nobody stored."""
        if self.store_error:
            raise StoreError(
                f"run {self.run_id} failed: {self.store_error}; "
                "no host's status was changed; fix the database, then run it again"
            )
        if self.lease_lost:
            raise FleetError(
                f"run {self.run_id} was marked interrupted by another fleet process while this one "
                f"ran it (its lease lapsed: this process was unresponsive over "
                f"{self.settings.lease_seconds}s); nothing after that was recorded; run it again"
            )


def _mark_unconfirmed(verdicts: list[HostVerdict], unconfirmed: dict[str, str]) -> list[HostVerdict]:
    """`incomplete` with the message for each host whose stopped work may still run (whatever was seen)."""
    marked = [
        replace(v, status=HostStatus.INCOMPLETE, message=unconfirmed[v.name]) if v.name in unconfirmed else v
        for v in verdicts
    ]
    seen = {v.name for v in verdicts}
    return marked + [
        HostVerdict(name=name, status=HostStatus.INCOMPLETE, message=message)
        for name, message in unconfirmed.items()
        if name not in seen
    ]


def _lost_race(probe: Probe, lost: list[str], lost_again: list[str]) -> Probe:
    """A probe made again after this process's first-contact pins of `lost` lost to another process's."""
    if lost_again and probe.usable:  # the pins changed under this run twice: trust nothing it pinned
        return Probe(
            probe.name,
            "pin_race",
            f"other fleet processes pinned different SSH host keys for "
            f"{', '.join(lost + lost_again)} while this run probed them; run the check again",
        )
    if probe.state not in ("key_changed", "jump_key_changed"):
        return probe
    return replace(
        probe,
        message=(
            f"another fleet process pinned a different SSH host key for {', '.join(lost)} at the same moment as "
            f"this run, and the store keeps the first pin: {probe.message}"
        ),
    )


DROPPED_RESULT = (
    f"[fleet: Ansible's result was over {MAX_EVENT_RES:,} characters and ansible-runner left it "
    "out of the event: its diff and message are not shown]"
)


def _explain_text(result: TaskResult, event: dict[str, Any], diff_escaped: bool) -> None:
    """Say on a task's result what the reader would otherwise not know: its diff shows escaped bytes
    (fleet.text), or its result never reached fleet at all (ansible-runner emptied it for its size)."""
    if diff_escaped:
        result.diff = mark_escaped(result.diff)
    res = (event.get("event_data") or {}).get("res")
    if res == {} and event.get("event") in _RESULT_EVENTS:
        if result.status == "changed" and not result.diff:
            result.diff = DROPPED_RESULT
        elif not result.note:
            result.note = DROPPED_RESULT
    elif result.status == "changed" and not result.diff and isinstance(res, dict):
        result.diff = skipped_diff(res)


_RESULT_EVENTS = ("runner_on_ok", "runner_on_failed")
# Why Ansible sent no diff of a file it changes (the keys its action plugins set), said as its console says it.
_SKIPPED_DIFF = {
    "src_binary": "the source file appears to be binary",
    "dst_binary": "the destination file appears to be binary",
    "src_larger": "the source file is larger than {} bytes (Ansible's max_diff_size)",
    "dst_larger": "the destination file is larger than {} bytes (Ansible's max_diff_size)",
}


def skipped_diff(res: dict[str, Any]) -> str:
    """'[fleet: Ansible sent no diff: <why>]' for a file diff Ansible skipped (binary, too big); '' otherwise."""
    diff = res.get("diff")
    diffs = [diff] if isinstance(diff, dict) else [d for d in diff or [] if isinstance(d, dict)]
    reasons = [why.format(d[key]) for d in diffs for key, why in _SKIPPED_DIFF.items() if key in d]
    return f"[fleet: Ansible sent no diff: {'; '.join(reasons)}]" if reasons else ""


# The refused values a run's note names one by one; past these it counts the rest.
NAMED_REFUSALS = 3


def with_refused_values(error: str, problems: list[str]) -> str:
    """The run's note, and what the store refused of its results (each value replaced by a placeholder)."""
    if not problems:
        return error
    named = "; ".join(problems[:NAMED_REFUSALS])
    more = f"; and {len(problems) - NAMED_REFUSALS} more" if len(problems) > NAMED_REFUSALS else ""
    note = f"every result was recorded, but {named}{more}"
    return f"{error}; {note}" if error else note


def _store_message(exc: StoreError) -> str:
    """The database's own words for a refusal, without the statement and its parameters (task output)."""
    return str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__


def close_lapsed_runs(settings: Settings) -> list[RunView]:
    """Close as `interrupted` the running runs whose process stopped renewing their lease; free their hosts.

    Whoever looks calls this (the controller's tick, `fleet check`, `fleet runs`,
    `fleet cancel`), so a run whose process was killed with -9 ends within a lease
    period even when no controller runs. Its ansible-playbook, which runs in a
    session of its own and outlives it, is stopped when it ran on this machine.
    """
    me = leases.this_process()
    closed = leases.close_lapsed_runs(lambda holder: _holder_gone(holder, me), settings.lease_seconds)
    for lapsed in closed:
        if lapsed.holder is None or lapsed.holder.host == me.host:
            stop_orphaned_ansible(lapsed.run.ansible_pid)
        log.warning("run %s: %s", lapsed.run.id, lapsed.run.error)
    return [lapsed.run for lapsed in closed]


def _holder_gone(holder: leases.Holder, me: leases.Holder) -> bool:
    """Is the process holding a lease known dead? Only a process on this machine can be known so."""
    if holder.host != me.host:
        return False
    if holder.pid == me.pid:
        return holder.token != me.token  # our pid, another token: a dead predecessor's
    return not processes.pid_alive(holder.pid)


def stop_orphaned_ansible(pid: int | None) -> None:
    """Kill the process tree of an ansible-playbook whose fleet process died (it would go on changing hosts)."""
    if not pid:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"ansible" in cmdline:
        processes.kill_tree(pid)
        log.warning("stopped orphaned ansible-playbook (pid %s) and its processes", pid)


def check_context(settings: Settings, desired: DesiredState, targets: list[InventoryHost]) -> CheckContext:
    """What a verdict needs besides the events: accepted tasks, each host's converge history, changed paths."""
    try:
        accepted = load_policy(desired.tree).accept_unverified
    except (policy.PolicyError, OSError):
        accepted = frozenset()  # validation rejects such a revision; a run never gets here with one
    names = [t.name for t in targets]
    history = {row.name: host_history(row, desired.revision.sha) for row in queries.hosts_named(names)}
    older = {h.last_converge_sha for h in history.values() if h.last_converge_sha} - {desired.revision.sha}
    return CheckContext(
        revision=desired.revision.sha,
        hosts=frozenset(names),
        accept_unverified=accepted,
        history=history,
        changed_paths={sha: source.changed_paths(settings, sha, desired.revision.sha) for sha in older},
        project_dir=f"{desired.tree}/",
    )


def host_history(host: HostView, revision: str) -> HostHistory:
    """The part of a host's record that explains drift: last converge, whether a check followed it, flapping."""
    converged, checked = host.last_converge_at, host.last_check_at
    follows_converge = (
        converged is not None
        and host.last_converge_sha == revision
        and (checked is None or aware(checked) < aware(converged))
    )
    flapping = frozenset(json.loads(host.flapping)) if host.flapping else frozenset()
    return HostHistory(
        last_converge_sha=host.last_converge_sha, checked_since_converge=not follows_converge, flapping=flapping
    )


# Ansible ran to its recap; any other end (stopped, timed out) proves no host in sync.
_REACHED_THE_END = (RunStatus.SUCCESSFUL, RunStatus.FAILED)
_NOT_CHECKED = (HostStatus.FAILED, HostStatus.UNREACHABLE)


def _run_status(runner_status: str, verdicts: list[HostVerdict]) -> str:
    """A run that reached the end still failed if any host failed or was unreachable."""
    if runner_status == RunStatus.SUCCESSFUL and any(v.status in _NOT_CHECKED for v in verdicts):
        return RunStatus.FAILED
    return runner_status


# Exit codes of check and converge, most urgent first: unreachable/failed, drift, unverified, in sync.
EXIT_CODES: dict[str, int] = {
    HostStatus.UNREACHABLE: 3,
    HostStatus.FAILED: 3,
    HostStatus.INCOMPLETE: 3,
    HostStatus.DRIFTED: 2,
    HostStatus.UNVERIFIED: 4,
}
EXIT_PRECEDENCE = (3, 2, 4, 0)


def exit_code(verdicts: list[HostVerdict]) -> int:
    """0 all in sync; 3 a host unreachable, failed or not fully evaluated; else 2 drift found; else 4 unverified."""
    found = {EXIT_CODES.get(v.status, 0) for v in verdicts}
    return next(code for code in EXIT_PRECEDENCE if code in found or code == 0)
