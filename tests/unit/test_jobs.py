"""jobs: exit codes and run status from verdicts, and whole runs through the fake runner (no lab hosts)."""

import dataclasses
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from fleet.drift import HostVerdict
from fleet import jobs
from fleet.errors import FleetError, HostBusy, RevisionRejected, StoreError
from fleet.fake_runner import FakeRunner, hosts_of, load_events, scripted_events
from fleet.jobs import _run_status, close_lapsed_runs, execute_run, exit_code, perform_run, resolve_targets, ssh_persist
from fleet.revisions import RevisionSummary, desired_state, sync_source
from fleet.runner import InventoryHost
from fleet.settings import Settings, replace
from fleet.store import db, leases, records
from fleet.store.db import open_store
from fleet.store.models import Host, HostLock, Revision, Run, RunHost, TaskResultRow
from fleet.store.views import RunView
from fleet.vocabulary import aware, utcnow
from tests.conftest import settings_for_source
from tests.truth_cases import CASES


def verdicts(*statuses):
    return [HostVerdict(f"host{i}", status) for i, status in enumerate(statuses)]


EXIT_CASES = {
    "no hosts": ((), 0),
    "all in sync": (("in_sync", "in_sync"), 0),
    "any drifted": (("in_sync", "drifted"), 2),
    "unreachable": (("in_sync", "unreachable"), 3),
    "failed": (("failed",), 3),
    "drifted and unreachable": (("drifted", "unreachable"), 3),
    "unreachable before drifted": (("unreachable", "drifted"), 3),
    "drifted and failed": (("failed", "drifted", "in_sync"), 3),
    "unverified without drift": (("in_sync", "unverified"), 4),
    "drift beats unverified": (("unverified", "drifted"), 2),
    "unreachable beats unverified": (("unverified", "unreachable"), 3),
    "incomplete is not proven": (("incomplete", "unverified"), 3),
}


@pytest.mark.parametrize(("statuses", "code"), EXIT_CASES.values(), ids=EXIT_CASES.keys())
def test_exit_code(statuses, code):
    assert exit_code(verdicts(*statuses)) == code


RUN_STATUS_CASES = {
    "successful run of healthy hosts": ("successful", ("in_sync", "drifted"), "successful"),
    "successful run with a failed host": ("successful", ("in_sync", "failed"), "failed"),
    "successful run with an unreachable host": ("successful", ("unreachable",), "failed"),
    "runner failure stays failed": ("failed", ("in_sync",), "failed"),
    "timeout stays timeout": ("timeout", ("unreachable",), "timeout"),
    "canceled stays canceled": ("canceled", (), "canceled"),
}


@pytest.mark.parametrize(("runner_status", "statuses", "status"), RUN_STATUS_CASES.values(),
                         ids=RUN_STATUS_CASES.keys())
def test_run_status(runner_status, statuses, status):
    assert _run_status(runner_status, verdicts(*statuses)) == status


# --- how long SSH masters outlive a run -----------------------------------------------------------

NOW = datetime(2026, 11, 27, 14, 10, 0, tzinfo=timezone.utc)


def tree_with(tmp_path: Path, fleet_yml: str | None) -> Path:
    if fleet_yml is not None:
        (tmp_path / "fleet.yml").write_text(fleet_yml)
    return tmp_path


def test_connections_last_until_five_minutes_past_the_next_scheduled_check_rounded_up_to_ten(tmp_path):
    tree = tree_with(tmp_path, "schedule: '0 * * * *'\n")
    assert ssh_persist(Settings(repo="r"), tree, NOW) == 60 * 60  # 50 min + 5, rounded up


def test_the_persist_time_stays_the_same_within_a_schedule_step(tmp_path):
    """The SSH arguments name it, and they key the kept Ansible process: checks a little late keep it."""
    tree = tree_with(tmp_path, "schedule: '*/30 * * * *'\n")
    on_time = ssh_persist(Settings(repo="r"), tree, NOW.replace(minute=0, second=5))
    late = ssh_persist(Settings(repo="r"), tree, NOW.replace(minute=3, second=40))
    assert on_time == late == 40 * 60


def test_default_schedule_when_the_source_has_no_fleet_yml(tmp_path):
    assert ssh_persist(Settings(repo="r"), tree_with(tmp_path, None), NOW) == 30 * 60  # 20 + 5, rounded up


def test_a_broken_fleet_yml_falls_back_to_the_default_schedule(tmp_path):
    tree = tree_with(tmp_path, "schedule: [not, cron\n")
    assert ssh_persist(Settings(repo="r"), tree, NOW) == 30 * 60


def test_the_setting_overrides_the_schedule(tmp_path):
    tree = tree_with(tmp_path, "schedule: '0 * * * *'\n")
    assert ssh_persist(Settings(repo="r", ssh_persist=45), tree, NOW) == 45


# --- whole runs through the fake runner, on a real SQLite store and a real git source ------------------

RECORDED = load_events(Path(__file__).parent / "fixtures" / "truth_check.json")
RECORDED_RESULTS = sum(1 for e in RECORDED if e["event"].startswith("runner_on_"))  # task results, at least
CASE_HOSTS = hosts_of(RECORDED, groups=("cases",))
# The recording's "accepted" case needs its policy: one task known not to be checkable.
FLEET_YML = "accept_unverified:\n  - Flush the app cache\n"


@pytest.fixture
def settings(tmp_path):
    """Settings for a real local git source holding the example playbooks and the truth cases' policy."""
    return settings_for_source(tmp_path, FLEET_YML)


@pytest.fixture
def store(settings):
    """An empty SQLite store in the data directory, open for the test (no web app)."""
    with open_store(settings):
        yield


@pytest.fixture
def fake():
    return FakeRunner(events=RECORDED, hosts=CASE_HOSTS)


def rows(model, **where):
    return db.session.scalars(select(model).filter_by(**where)).all()


def start_run(settings, fake, limit=None):
    """What the controller does: a desired state, the targets, a run row; the caller performs it."""
    desired = sync_source(settings, runner=fake)
    targets = resolve_targets(settings, desired, limit, runner=fake)
    return desired, targets, records.create_run("check", "manual", desired.revision.sha, limit or "", "test", 1)


def assert_nothing_left_running():
    assert rows(HostLock) == []
    assert rows(Run, status="running") == []


def test_a_recorded_check_lands_in_the_store_with_each_case_verdict(settings, store, fake):
    report = execute_run(settings, "check", runner=fake)
    assert report.run.status == "successful"
    assert {v.name: v.status for v in report.verdicts} == {c.host: c.status for c in CASES}
    [run] = rows(Run)
    assert (run.id, run.status, run.hosts_total, run.error) == (report.run.id, "successful", len(CASES), "")
    assert {r.host: r.status for r in rows(RunHost, run_id=run.id)} == {c.host: c.status for c in CASES}
    assert len(rows(TaskResultRow, run_id=run.id)) == sum(len(tasks) for tasks in report.tasks_by_host.values())
    assert {h.name: (h.status, h.last_check_run_id) for h in rows(Host)} == {
        c.host: (c.status, run.id) for c in CASES}
    assert_nothing_left_running()


def test_recorded_drift_is_named_with_its_diff_and_masked_vault_values(settings, store, fake):
    report = execute_run(settings, "check", runner=fake)
    [vault] = [t for t in rows(TaskResultRow, host="vault") if t.status == "changed"]
    assert vault.task == "Write the database credentials" and vault.cause == "new"
    assert "password=********" in vault.diff
    assert [t.task for t in report.tasks_by_host["vault"] if t.drift] == [vault.task]


def test_what_a_run_hands_back_is_plain_data_not_store_rows(settings, store, fake):
    report = execute_run(settings, "check", runner=fake)
    desired = desired_state(settings, runner=fake)
    assert isinstance(report.run, RunView) and isinstance(desired.revision, RevisionSummary)
    assert desired.hosts == tuple(CASE_HOSTS) and not desired.revision.rewrites_history
    assert report.run.finished_at.tzinfo is not None  # SQLite hands back naive times; fleet writes UTC
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.run.status = "failed"


def test_the_inventory_is_listed_once_per_revision_and_limit(settings, store, fake):
    execute_run(settings, "check", runner=fake)
    execute_run(settings, "check", runner=fake)
    execute_run(settings, "check", limit="deleg_*", runner=fake)
    report = execute_run(settings, "check", limit="deleg_*", runner=fake)
    assert fake.listings == [None, "deleg_*"]
    assert {v.name: v.status for v in report.verdicts} == {"deleg_a": "in_sync", "deleg_b": "drifted"}
    assert fake.job_hosts[-1] == {"deleg_a", "deleg_b"}


def test_canceled_mid_stream_keeps_partial_results_and_proves_no_host_in_sync(settings, store, fake):
    desired, targets, run = start_run(settings, fake)
    seen = []

    def cancel_after_twenty_events(tracker, event):
        seen.append(event)
        if len(seen) == 20:
            records.request_cancel(run.id, "canceled by ada")

    report = perform_run(settings, run, desired, targets, progress=cancel_after_twenty_events,
                         should_cancel=lambda: records.cancel_requested(run.id), runner=fake)
    assert (report.run.status, report.run.error) == ("canceled", "canceled by ada")
    assert len(seen) == 20
    assert "in_sync" not in {v.status for v in report.verdicts} and "incomplete" in {v.status for v in report.verdicts}
    assert 0 < len(rows(TaskResultRow, run_id=run.id)) < RECORDED_RESULTS
    assert {h.status for h in rows(Host)} == {"unknown"}  # a stopped run changes no host's standing
    assert_nothing_left_running()


def test_a_run_that_hangs_is_stopped_at_the_run_timeout(settings, store):
    settings = replace(settings, run_timeout=1)
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=10)
    started = time.monotonic()
    report = execute_run(settings, "check", runner=hanging)
    assert time.monotonic() - started < 10
    assert (report.run.status, report.run.error) == ("timeout", "stopped after the run timeout of 1s")
    assert "in_sync" not in {r.status for r in rows(RunHost, run_id=report.run.id)}
    assert_nothing_left_running()


def test_a_stop_keeps_the_locks_of_hosts_whose_remote_work_it_could_not_confirm_ended(settings, store):
    settings = replace(settings, run_timeout=1)
    touched = sorted({e["event_data"]["host"] for e in RECORDED[:10] if e.get("event") == "runner_on_ok"})
    unsure, sure = touched[0], touched[1]
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=10, unconfirmed={unsure: "gone (fake)"})
    report = execute_run(settings, "check", runner=hanging)
    assert report.run.status == "timeout"
    assert hanging.remote_stops == [(frozenset(h.name for h in CASE_HOSTS), frozenset(touched))]
    assert [(lock.host, lock.run_id, lock.kept_reason) for lock in rows(HostLock)] == [
        (unsure, report.run.id, "remote work may still run: gone (fake)")]
    host = db.session.get(Host, rows(Host, name=unsure)[0].id)
    assert (host.status, host.message) == ("incomplete", "remote work may still run: gone (fake)")
    assert rows(Host, name=sure)[0].status != "incomplete" or "remote work" not in rows(Host, name=sure)[0].message

    still = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, unconfirmed={unsure: "gone (fake)"})
    with pytest.raises(HostBusy, match=f"{unsure} is held by stopped run {report.run.id}: remote work may still "
                                       f"run: gone \\(fake\\); .*`fleet hosts release {unsure}`"):
        execute_run(settings, "check", limit=unsure, runner=still)
    assert still.jobs == [] and still.remote_stops == [(frozenset({unsure}), frozenset({unsure}))]

    confirmed = FakeRunner(events=RECORDED, hosts=CASE_HOSTS)  # the next attempt confirms the end: the lock goes
    later = execute_run(settings, "check", limit=unsure, runner=confirmed)
    assert later.run.status in ("successful", "failed") and confirmed.jobs
    assert rows(HostLock) == []


def test_ctrl_c_stops_the_runs_remote_work_too(settings, store):
    touched = {e["event_data"]["host"] for e in RECORDED[:10] if e.get("event") == "runner_on_ok"}
    unsure = sorted(touched)[0]
    interrupted = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, crash_after=10, crash=KeyboardInterrupt(),
                             unconfirmed={unsure: "gone (fake)", "never-touched": "not asked"})
    with pytest.raises(KeyboardInterrupt):
        execute_run(settings, "check", runner=interrupted)
    [run] = rows(Run)
    assert (run.status, run.error) == ("canceled", "canceled from the terminal")
    assert [stop[1] for stop in interrupted.remote_stops] == [frozenset(touched)]
    assert [(lock.host, lock.kept_reason) for lock in rows(HostLock)] == [(unsure, "remote work may still run: gone "
                                                                                   "(fake)")]


def test_a_crash_inside_the_runner_fails_the_run_with_the_reason(settings, store):
    crashing = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, crash_after=15)
    with pytest.raises(RuntimeError, match="the fake runner crashed"):
        execute_run(settings, "check", runner=crashing)
    [run] = rows(Run)
    assert run.status == "failed"
    assert run.error == "fleet could not finish the run: the fake runner crashed"
    assert run.finished_at is not None and len(rows(TaskResultRow, run_id=run.id)) > 0
    assert "in_sync" not in {r.status for r in rows(RunHost, run_id=run.id)}
    assert_nothing_left_running()


def test_a_host_held_by_another_run_fails_the_run_before_ansible_starts(settings, store, fake):
    desired, targets, run = start_run(settings, fake)
    other = records.create_run("converge", "manual", desired.revision.sha, "raw", "ada", 2)
    assert records.acquire_host_locks(other.id, ["raw"]) == []
    with pytest.raises(HostBusy, match=f"raw is busy with run {other.id}; wait for it"):
        perform_run(settings, run, desired, targets, runner=fake)
    failed = db.session.get(Run, run.id)
    assert (failed.status, failed.error) == ("failed", f"raw is busy with run {other.id}")
    assert fake.jobs == []
    assert [(lock.host, lock.run_id) for lock in rows(HostLock)] == [("raw", other.id)]


def test_an_unreachable_host_is_left_out_of_the_ansible_run(settings, store):
    fake = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, unreachable=frozenset({"raw"}))
    report = execute_run(settings, "check", runner=fake)
    verdicts = {v.name: v for v in report.verdicts}
    assert verdicts["raw"].status == "unreachable" and "cannot connect" in verdicts["raw"].message
    assert report.run.status == "failed"  # the run reached its end, but a host could not be checked
    assert fake.job_hosts == [frozenset(h.name for h in CASE_HOSTS) - {"raw"}]
    assert verdicts["control"].status == "in_sync"


def test_no_reachable_host_means_no_ansible_run(settings, store):
    fake = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, unreachable=frozenset(h.name for h in CASE_HOSTS))
    report = execute_run(settings, "check", runner=fake)
    assert report.run.status == "failed" and fake.jobs == []
    assert {v.status for v in report.verdicts} == {"unreachable"}


@pytest.mark.parametrize(("fake", "reason"), [
    pytest.param(FakeRunner(hosts=CASE_HOSTS, syntax_error="mapping values are not allowed here"),
                 "playbook syntax check failed: mapping values", id="syntax error"),
    pytest.param(FakeRunner(hosts=CASE_HOSTS, inventory_error="hosts.yml, line 3"),
                 "inventory does not parse: hosts.yml, line 3", id="inventory that does not parse"),
])
def test_a_revision_ansible_refuses_is_rejected_and_nothing_runs(settings, store, fake, reason):
    with pytest.raises(RevisionRejected, match=reason):
        execute_run(settings, "check", runner=fake)
    assert [r.status for r in rows(Revision)] == ["rejected"]
    assert rows(Run) == [] and fake.jobs == []


def test_a_limit_no_host_matches_is_an_error_before_any_run(settings, store, fake):
    with pytest.raises(FleetError, match="no inventory host matches --limit 'nothing'"):
        execute_run(settings, "check", limit="nothing", runner=fake)
    assert rows(Run) == []


# --- validation: paths through git's export, inventory and syntax through the runner, fleet.yml ----------

# --- scripted streams: each run its own events ------------------------------------------------------------

WEB = [InventoryHost("web1", "127.0.99.1", 22, ("web",)), InventoryHost("web2", "127.0.99.2", 22, ("web",))]

SCRIPTED_CASES = {
    "check finds drift": ("check", {"web1": "changed", "web2": "ok"}, {"web1": "drifted", "web2": "in_sync"}),
    "converge applies changes":
        ("converge", {"web1": "changed", "web2": "ok"}, {"web1": "in_sync", "web2": "in_sync"}),
    "a failed task fails the host":
        ("converge", {"web1": "failed", "web2": "ok"}, {"web1": "failed", "web2": "in_sync"}),
    "unreachable mid-run":
        ("check", {"web1": "unreachable", "web2": "ok"}, {"web1": "unreachable", "web2": "in_sync"}),
}


@pytest.mark.parametrize(("kind", "outcomes", "verdicts"), SCRIPTED_CASES.values(), ids=SCRIPTED_CASES.keys())
def test_scripted_runs_give_the_verdicts_they_script(settings, store, kind, outcomes, verdicts):
    report = execute_run(settings, kind, runner=FakeRunner(events=scripted_events(outcomes), hosts=WEB))
    assert {v.name: v.status for v in report.verdicts} == verdicts
    assert report.run.status == ("successful" if set(verdicts.values()) <= {"in_sync", "drifted"} else "failed")


def test_each_run_can_replay_its_own_stream(settings, store):
    streams = iter([scripted_events({"web1": "changed"}), scripted_events({"web1": "changed"}),
                    scripted_events({"web1": "ok"})])
    fake = FakeRunner(events=lambda spec: next(streams), hosts=WEB)
    reports = [execute_run(settings, kind, limit="web1", runner=fake) for kind in ("check", "converge", "check")]
    assert [(r.run.kind, r.verdicts[0].status) for r in reports] == [
        ("check", "drifted"), ("converge", "in_sync"), ("check", "in_sync")]
    host = db.session.scalar(select(Host).where(Host.name == "web1"))
    assert (host.status, host.last_converge_sha) == ("in_sync", reports[1].run.revision_sha)


# --- faults: the store refuses a write, the lease is lost, a cancel from another process (issue 11) -------

def refuse_inserts(table: str) -> None:
    """A real SQLite trigger: every insert into `table` is refused from now on, as a broken store would."""
    db.session.execute(text(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                            "BEGIN SELECT RAISE(ABORT, 'injected'); END"))
    db.session.commit()


def host_statuses() -> dict[str, str]:
    return {h.name: h.status for h in rows(Host)}


@pytest.fixture
def checked_once(settings, store, fake):
    """A first check recorded normally: the hosts' standing a failed run must not change."""
    execute_run(settings, "check", runner=fake)
    before = host_statuses()
    assert set(before.values()) - {"unknown"}, "the first check gave the hosts a status"
    return before


@pytest.mark.sqlite_only
def test_a_refused_batch_write_stops_ansible_and_fails_the_run_without_verdicts(
        settings, store, checked_once, monkeypatch):
    monkeypatch.setattr(records, "BATCH_ROWS", 1)  # every event is its own batch: the refusal comes early
    refuse_inserts("task_results")
    fake = FakeRunner(events=RECORDED, hosts=CASE_HOSTS)
    recorded = []
    with pytest.raises(StoreError, match="the store refused a write: injected; results recorded before it are kept"):
        execute_run(settings, "check", runner=fake, progress=lambda tracker, event: recorded.append(event))
    assert len(recorded) < len(RECORDED) / 2, "Ansible was stopped, not left to run to its end"
    failed = rows(Run)[-1]
    assert failed.status == "failed"
    assert failed.error == "the store refused a write: injected; results recorded before it are kept"
    assert rows(RunHost, run_id=failed.id) == [], "no verdict from a run whose recording failed"
    assert host_statuses() == checked_once
    assert_nothing_left_running()


@pytest.mark.sqlite_only
def test_verdicts_the_store_refuses_are_written_not_at_all(settings, store, checked_once, fake):
    refuse_inserts("run_hosts")
    with pytest.raises(StoreError, match="no host's status was changed"):
        execute_run(settings, "check", runner=fake)
    failed = rows(Run)[-1]
    assert (failed.status, failed.hosts_total) == ("failed", 0)
    assert failed.error.startswith("the store refused a write: injected")
    assert len(rows(TaskResultRow, run_id=failed.id)) >= RECORDED_RESULTS, "the task results are kept"
    assert host_statuses() == checked_once
    assert_nothing_left_running()


@pytest.mark.sqlite_only
def test_a_store_that_refuses_even_the_close_leaves_the_run_to_its_lease(settings, store, fake, monkeypatch):
    monkeypatch.setattr(jobs, "CLOSE_RETRY_DELAYS", (0, 0, 0))
    refuse_inserts("run_hosts")
    db.session.execute(text("CREATE TRIGGER refuse_close BEFORE UPDATE OF status ON runs "
                            "BEGIN SELECT RAISE(ABORT, 'still injected'); END"))
    db.session.commit()
    with pytest.raises(StoreError, match=r"could not be closed: .*closing it was refused too \(still injected\)"):
        execute_run(settings, "check", runner=fake)
    [run] = rows(Run)
    assert run.status == "running" and rows(HostLock) == [], "the hosts are freed all the same"
    db.session.execute(text("DROP TRIGGER refuse_close"))
    db.session.commit()
    lapsed = leases.close_lapsed_runs(lambda holder: False, now=utcnow() + timedelta(seconds=31))
    assert [(c.run.id, c.run.status) for c in lapsed] == [(run.id, "interrupted")]


def test_a_cancel_in_the_store_stops_a_run_nobody_passed_a_cancel_check(settings, store):
    """`fleet cancel` and the API only set the store's flag: the process running the run must read it."""
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=30)
    seen = []

    def cancel_from_elsewhere(tracker, event):
        seen.append(event)
        if len(seen) == 20:
            records.request_cancel(seen_run_id(), "canceled by otto")

    report = execute_run(settings, "check", runner=hanging, progress=cancel_from_elsewhere)
    assert (report.run.status, report.run.error) == ("canceled", "canceled by otto")
    assert_nothing_left_running()


def seen_run_id() -> int:
    return rows(Run, status="running")[0].id


def test_a_run_closed_by_another_process_stops_and_records_nothing_more(settings, store):
    settings = replace(settings, lease_seconds=1)  # renewed every third of a second
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=30)

    def lapse_after_twenty(tracker, event, seen=[]):  # noqa: B006  one list per test run is the point
        seen.append(event)
        if len(seen) == 20:  # another process found the lease lapsed (this one was frozen, say)
            leases.close_lapsed_runs(lambda holder: False, now=utcnow() + timedelta(minutes=1))

    with pytest.raises(FleetError, match="was marked interrupted by another fleet process"):
        execute_run(settings, "check", runner=hanging, progress=lapse_after_twenty)
    [run] = rows(Run)
    assert run.status == "interrupted" and rows(RunHost, run_id=run.id) == []
    assert {h.status for h in rows(Host)} == {"unknown"}
    assert_nothing_left_running()


def test_the_lease_is_renewed_while_ansible_is_silent(settings, store):
    settings = replace(settings, lease_seconds=1, run_timeout=2)
    hanging = FakeRunner(events=RECORDED, hosts=CASE_HOSTS, hang_after=10)
    report = execute_run(settings, "check", runner=hanging)
    run = db.session.get(Run, report.run.id)
    assert report.run.status == "timeout"
    # Without renewals the lease would end a second after the start; the hang alone lasted two.
    assert aware(run.lease_expires_at) - aware(run.started_at) > timedelta(seconds=2)


def test_a_lapsed_run_on_this_machine_has_its_orphaned_ansible_stopped(settings, store):
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "ansible-playbook"],
                              start_new_session=True)
    try:
        dead_fleet = records.create_run("check", "manual", None, "", "test", pid=2 ** 22 + 1)  # above pid_max
        records.note_ansible_pid(dead_fleet.id, orphan.pid)
        closed = close_lapsed_runs(settings)
        assert [r.id for r in closed] == [dead_fleet.id]
        assert orphan.wait(timeout=10) == -signal.SIGKILL
    finally:
        orphan.kill()
        orphan.wait()


# --- dynamic inventories and requirements (issue 12) ------------------------------------------------------

@pytest.fixture
def dynamic_settings(settings):
    """The source's inventory directory also holds an executable script: a dynamic inventory."""
    repo = Path(settings.repo)
    script = repo / "inventory" / "cloud.sh"
    script.write_text("#!/bin/sh\necho '{}'\n")
    script.chmod(0o755)
    subprocess.run(["git", "-C", str(repo), "add", "inventory/cloud.sh"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
                    "dynamic"], check=True)
    return settings


def host_rows_in_inventory() -> set[str]:
    db.session.expire_all()
    return {h.name for h in rows(Host) if h.in_inventory}


def test_a_dynamic_inventory_is_listed_again_by_every_run_and_once_within_it(dynamic_settings, store):
    streams = iter([scripted_events({"web1": "ok"}), scripted_events({"web1": "ok", "web2": "changed"})])
    fake = FakeRunner(events=lambda spec: next(streams), hosts=[WEB[0]])
    execute_run(dynamic_settings, "check", runner=fake)
    fake.hosts = WEB  # the script now answers with a second host, no commit in between
    report = execute_run(dynamic_settings, "check", limit="web*", runner=fake)
    # One listing per run (validation, sync and targets share it), and a limit its own.
    assert fake.listings == [None, None, "web*"]
    assert fake.job_hosts[-1] == {"web1", "web2"}
    assert host_rows_in_inventory() == {"web1", "web2"}
    assert {v.name: v.status for v in report.verdicts} == {"web1": "in_sync", "web2": "drifted"}


def test_the_controllers_runs_list_a_dynamic_inventory_afresh_and_sync_its_hosts(dynamic_settings, store):
    fake = FakeRunner(hosts=[WEB[0]])
    sync_source(dynamic_settings, runner=fake)
    assert host_rows_in_inventory() == {"web1"}
    fake.hosts = [WEB[1]]
    assert [h.name for h in desired_state(dynamic_settings, runner=fake).hosts] == ["web2"]
    assert host_rows_in_inventory() == {"web2"}  # web1 left the inventory; its history stays
    assert {h.name for h in rows(Host)} == {"web1", "web2"}


def test_a_static_inventory_stays_cached_across_the_controllers_runs(settings, store):
    fake = FakeRunner(hosts=[WEB[0]])
    sync_source(settings, runner=fake)
    fake.hosts = WEB
    assert [h.name for h in desired_state(settings, runner=fake).hosts] == ["web1"]
    assert fake.listings == [None]


def test_requirements_that_cannot_be_installed_reject_the_revision_and_the_last_good_stays(settings, store):
    good = sync_source(settings, runner=FakeRunner(hosts=WEB)).revision.sha
    repo = Path(settings.repo)
    (repo / "requirements.yml").write_text("collections:\n  - name: community.nonexistent\n")
    subprocess.run(["git", "-C", str(repo), "add", "requirements.yml"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
                    "requires"], check=True)
    failing = FakeRunner(hosts=WEB, requirements_error="requirements.yml: ansible-galaxy could not install "
                                                       "the collections community.nonexistent")
    with pytest.raises(RevisionRejected, match=f"community.nonexistent.*stays {good[:12]}"):
        execute_run(settings, "check", runner=failing)
    assert {r.sha: r.status for r in rows(Revision)}[good] == "valid"
    assert [r.error for r in rows(Revision, status="rejected")][0].startswith("requirements.yml: ")
    assert desired_state(settings, runner=FakeRunner(hosts=WEB)).revision.sha == good
    assert failing.jobs == [] and rows(Run) == []
