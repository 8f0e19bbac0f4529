"""The controller's side of a sharded run: split the hosts, send the shards, watch them, gather verdicts.

    split -> send (pending -> sent) -> watch (lost? refused? unclaimed? stop?) -> gather -> the run's status

The controller keeps the run's lease and polls the store; workers write events and
verdicts straight into it, so the live run page works as with the local executor.
What a worker lost mid-shard means is decided here, from the shard's lapsed lease:
a check shard runs again (attempt + 1) on whichever worker takes it; a converge shard
is `interrupted`, its hosts `incomplete`, and it is never sent again.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import fleet
from fleet.drift import HostVerdict
from fleet.executor.celery_app import BrokerUnavailable, send_shard
from fleet.runner import InventoryHost
from fleet.store import records, shards, workers
from fleet.store.shards import ShardView
from fleet.vocabulary import HostStatus, RunKind, RunStatus, ShardStatus, utcnow

if TYPE_CHECKING:  # jobs imports this module where it runs a run on workers
    from fleet.jobs import Execution
    from fleet.revisions import DesiredState

log = logging.getLogger("fleet.executor")

POLL_SECONDS = 0.5
BROKER_RETRY_SECONDS = 2.0  # between tries at sending while the broker is down
REFUSED_RETRY_SECONDS = 5.0  # before a refused shard is sent again (another worker may take it)
# A sent shard no worker claimed this long, while a worker sits idle, is sent again (a broker restarted
# without persistence loses its queue); a duplicate message finds nothing to claim.
RESEND_UNCLAIMED_SECONDS = 30.0
COLD = "cold: "  # how a shard's ansible_path starts when it went cold (fleet.warm.path_text)


def run_sharded(execution: Execution, desired: DesiredState, targets: list[InventoryHost]) -> str:
    """Execute a run (a jobs.Execution, whose lease this process holds) on workers; return its status.

    The gathered verdicts and drift tasks are left on the execution for it to record.
    """
    return ShardedRun(execution, targets).run()


def shard_count(hosts: int, max_hosts: int, capacity: int) -> int:
    """As many shards as free worker slots (each worker core busy), but none above `max_hosts` hosts."""
    return max(1, min(hosts, max(math.ceil(hosts / max_hosts), capacity)))


def split_hosts(names: list[str], count: int) -> list[list[str]]:
    """`count` groups of near-equal size, dealt round-robin from the sorted names."""
    ordered = sorted(names)
    return [ordered[i::count] for i in range(count) if ordered[i::count]]


@dataclass
class _Watch:
    """What the controller remembers between polls (the store holds the rest)."""

    stopping: bool = False
    next_send: float = 0.0
    refused_seen: dict[int, float] = field(default_factory=dict)
    waiting: str = ""  # the reason last written to the run's waiting_reason


class ShardedRun:
    def __init__(self, execution: Execution, targets: list[InventoryHost]) -> None:
        self.execution = execution
        self.settings = execution.settings
        self.run_id = execution.run_id
        self.kind = execution.kind
        self.watch = _Watch()
        names = [t.name for t in targets]
        capacity = workers.online_capacity(utcnow(), fleet.__version__)
        groups = split_hosts(names, shard_count(len(names), self.settings.shard_hosts, capacity))
        self.shards = shards.create_shards(self.run_id, groups)
        log.info(
            "run %s: %d hosts in %d shards (%d worker slots online)", self.run_id, len(names), len(groups), capacity
        )

    def run(self) -> str:
        """Supervise the shards to their end; a crash or Ctrl-C here stops them on the workers too."""
        try:
            return self._supervise()
        except BaseException:
            records.discard_pending()
            records.note_cancel(self.run_id, "the controller supervising this run stopped (crash or Ctrl-C)")
            raise

    def _supervise(self) -> str:
        self.execution.deadline = self.execution.control.deadline()
        while True:
            current = shards.shards_of(self.run_id)
            if all(s.final for s in current):
                return self._gather(current)
            if not self.watch.stopping and self.execution.stop_requested():
                self._stop()
            elif self.watch.stopping:
                self.execution.renew_lease()
            self._step(current)
            time.sleep(POLL_SECONDS)

    def _step(self, current: list[ShardView]) -> None:
        now = utcnow()
        for shard in current:
            if shards.lease_lapsed(shard, now):
                self._lost(shard)
        if self.watch.stopping:
            shards.cancel_unstarted(self.run_id, "the run was stopped before a worker started this shard")
            return
        refusal = self._retry_refused(current)
        self._resend_unclaimed(current)
        broker = self._send_pending([s for s in current if s.status == ShardStatus.PENDING])
        self._note_waiting(broker or refusal)

    # --- sending -------------------------------------------------------------------------

    def _send_pending(self, pending: list[ShardView]) -> str:
        """Send the pending shards; why they wait when the broker does not take them ('' when it does)."""
        if not pending:
            return ""
        if time.monotonic() < self.watch.next_send:
            return self.watch.waiting
        for shard in pending:
            # Marked sent first: a worker may take the message before this process says another word.
            if not shards.mark_sent(shard):
                continue
            try:
                send_shard(self.settings.broker_url, shard.id, shard.attempt)
            except BrokerUnavailable as exc:
                shards.unsend(shard)
                return self._broker_down(pending, str(exc))
        return ""

    def _broker_down(self, pending: list[ShardView], problem: str) -> str:
        reason = f"{problem}; the shards wait and are sent once the broker answers"
        for shard in pending:
            shards.note_waiting(shard, reason)
        self.watch.next_send = time.monotonic() + BROKER_RETRY_SECONDS
        return reason

    def _retry_refused(self, current: list[ShardView]) -> str:
        """Send refused shards again after a pause (another worker may take them); the last refusal."""
        refusal = ""
        for shard in (s for s in current if s.status == ShardStatus.REFUSED):
            refusal = shard.reason
            seen = self.watch.refused_seen.setdefault(shard.id, time.monotonic())
            if time.monotonic() - seen >= REFUSED_RETRY_SECONDS:
                self.watch.refused_seen.pop(shard.id)
                shards.back_to_pending(shard, shard.reason)
        return refusal

    def _resend_unclaimed(self, current: list[ShardView]) -> None:
        stale = [
            s
            for s in current
            if s.status == ShardStatus.SENT
            and s.sent_at is not None
            and (utcnow() - s.sent_at).total_seconds() > RESEND_UNCLAIMED_SECONDS
        ]
        if stale and self._idle_slots() > 0:
            for shard in stale:
                if not shards.mark_sent(shard):
                    continue
                try:
                    send_shard(self.settings.broker_url, shard.id, shard.attempt)
                except BrokerUnavailable:
                    return  # the next poll tries again: the shard's sent_at is fresh, the wait starts anew
                log.info(
                    "run %s: shard %d unclaimed for %.0fs while a worker is idle; sent again",
                    self.run_id,
                    shard.index,
                    RESEND_UNCLAIMED_SECONDS,
                )

    def _idle_slots(self) -> int:
        """Free slots of the workers that take shards (online, this version, refusing nothing)."""
        listed = [
            w
            for w in workers.list_workers(utcnow(), fleet.__version__)
            if w.state == workers.ONLINE and w.version_ok and not w.refusing
        ]
        return workers.capacity_of(listed) - sum(w.running for w in listed)

    def _note_waiting(self, reason: str) -> None:
        if reason != self.watch.waiting:
            self.watch.waiting = reason
            records.note_run_waiting(self.run_id, reason)

    # --- lost workers and stops ------------------------------------------------------------

    def _lost(self, shard: ShardView) -> None:
        """A running shard whose worker stopped renewing its lease: the worker is presumed lost."""
        lapsed = f"worker {shard.worker} stopped renewing this shard's lease ({self.settings.lease_seconds}s)"
        if self.watch.stopping:
            if shards.give_up_running(shard, f"{lapsed} while the run was stopping"):
                log.warning("run %s: shard %d closed unfinished: %s", self.run_id, shard.index, lapsed)
        elif self.kind == RunKind.CHECK:
            if shards.rearm_lost(shard, f"{lapsed}; the check of its hosts runs again on another worker"):
                log.warning("run %s: shard %d lost (%s); checking its hosts again", self.run_id, shard.index, lapsed)
        elif shards.interrupt_lost(shard, f"{lapsed} mid-converge; a converge is never repeated by itself"):
            log.warning("run %s: converge shard %d interrupted: %s", self.run_id, shard.index, lapsed)

    def _stop(self) -> None:
        """Cancel, timeout, SIGTERM or a lost lease: workers see the store's cancel flag and stop Ansible."""
        self.watch.stopping = True
        reason = (
            f"stopped after the run timeout of {self.settings.run_timeout}s"
            if self.execution.timed_out
            else "the run was stopped"
        )
        if not records.cancel_requested(self.run_id):
            records.note_cancel(self.run_id, reason)
        self._note_waiting("")

    # --- the end -------------------------------------------------------------------------

    def _gather(self, current: list[ShardView]) -> str:
        verdicts = [v for shard in current for v in shard_verdicts(shard)]
        self.execution.gathered = verdicts
        self.execution.tasks_by_host = shards.task_results_of(self.run_id)
        strategies = sorted({s.strategy for s in current if s.strategy})
        if strategies:
            records.note_strategy(self.run_id, ("/".join(strategies) + " (workers)")[:40])
        path = gathered_ansible_path(current)
        if path:
            records.note_ansible_path(self.run_id, path)
        self.execution.note = "; ".join(filter(None, [_interrupted_note(current), *_refused_notes(current)]))
        return self._status(current, verdicts)

    def _status(self, current: list[ShardView], verdicts: list[HostVerdict]) -> str:
        if self.watch.stopping:
            if self.execution.timed_out:
                return RunStatus.TIMEOUT
            return RunStatus.FAILED if self.execution.halted() else RunStatus.CANCELED
        if any(s.status == ShardStatus.INTERRUPTED for s in current):
            return RunStatus.INTERRUPTED
        ran = [s.outcome for s in current if s.status == ShardStatus.DONE]
        if any(s.status == ShardStatus.FAILED for s in current) or any(o != RunStatus.SUCCESSFUL for o in ran):
            return RunStatus.FAILED
        if any(v.status in (HostStatus.FAILED, HostStatus.UNREACHABLE) for v in verdicts):
            return RunStatus.FAILED
        return RunStatus.SUCCESSFUL


def gathered_ansible_path(current: list[ShardView]) -> str:
    """The run's path from its shards': theirs when all took the same; cold with each shard's reason when all
    went cold for different ones; else 'mixed: ' and each shard's (the shards keep their own too)."""
    known = sorted((s.index, s.ansible_path) for s in current if s.ansible_path)
    paths = {path for _, path in known}
    if len(paths) <= 1:
        return paths.pop() if paths else ""
    if all(path.startswith(COLD) for path in paths):
        return COLD + "; ".join(f"shard {index}: {path[len(COLD) :]}" for index, path in known)
    return "mixed: " + "; ".join(f"shard {index} {path}" for index, path in known)


def shard_verdicts(shard: ShardView) -> list[HostVerdict]:
    """Each host of a shard with exactly one verdict: its worker's, or what the shard's end proves."""
    kept = shard.status in shards.SHARD_WITH_VERDICTS and shard.verdicts
    found = {v.name: v for v in (verdicts_from_json(shard.verdicts) if kept else [])}
    for name in shard.names:
        if name not in found:
            found[name] = HostVerdict(name=name, **_unproven(shard))
    return [found[name] for name in shard.names]


def _unproven(shard: ShardView) -> dict[str, Any]:
    if shard.status == ShardStatus.FAILED:
        return {"status": HostStatus.FAILED, "message": shard.reason}
    if shard.status == ShardStatus.INTERRUPTED:
        return {"status": HostStatus.INCOMPLETE, "message": f"interrupted: {shard.reason}"}
    return {
        "status": HostStatus.INCOMPLETE,
        "message": shard.reason or "the run stopped before this host was fully evaluated",
    }


def _interrupted_note(current: list[ShardView]) -> str:
    lost = [s for s in current if s.status == ShardStatus.INTERRUPTED]
    if not lost:
        return ""
    hosts = ", ".join(name for s in lost for name in s.names)
    return (
        f"interrupted: {lost[0].reason}; hosts {hosts} may be partly converged; check them, then converge "
        "again if they drift"
    )


def _refused_notes(current: list[ShardView]) -> list[str]:
    """What the store refused of each finished shard's results (a done shard has a reason only for that)."""
    return [f"shard {s.index}: {s.reason}" for s in current if s.status == ShardStatus.DONE and s.reason]


def verdicts_to_json(verdicts: list[HostVerdict]) -> str:
    """Verdicts as a worker stores them with its shard (sets as sorted lists)."""
    return json.dumps([{**asdict(v), "flapping": sorted(v.flapping)} for v in verdicts])


def verdicts_from_json(text: str) -> list[HostVerdict]:
    return [HostVerdict(**{**item, "flapping": set(item.get("flapping", []))}) for item in json.loads(text or "[]")]
