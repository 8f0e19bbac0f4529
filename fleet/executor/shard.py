"""The worker's side of one shard: claim it, export and validate the exact sha, run Ansible, record.

    refuse (another fleet version) | claim -> exact revision -> pre-flight -> Ansible -> verdicts

Everything a run does with the local executor happens here the same way, through
jobs.Execution (the pre-flight with the store's host-key pins, the event stream,
the truth rule, cancel and the run's timeout), except what belongs to the run as
a whole: its lease, its host locks and its end are the controller's. A shard
attempt's writes are fenced by the token its claim got (fleet.store.shards), so
a worker presumed lost can write nothing once its shard was given away.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import fleet
from fleet import revisions, source
from fleet.drift import HostVerdict, TaskResult
from fleet.errors import FleetError, SourceError, StoreError
from fleet.executor.base import LocalExecutor
from fleet.executor.dispatch import verdicts_to_json
from fleet.jobs import Execution, with_refused_values
from fleet.revisions import DesiredState, RevisionSummary
from fleet.runner import InventoryHost, Runner
from fleet.settings import Settings
from fleet.store import queries, records, shards
from fleet.store.db import current_store
from fleet.store.shards import ShardView
from fleet.store.views import RunView, view_of
from fleet.vocabulary import HostStatus, RevisionStatus, RunStatus, ShardStatus, aware, utcnow

log = logging.getLogger("fleet.worker")

# One fetch and export at a time per worker process: shards of one revision run side by side on threads.
_source_lock = threading.Lock()
_validated: dict[str, str] = {}  # sha -> '' (valid) or why it does not validate here


def version_refusal(worker: str, controller_version: str) -> str:
    """Why this worker refuses a shard sent by a controller of `controller_version` ('' when it takes it)."""
    if controller_version == fleet.__version__:
        return ""
    return (
        f"worker {worker} runs fleet {fleet.__version__} but the controller runs fleet {controller_version}; "
        "shards run only on workers of the controller's version: upgrade the worker"
    )


def execute_shard(settings: Settings, shard_id: int, attempt: int, worker: str, runner: Runner | None = None) -> str:
    """Claim and run one shard; its end status, or why it was not run ('' when there was nothing to claim)."""
    shard = shards.claim(shard_id, attempt, worker, settings.lease_seconds)
    if shard is None:
        log.info("shard %s attempt %s: nothing to claim (taken, given away or canceled)", shard_id, attempt)
        return ""
    with ShardLease(shard, settings.lease_seconds) as lease:
        return _run_claimed(settings, shard, worker, lease, runner or revisions.default_runner(settings))


def _run_claimed(settings: Settings, shard: ShardView, worker: str, lease: ShardLease, runner: Runner) -> str:
    if shards.run_stopped(shard.run_id):  # canceled, or closed with its controller, while the shard waited
        return _end_unstarted(settings, shard, ShardStatus.CANCELED, "the run was stopped before this shard started")
    run = queries.get_run(shard.run_id)
    try:
        desired = exact_revision(settings, run.revision_sha or "", runner)
    except FleetError as exc:
        return _fail(settings, shard, f"worker {worker} cannot run revision {(run.revision_sha or '')[:12]}: {exc}")
    execution = shard_execution(settings, run, shard, runner, lease)
    targets, missing = _targets(desired, shard.names)
    crashed = ""
    try:
        status = execution.run(desired, targets)
    except Exception as exc:  # the shard ends failed with the reason; the worker goes on with the next one
        log.exception("shard %s of run %s crashed", shard.index, run.id)
        crashed = f"worker {worker} could not finish the shard: {exc}"
        status = RunStatus.FAILED
    return finish_shard(execution, shard, lease, status, missing, crashed).status


class ShardLease:
    """Renews a claimed shard's lease from a thread of its own for as long as this worker works on it
    (preparing the revision included), so only a dead or stuck worker lets it lapse."""

    def __init__(self, shard: ShardView, lease_seconds: int):
        self.shard, self.lease_seconds = shard, lease_seconds
        self.store = current_store()
        self.lost = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._keep, name=f"fleet-shard-{shard.id}-lease", daemon=True)

    def __enter__(self) -> ShardLease:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No more renewals (the shard's end is written next, fenced and renewing it once more)."""
        self.stopping.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=self.lease_seconds)

    def _keep(self) -> None:
        while not self.stopping.wait(self.lease_seconds / 3):
            with self.store.bound():
                try:
                    held = shards.renew(self.shard.id, self.shard.token, self.lease_seconds)
                except StoreError as exc:  # the store refuses: try again; the lease says how long
                    log.warning("shard %s: renewing its lease was refused: %s", self.shard.id, exc)
                    continue
            if not held:
                log.error(
                    "run %s shard %s was given away by the controller; stopping", self.shard.run_id, self.shard.index
                )
                self.lost.set()
                return


def exact_revision(settings: Settings, sha: str, runner: Runner) -> DesiredState:
    """The revision the controller chose, exported from this worker's own fetch of the source and
    validated here too: a sha the store does not hold as valid, or that does not validate, is refused."""
    stored = queries.get_revision(sha) if sha else None
    if stored is None or stored.status != RevisionStatus.VALID:
        raise FleetError("the store holds no validated revision of that sha; nothing runs from it")
    with _source_lock:
        tree = _export(settings, sha)
        if sha not in _validated:
            revisions.install_requirements(tree, runner)
            _validated[sha] = revisions.validate_revision(tree, settings, runner).error
    if _validated[sha]:
        raise FleetError(f"it does not validate on this worker: {_validated[sha]}")
    hosts = revisions.inventory_hosts(tree, settings, runner)
    return DesiredState(revision=view_of(RevisionSummary, stored), tree=tree, hosts=tuple(hosts))


def _export(settings: Settings, sha: str) -> Path:
    tree = source.export_path(settings, sha)
    if tree.exists():
        return tree
    repo = source.fetch_source(settings)
    try:
        return source.export_revision(repo, settings, sha)
    except Exception as exc:  # git's own error: the sha is not in the source this worker fetched
        raise SourceError(
            f"the source {source.display_url(settings.repo)} has no commit {sha[:12]} here ({exc})"
        ) from exc


def _targets(desired: DesiredState, names: list[str]) -> tuple[list[InventoryHost], list[str]]:
    listed = {h.name: h for h in desired.hosts}
    return [listed[n] for n in names if n in listed], [n for n in names if n not in listed]


def _fail(settings: Settings, shard: ShardView, reason: str) -> str:
    log.error("shard %s of run %s: %s", shard.index, shard.run_id, reason)
    return _end_unstarted(settings, shard, ShardStatus.FAILED, reason)


def _end_unstarted(settings: Settings, shard: ShardView, status: str, reason: str) -> str:
    """End a claimed shard before Ansible ran for it (fenced: not if it was given away meanwhile)."""
    if shards.fence(shard.id, shard.token, settings.lease_seconds, status=status, reason=reason, finished_at=utcnow()):
        shards.commit()
    else:
        records.discard_pending()
    return status


class ShardRecorder(records.RunRecorder):
    """A run's recorder for one shard attempt: its event numbers start at the attempt's offset, and each
    batch is written only while the attempt still holds the shard (checked in the batch's transaction)."""

    def __init__(self, shard: ShardView, lease_seconds: int):
        super().__init__(shard.run_id)
        self.shard, self.lease_seconds = shard, lease_seconds
        self.offset = shards.seq_offset(shard.index, shard.attempt)
        self.lost = False

    def add_task(self, result: TaskResult) -> None:
        super().add_task(replace(result, seq=result.seq + self.offset))

    def add_output(self, seq: int, text: str) -> None:
        super().add_output(seq + self.offset, text)

    def flush(self) -> None:
        if self.lost:
            self.discard()
            return
        if not shards.fence(self.shard.id, self.shard.token, self.lease_seconds):
            records.discard_pending()
            self.discard()
            self.lost = True
            log.error(
                "run %s shard %s: given away by the controller; nothing more is recorded",
                self.shard.run_id,
                self.shard.index,
            )
            return
        super().flush()  # commits the fence with the batch

    def _reopen_batch(self) -> bool:
        """A refused batch is written again row by row in a transaction of its own: fenced again first."""
        if shards.fence(self.shard.id, self.shard.token, self.lease_seconds):
            return True
        self.lost = True
        log.error(
            "run %s shard %s: given away by the controller; nothing more is recorded",
            self.shard.run_id,
            self.shard.index,
        )
        return False


def shard_execution(settings: Settings, run: RunView, shard: ShardView, runner: Runner, lease: ShardLease) -> Execution:
    """A jobs.Execution for one shard: Ansible here, the shard's lease instead of the run's, every write fenced."""
    recorder = ShardRecorder(shard, settings.lease_seconds)
    control = ShardControl(shard, lease, recorder, settings, run.started_at)
    private_dir = settings.data_dir / "runs" / f"{run.id}-{shard.index}"
    return Execution(
        settings, run, None, None, runner, control, recorder=recorder, private_dir=private_dir, executor=LocalExecutor()
    )


class ShardControl:
    """A shard's hold on its work: claimed (fenced) before it runs, its lease kept by its ShardLease thread, lost
    once the controller gave it away; a stop is the run's cancel or the run closed under it."""

    def __init__(
        self,
        shard: ShardView,
        lease: ShardLease,
        recorder: ShardRecorder,
        settings: Settings,
        started_at: datetime | None,
    ) -> None:
        self.shard, self.lease, self.recorder, self.settings = shard, lease, recorder, settings
        self.started_at = started_at
        self.given_away = False  # a fenced write found the shard held by another attempt

    def claim(self) -> bool:
        return True  # the shard was claimed (fenced) before; the run's lease stays the controller's

    def renew(self) -> bool:
        return True  # the ShardLease thread renews the shard's lease; `lost` says when it was given away

    def lost(self) -> bool:
        return self.given_away or self.recorder.lost or self.lease.lost.is_set()

    def stop_asked(self) -> bool:
        return shards.run_stopped(self.shard.run_id)

    def deadline(self) -> float:
        """The run's timeout counts from the run's start, wherever its shards wait or run."""
        elapsed = (utcnow() - aware(self.started_at)).total_seconds() if self.started_at else 0.0
        return time.monotonic() + max(0.0, self.settings.run_timeout - elapsed)

    def note_strategy(self, name: str) -> None:
        self._fenced(strategy=name)

    def note_ansible_path(self, path: str) -> None:
        self._fenced(ansible_path=path)  # the run's own is gathered from its shards' (dispatch)

    def note_ansible_pid(self, pid: int) -> None:
        self._fenced(ansible_pid=pid)

    def _fenced(self, **values: object) -> None:
        """Write values on the shard while this attempt holds it (a store that refuses raises: the execution
        stops, as a run does)."""
        self.given_away = not shards.renew(self.shard.id, self.shard.token, self.settings.lease_seconds, **values)
        if self.given_away:
            log.error(
                "run %s shard %s was given away by the controller (its lease lapsed); stopping Ansible",
                self.shard.run_id,
                self.shard.index,
            )


def finish_shard(
    execution: Execution, shard: ShardView, lease: ShardLease, status: str, missing: list[str], crashed: str
) -> ShardView:
    """Write the shard's verdicts and end, fenced; nothing at all once the shard was given away."""
    lease.stop()
    shutil.rmtree(execution.private_dir, ignore_errors=True)
    recorder = execution.recorder
    assert isinstance(recorder, ShardRecorder)  # shard_execution gave it one
    if execution.halted():
        records.discard_pending()
        return _shard_now(shard)
    recorder.flush()
    if recorder.lost:
        return _shard_now(shard)
    values = _end_values(execution, status, missing, crashed)
    if shards.fence(shard.id, shard.token, execution.settings.lease_seconds, **values):
        shards.commit()
    else:
        records.discard_pending()
    return _shard_now(shard)


def _shard_now(shard: ShardView) -> ShardView:
    now = shards.get_shard(shard.id)
    assert now is not None  # this worker claimed it; a shard goes only with its run, pruned once ended
    return now


def _end_values(execution: Execution, status: str, missing: list[str], crashed: str) -> dict[str, Any]:
    if crashed:
        return {"status": ShardStatus.FAILED, "reason": crashed, "finished_at": utcnow(), "outcome": status}
    verdicts = execution.settled_verdicts(status) + [
        HostVerdict(name=n, status=HostStatus.FAILED, message="not in the inventory as this worker lists it")
        for n in missing
    ]
    stopped = status in (RunStatus.CANCELED, RunStatus.TIMEOUT)  # Ansible was stopped, not finished
    # Values the store refused (each replaced by a note) are named with the shard, and by the run's note.
    problems = execution.recorder.problems
    refused = {"reason": with_refused_values("", problems)} if problems else {}
    return {
        "status": ShardStatus.CANCELED if stopped else ShardStatus.DONE,
        "outcome": status,
        "verdicts": verdicts_to_json(verdicts),
        "finished_at": utcnow(),
        **refused,
    }
