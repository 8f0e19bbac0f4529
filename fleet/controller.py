"""The controller: keeps the fleet matching git without anyone at the keyboard.

One loop, one step at a time, the status written on every path:

    poll source -> commit check / scheduled check -> run the queue one by one
    -> after a check: remediation policy (report | approve | auto rollout)
    -> approved converges: re-check, converge exactly that drift, verify

Runs are executed one after another, so the controller never holds two
runs on one host; host locks in the store keep the CLI from colliding
with it. State that must survive a restart lives in the store, and a
restart turns runs a dead process left `running` into `interrupted`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fleet import jobs, policy, processes, source
from fleet.errors import FleetError, RevisionRejected, SourceError
from fleet.settings import Settings
from fleet.store import queries, records
from fleet.store.db import db
from fleet.store.models import Run

log = logging.getLogger("fleet.controller")

MAX_FETCH_BACKOFF = timedelta(minutes=15)
CANCEL_POLL_SECONDS = 1.0
IDLE_SLEEP_SECONDS = 1.0
INTERRUPTED = ("the fleet process (pid {pid}) stopped while this run was running; "
               "results recorded so far are kept and nothing was resumed; request the run again if needed")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; every one fleet writes is UTC.
    return moment.replace(tzinfo=timezone.utc) if moment and moment.tzinfo is None else moment


class Controller:
    def __init__(self, settings: Settings, stop: threading.Event | None = None):
        self.settings = settings
        self.stop = stop or threading.Event()
        self._cancel_checked = 0.0

    # --- lifecycle -------------------------------------------------------------

    def recover(self) -> None:
        """Close what a killed controller left behind; resume nothing."""
        orphaned = records.close_orphaned_runs(_pid_alive, INTERRUPTED)
        for run in orphaned:
            _stop_orphaned_ansible(run.ansible_pid)
            log.warning("run %s was left running by a stopped process; marked interrupted", run.id)
        for run in records.interrupt_queued_converges(
                "the controller restarted before this converge started; request it again if still wanted"):
            log.warning("queued converge %s not started after a restart; marked interrupted", run.id)
        state = records.controller_state()
        state.pid = os.getpid()
        db.session.commit()

    def run_forever(self) -> None:
        self.recover()
        log.info("controller started: source %s, poll every %ss", self.settings.repo, self.settings.poll_interval)
        while not self.stop.is_set():
            try:
                worked = self.tick(utcnow())
            except Exception:  # one bad step must not stop the controller; the next tick retries
                log.exception("controller step failed")
                db.session.rollback()
                worked = False
            if not worked:
                self.stop.wait(IDLE_SLEEP_SECONDS)
        log.info("controller stopped")

    def tick(self, now: datetime) -> bool:
        """One step of the loop; True when it did something worth looping again at once for."""
        self._heartbeat(now)
        self.poll_source(now)
        self.plan_checks(now)
        if self._apply_one_approval():
            return True
        run = records.next_queued_run()
        if run is None:
            return False
        self.execute(run)
        return True

    def _heartbeat(self, now: datetime) -> None:
        state = records.controller_state()
        state.heartbeat_at = now
        db.session.commit()

    # --- source ----------------------------------------------------------------

    def poll_source(self, now: datetime) -> None:
        """Fetch when due (interval, backoff or webhook); sync_source records the outcome."""
        state = records.controller_state()
        next_fetch = _aware(state.next_fetch_at)
        if not state.fetch_requested and next_fetch and now < next_fetch:
            return
        state.fetch_requested = False
        db.session.commit()
        try:
            jobs.sync_source(self.settings)
        except RevisionRejected as exc:
            log.warning("%s", exc)
        except SourceError as exc:
            failures = records.controller_state().fetch_failures + 1
            delay = self._schedule_fetch(now, failures)
            log.warning("source stale (%s); retrying in %ss", exc, int(delay.total_seconds()))
            return
        self._schedule_fetch(now, failures=0)

    def _schedule_fetch(self, now: datetime, failures: int) -> timedelta:
        interval = timedelta(seconds=self.settings.poll_interval)
        delay = min(interval * (2 ** max(failures - 1, 0)), max(MAX_FETCH_BACKOFF, interval))
        state = records.controller_state()
        state.fetch_failures = failures
        state.next_fetch_at = now + delay
        db.session.commit()
        return delay

    # --- planning ---------------------------------------------------------------

    def plan_checks(self, now: datetime) -> None:
        """Queue a check of every host for a new revision, and on the policy's schedule."""
        state = records.controller_state()
        desired_sha = records.source_state().desired_sha
        if desired_sha and desired_sha != state.commit_checked_sha:
            records.enqueue_run("check", "commit", "", "controller")
            state.commit_checked_sha = desired_sha
            state.last_scheduled_check_at = now  # the commit check stands in for this schedule slot
            db.session.commit()
            return
        current = self.current_policy()
        if desired_sha and policy.check_due(current, _aware(state.last_scheduled_check_at), now):
            records.enqueue_run("check", "schedule", "", "controller")
            state.last_scheduled_check_at = now
            db.session.commit()

    def current_policy(self) -> policy.Policy:
        """fleet.yml of the desired revision (plan_checks asks every tick; jobs.load_policy parses once)."""
        sha = records.source_state().desired_sha
        tree = source.export_path(self.settings, sha) if sha else None
        return jobs.load_policy(tree) if tree and tree.exists() else policy.DEFAULT_POLICY

    # --- execution ---------------------------------------------------------------

    def execute(self, run: Run, trigger_policy: bool = True) -> jobs.RunReport | None:
        """Run one queued run to its end; after a check, apply the remediation policy."""
        try:
            desired = jobs.desired_state(self.settings)
            records.start_queued_run(run, desired.revision.sha, os.getpid())
            targets = jobs.resolve_targets(self.settings, desired, run.limit or None)
            report = jobs.perform_run(self.settings, run, desired, targets,
                                      should_cancel=lambda: self._should_cancel(run.id))
        except FleetError as exc:
            self._fail(run, str(exc))
            return None
        log.info("run %s (%s, %s) ended %s", run.id, run.kind, run.trigger, report.run.status)
        if not trigger_policy or run.trigger == "policy" or report.run.status in ("canceled", "interrupted"):
            return report
        if run.kind == "check":
            self.remediate(report, desired)
        elif not self.stop.is_set():
            # A converge someone asked for ends like a policy one: a check that proves the result.
            self.run_now("check", "policy", run.limit or "")
        return report

    def _fail(self, run: Run, error: str) -> None:
        db.session.rollback()
        run = db.session.get(Run, run.id)
        if run.status in ("queued", "running"):
            records.finish_run(run, "failed", [], error)
        log.warning("run %s failed: %s", run.id, error)

    def _should_cancel(self, run_id: int) -> bool:
        if self.stop.is_set():
            records.note_cancel(run_id, "fleet is stopping (SIGTERM); the run was stopped, partial results kept")
            return True
        now = time.monotonic()
        if now - self._cancel_checked < CANCEL_POLL_SECONDS:
            return False
        self._cancel_checked = now
        return records.cancel_requested(run_id)

    def run_now(self, kind: str, trigger: str, limit: str, requested_by: str = "controller",
                approval_id: int | None = None) -> jobs.RunReport | None:
        """Queue a run and execute it at once (policy steps run back to back)."""
        run, _ = records.enqueue_run(kind, trigger, limit, requested_by, approval_id)
        if run.status != "queued":
            return None
        return self.execute(run, trigger_policy=False)

    # --- remediation ----------------------------------------------------------------

    def remediate(self, report: jobs.RunReport, desired: jobs.DesiredState) -> None:
        """Act on a check's drift as each host's group says: report, approve or auto."""
        rules = self.current_policy()
        groups = {h.name: h.groups for h in desired.hosts}
        drifted = [v.name for v in report.verdicts
                   if v.status == "drifted" and not only_flapping(report.tasks_by_host.get(v.name, []))]
        by_mode: dict[str, list[str]] = {"auto": [], "approve": [], "report": []}
        for name in drifted:
            by_mode[policy.mode_for(rules, groups.get(name, ()))].append(name)
        for name in by_mode["approve"]:
            self._open_approval(name, report.run, desired)
        if by_mode["auto"]:
            self._auto_converge(by_mode["auto"], rules, desired)

    def _open_approval(self, host: str, run: Run, desired: jobs.DesiredState) -> None:
        tasks = queries.changed_tasks_of(run.id, host)
        summary = ", ".join(t.task for t in tasks)[:500]
        approval = records.open_approval(host, run.id, desired.revision.sha, drift_signature(tasks), summary)
        log.info("drift on %s waits for approval %s", host, approval.id)

    def _auto_converge(self, hosts: list[str], rules: policy.Policy, desired: jobs.DesiredState) -> None:
        if desired.revision.rewrites_history:
            log.warning("revision %s rewrites history: auto converge of %s skipped; converge by hand",
                        desired.revision.sha[:12], ", ".join(hosts))
            return
        if not policy.window_open(rules, utcnow()):
            log.info("auto converge of %s waits for the next allow window", ", ".join(hosts))
            return
        self.rollout(sorted(hosts), rules.rollout)

    def rollout(self, hosts: list[str], rollout: policy.Rollout) -> list[str]:
        """Converge hosts canary first, then in batches; stop above max_fail_percentage; verify."""
        attempted, failed, converged = 0, 0, []
        for index, batch in enumerate(policy.rollout_batches(rollout, hosts)):
            if self.stop.is_set():
                break
            report = self.run_now("converge", "policy", ",".join(batch))
            batch_failed = [v.name for v in report.verdicts if v.status != "in_sync"] if report else batch
            attempted += len(batch)
            failed += len(batch_failed)
            converged += [h for h in batch if h not in batch_failed]
            canary_failed = index == 0 and rollout.canary > 0 and bool(batch_failed)
            if canary_failed or policy.should_stop(rollout, attempted, failed):
                log.warning("rollout stopped: %s of %s hosts failed (max %s%%)", failed, attempted,
                            rollout.max_fail_percentage)
                break
        if converged and not self.stop.is_set():
            self.run_now("check", "policy", ",".join(converged))
        return converged

    def _apply_one_approval(self) -> bool:
        """Re-check an approved host; converge only if the drift is still exactly what was approved."""
        waiting = queries.approved_waiting()
        if not waiting:
            return False
        approval = waiting[0]
        recheck = self.run_now("check", "policy", approval.host, approval_id=approval.id)
        if recheck is None or recheck.run.status == "canceled":
            records.close_approval(approval, "failed", "the re-check before converging did not finish")
            return True
        signature = drift_signature(queries.changed_tasks_of(recheck.run.id, approval.host))
        verdict = next((v for v in recheck.verdicts if v.name == approval.host), None)
        if verdict is None or verdict.status != "drifted":
            records.close_approval(approval, "superseded", "no drift left to converge when re-checked")
        elif signature != approval.drift_signature:
            records.close_approval(approval, "superseded", "the drift changed since it was approved; asking again")
            desired = jobs.desired_state(self.settings)
            self._open_approval(approval.host, recheck.run, desired)
        else:
            converge = self.run_now("converge", "policy", approval.host, approval_id=approval.id)
            ok = converge is not None and all(v.status == "in_sync" for v in converge.verdicts)
            records.close_approval(approval, "applied" if ok else "failed",
                                   "converged and verified" if ok else "the converge did not succeed",
                                   converge.run.id if converge else None)
            if ok:
                self.run_now("check", "policy", approval.host)
        return True


def only_flapping(tasks) -> bool:
    """Is all of a host's drift in tasks that change on every run? A converge would not fix it."""
    drift = [t for t in tasks if t.drift]
    flapping = [t for t in drift if t.flapping]
    if flapping and len(flapping) == len(drift):
        log.info("drift on %s is only in tasks that are not idempotent (%s): not converged by policy",
                 drift[0].host, ", ".join(t.task for t in flapping))
        return True
    return False


def drift_signature(tasks) -> str:
    """A fingerprint of exactly which tasks drifted and how, to pin what an approval covers."""
    digest = hashlib.sha256()
    for task in sorted(tasks, key=lambda t: (t.task, t.action, t.diff)):
        digest.update(f"{task.task}\0{task.action}\0{task.diff}\0".encode())
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    """Is another process with this pid running? (Our own pid at start-up is a dead predecessor's.)"""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_orphaned_ansible(pid: int | None) -> None:
    """Kill the process group of an ansible-playbook whose controller died (it would go on changing hosts)."""
    if not pid:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"ansible" in cmdline:
        processes.kill_tree(pid)
        log.warning("stopped orphaned ansible-playbook (pid %s) and its processes", pid)
