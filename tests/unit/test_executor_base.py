"""executor.base: the executor a run is given by its settings, the run's lease as a RunControl on a real SQLite
store, and an Execution that obeys whatever control it is given (no subclass overrides a hook)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from fleet.executor.base import LocalExecutor, RunLease, ShardedExecutor, executor_for
from fleet.fake_runner import FakeRunner, hosts_of, load_events
from fleet.jobs import Execution
from fleet.revisions import sync_source
from fleet.settings import Settings, replace
from fleet.store import leases, queries, records
from fleet.store.db import open_store
from fleet.vocabulary import RunStatus
from tests.conftest import settings_for_source

RECORDED = load_events(Path(__file__).parent / "fixtures" / "truth_check.json")
CASE_HOSTS = hosts_of(RECORDED, groups=("cases",))


@pytest.fixture
def settings(tmp_path):
    return settings_for_source(tmp_path, "accept_unverified:\n  - Flush the app cache\n")


@pytest.fixture
def store(settings):
    with open_store(settings):
        yield


@pytest.mark.parametrize(("executor", "kind"), [("local", LocalExecutor), ("celery", ShardedExecutor)])
def test_the_settings_choose_where_ansible_runs(executor, kind):
    assert isinstance(executor_for(Settings(repo="r", executor=executor)), kind)


def test_the_run_lease_is_claimed_renewed_and_lost_to_a_process_that_took_the_run_over(settings, store):
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    mine = RunLease(run.id, leases.Holder("box", 1, "mine"), replace(settings, lease_seconds=60))
    theirs = RunLease(run.id, leases.Holder("box", 2, "theirs"), replace(settings, lease_seconds=60))
    assert mine.claim() is True
    assert mine.renew() is True
    assert (mine.lost(), mine.stop_asked()) == (False, False)
    records.request_cancel(run.id, "canceled by otto")
    assert mine.stop_asked() is True
    assert theirs.claim() is True  # another process took the run over (its lease had lapsed, say)
    assert mine.renew() is False, "a lease taken over is not renewed by its old holder"
    records.finish_run(run.id, RunStatus.CANCELED, [], "canceled by otto")
    assert theirs.claim() is False, "a closed run is claimed by nobody"
    assert mine.deadline() == pytest.approx(time.monotonic() + settings.run_timeout, abs=5)


@dataclasses.dataclass
class ScriptedControl:
    """A control whose answers the test sets: what an Execution must obey, whoever holds the work."""

    claimed: bool = True
    taken_away: bool = False
    stop: bool = False
    notes: list[tuple[str, object]] = dataclasses.field(default_factory=list)

    def claim(self) -> bool:
        return self.claimed

    def renew(self) -> bool:
        return True

    def lost(self) -> bool:
        return self.taken_away

    def stop_asked(self) -> bool:
        return self.stop

    def deadline(self) -> float:
        return time.monotonic() + 600

    def note_strategy(self, name: str) -> None:
        self.notes.append(("strategy", name))

    def note_ansible_path(self, path: str) -> None:
        self.notes.append(("ansible_path", path))

    def note_ansible_pid(self, pid: int) -> None:
        self.notes.append(("ansible_pid", pid))


def execution_with(settings, control, runner) -> tuple[Execution, object]:
    desired = sync_source(settings, runner)
    run = records.create_run("check", "manual", desired.revision.sha, "", "test", None)
    return Execution(settings, queries.get_run(run.id), None, None, runner, control, executor=LocalExecutor()), desired


def test_an_execution_writes_its_notes_through_its_control_and_runs_to_the_end(settings, store):
    control = ScriptedControl()
    execution, desired = execution_with(settings, control, FakeRunner(events=RECORDED, hosts=CASE_HOSTS))
    status = execution.run(desired, CASE_HOSTS)
    assert status in (RunStatus.SUCCESSFUL, RunStatus.FAILED)  # the recording holds failing cases
    assert execution.events_seen == len(RECORDED)
    assert control.notes[0] == ("strategy", "mitogen_linear")  # the control writes it (the run row, or a shard's)


def test_the_first_pid_an_event_names_is_noted_through_the_control(settings, store):
    control = ScriptedControl()
    with_pid = [{**event, "pid": 4242} for event in RECORDED]
    execution, desired = execution_with(settings, control, FakeRunner(events=with_pid, hosts=CASE_HOSTS))
    execution.run(desired, CASE_HOSTS)
    assert [note for note in control.notes if note[0] == "ansible_pid"] == [("ansible_pid", 4242)]


def test_a_control_that_says_the_work_was_taken_away_stops_ansible_and_records_nothing_more(settings, store):
    control = ScriptedControl()
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=20)
    execution, desired = execution_with(settings, control, hanging)
    original = execution._on_event

    def take_away_after_twenty(event):
        original(event)
        if execution.events_seen == 20:
            control.taken_away = True

    execution._on_event = take_away_after_twenty  # type: ignore[method-assign]
    status = execution.run(desired, CASE_HOSTS)
    assert status == RunStatus.FAILED and execution.halted()
    assert execution.events_seen == 20, "nothing after the work was taken away is recorded"


def test_a_control_that_asks_a_stop_cancels_the_run(settings, store):
    control = ScriptedControl()
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=20)
    execution, desired = execution_with(settings, control, hanging)
    control.stop = True
    assert execution.run(desired, CASE_HOSTS) == RunStatus.CANCELED


def test_a_control_that_cannot_claim_the_work_leaves_the_execution_halted(settings, store):
    execution, _ = execution_with(settings, ScriptedControl(claimed=False), FakeRunner(events=RECORDED, hosts=CASE_HOSTS))
    assert execution.lease_lost and execution.halted()
