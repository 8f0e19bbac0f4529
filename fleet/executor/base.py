"""What an Execution (fleet.jobs) is given: where its Ansible runs (an Executor) and who holds its work (a RunControl).

    Executor:   LocalExecutor (Ansible in this process) | ShardedExecutor (shards on `fleet worker`s, dispatch.py)
    RunControl: RunLease (the run's lease, held by this process) | shard.ShardControl (one shard's, on a worker)

An Execution records events, settles verdicts and closes the run the same way whichever it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fleet.runner import InventoryHost, choose_strategy
from fleet.settings import Settings
from fleet.store import leases, records
from fleet.vocabulary import RunStatus

if TYPE_CHECKING:
    from fleet.jobs import Execution
    from fleet.revisions import DesiredState


class Executor(Protocol):
    def execute(self, execution: Execution, desired: DesiredState, targets: list[InventoryHost]) -> str:
        """Carry out the run's Ansible on `targets`, its events going to `execution`; the run's status."""
        ...


class RunControl(Protocol):
    """Who holds an Execution's work, and how it hears of a stop."""

    def claim(self) -> bool:
        """Take the work (False: another process closed or holds it)."""
        ...

    def renew(self) -> bool:
        """Hold the work a lease longer (False: it was taken away)."""
        ...

    def lost(self) -> bool:
        """The work was taken away in a way `renew` does not see (a shard given away under its worker)."""
        ...

    def stop_asked(self) -> bool:
        """A cancel (`fleet cancel`, the API, the UI), or the run closed under a shard."""
        ...

    def deadline(self) -> float:
        """When (time.monotonic) Ansible must have finished."""
        ...

    def note_strategy(self, name: str) -> None: ...

    def note_ansible_path(self, path: str) -> None: ...

    def note_ansible_pid(self, pid: int) -> None: ...


@dataclass
class RunLease:
    """The run's own lease, held by this process (or a controller within it) while Ansible runs here or on workers."""

    run_id: int
    holder: leases.Holder
    settings: Settings

    def claim(self) -> bool:
        return leases.claim_run(self.run_id, self.holder, self.settings.lease_seconds)

    def renew(self) -> bool:
        return leases.renew_run(self.run_id, self.holder, self.settings.lease_seconds)

    def lost(self) -> bool:
        return False  # `renew` says it

    def stop_asked(self) -> bool:
        return records.cancel_requested(self.run_id)

    def deadline(self) -> float:
        return time.monotonic() + self.settings.run_timeout  # the run timeout from now

    def note_strategy(self, name: str) -> None:
        records.note_strategy(self.run_id, name)

    def note_ansible_path(self, path: str) -> None:
        """Warm (forked from a kept Ansible process) or cold and why, as fleet-ansible-playbook reported it."""
        records.note_ansible_path(self.run_id, path)

    def note_ansible_pid(self, pid: int) -> None:
        """Kept so whoever finds this run's lease lapsed can stop an orphaned ansible-playbook."""
        records.note_ansible_pid(self.run_id, pid)


class LocalExecutor:
    """Ansible runs here: probe the targets, start it for the usable ones, stream its events to the execution."""

    def execute(self, execution: Execution, desired: DesiredState, targets: list[InventoryHost]) -> str:
        execution.track(desired, targets)
        strategy = choose_strategy(execution.settings.strategy)
        execution.noted(lambda: execution.control.note_strategy(strategy.name))
        usable = [] if execution.halted() else execution.preflight(targets)
        if not usable or execution.halted():
            return RunStatus.FAILED
        outcome = execution.run_ansible(desired, targets, usable, strategy)
        if outcome.ansible_path:
            execution.noted(lambda: execution.control.note_ansible_path(outcome.ansible_path))
        return execution.status_of(outcome.status)


class ShardedExecutor:
    """The run's hosts go in shards to `fleet worker`s (FLEET_EXECUTOR=celery); this process supervises them."""

    def execute(self, execution: Execution, desired: DesiredState, targets: list[InventoryHost]) -> str:
        from fleet.executor import dispatch  # Celery is imported only where it is used

        return dispatch.run_sharded(execution, desired, targets)


def executor_for(settings: Settings) -> Executor:
    return ShardedExecutor() if settings.executor == "celery" else LocalExecutor()
