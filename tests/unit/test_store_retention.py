"""Retention: `retention:` in fleet.yml, and pruning a real SQLite store filled through `records`.

Runs are recorded as real runs are (create_run, RunRecorder, finish_run);
only their age is set afterwards, by moving their times back.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, update

from fleet import policy, revisions
from fleet.drift import HostVerdict, TaskResult
from fleet.fake_runner import FakeRunner, scripted_events
from fleet.runner import InventoryHost
from fleet.store import accounts, queries, records, retention
from fleet.store.db import db, open_store
from fleet.store.models import Approval, AuditEntry, Run, RunHost, RunOutput, TaskResultRow
from fleet.vocabulary import utcnow
from tests.conftest import git, settings_for_source

OLD, RECENT = 1100, 100
HOSTS = ["web1", "web2", "web3"]


# --- fleet.yml --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    pytest.param(None, policy.Retention(90, 1), id="no fleet.yml: 90 days, each host's last run"),
    pytest.param("retention:\n  days: 30\n", policy.Retention(30, 1), id="days only"),
    pytest.param("retention:\n  days: 7\n  keep_per_host: 3\n", policy.Retention(7, 3), id="days and runs per host"),
    pytest.param("retention:\n", policy.Retention(90, 1), id="an empty retention is the default"),
])
def test_retention_in_fleet_yml(text, expected):
    assert policy.parse_policy(text).retention == expected


@pytest.mark.parametrize("text,message", [
    pytest.param("retention:\n  days: 0\n", "fleet.yml line 2: retention.days must be a whole number 1 or more, got 0",
                 id="zero days"),
    pytest.param("retention:\n  days: 90d\n", "retention.days must be a whole number 1 or more, got '90d'",
                 id="a duration instead of a number"),
    pytest.param("retention:\n  keep: 2\n", "retention.keep is not a known key; use one of days, keep_per_host",
                 id="unknown key"),
    pytest.param("retention: 90\n", "retention must be a mapping with the keys days, keep_per_host", id="a number"),
])
def test_a_wrong_retention_names_what_to_fix(text, message):
    with pytest.raises(policy.PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        policy.parse_policy(text)


# --- a store of thousands of runs ----------------------------------------------------------------

@pytest.fixture
def settings(tmp_path):
    return settings_for_source(tmp_path, "retention:\n  days: 90\n")


@pytest.fixture
def store(settings):
    with open_store(settings):
        yield db.session


def record(kind: str, hosts: list[str], status: str = "successful", verdict: str = "in_sync") -> int:
    """One run written as a real one is: output, task results, verdicts, host state."""
    run = records.create_run(kind, "schedule", "a" * 40, "", "test", None)
    recorder = records.RunRecorder(run.id)
    for seq, host in enumerate(hosts, start=1):
        recorder.add_output(seq, f"TASK [motd] ok: [{host}]")
        recorder.add_task(TaskResult(seq=seq, host=host, task="motd", action="copy", status="ok", diff="+x\n"))
    recorder.flush()
    if status != "running":
        records.finish_run(run.id, status, [HostVerdict(host, verdict) for host in hosts])
    return run.id


def age(run_ids: list[int], days: int) -> None:
    """Move these runs `days` back in time (the only thing a test cannot wait for)."""
    moment = utcnow() - timedelta(days=days)
    db.session.execute(update(Run).where(Run.id.in_(run_ids)).values(created_at=moment, started_at=moment,
                                                                       finished_at=moment))
    db.session.commit()


@pytest.fixture
def history(store):
    """1100 runs 200 days old and 100 recent ones over three hosts; web3 was last seen in the old ones.

    Returns the ids retention must keep among the old runs, with why.
    """
    ids = [record("check" if n % 2 else "converge", HOSTS if n < 40 else HOSTS[:2]) for n in range(OLD)]
    ids += [record("check" if n % 2 else "converge", HOSTS[:2]) for n in range(RECENT)]
    running = record("converge", ["web1"], status="running")
    approved = ids[100]
    records.open_approval("web1", approved, "a" * 40, "sig", "motd")
    age(ids[:OLD] + [running], 200)
    web3_check = max(i for n, i in enumerate(ids[:40]) if n % 2)
    web3_converge = max(i for n, i in enumerate(ids[:40]) if not n % 2)
    return {"running": running, "open approval": approved, "web3's last check": web3_check,
            "web3's last converge": web3_converge}, ids


def counted(statement_start: str):
    """The rowcounts of every statement starting with `statement_start` while the block runs."""
    found: list[int] = []

    def listen(_conn, cursor, statement, *_args):
        if statement.startswith(statement_start):
            found.append(cursor.rowcount)

    return found, listen


def test_prune_keeps_each_hosts_last_runs_active_runs_and_open_approvals_and_removes_the_rest(settings, history):
    kept, ids = history
    old, recent = ids[:OLD], ids[OLD:]
    now = utcnow()
    dry = retention.prune(settings, policy.Retention(days=90), now, dry_run=True)
    assert db.session.scalar(select(func.count()).select_from(Run)) == OLD + RECENT + 1  # a dry run removes nothing
    protected = set(kept.values()) - {kept["running"]}  # a running run is never even a candidate
    assert (dry.runs, dry.kept_runs) == (OLD - len(protected), len(protected))

    deletes, listen = counted("DELETE FROM runs")
    engine = db.engine
    event.listen(engine, "after_cursor_execute", listen)
    try:
        report = retention.prune(settings, policy.Retention(days=90), now)
    finally:
        event.remove(engine, "after_cursor_execute", listen)

    assert dataclasses.replace(report, dry_run=True, export_names=dry.export_names) == dry  # it did what it said
    left = set(db.session.scalars(select(Run.id)))
    assert left == set(recent) | set(kept.values()), "exactly the recent runs and the kept ones stay"
    for model in (RunHost, TaskResultRow, RunOutput):  # the rows of pruned runs went with them
        assert set(db.session.scalars(select(model.run_id).distinct())) <= left
    assert report.task_results == report.output_chunks == sum(3 if i < ids[40] else 2 for i in old
                                                               if i not in protected)
    assert report.run_bytes > 0
    assert len(deletes) == 3 and max(deletes) <= retention.PRUNE_BATCH  # 500 runs per transaction at most
    assert queries.get_host("web3").last_check_run_id == kept["web3's last check"]
    again = retention.prune(settings, policy.Retention(days=90), utcnow())
    assert again.runs == 0  # nothing left to prune


def test_keep_per_host_keeps_that_many_of_each_kind(settings, store):
    ids = [record("check" if n % 2 else "converge", ["web1"]) for n in range(20)]
    age(ids, 200)
    retention.prune(settings, policy.Retention(days=90, keep_per_host=3), utcnow())
    assert sorted(db.session.scalars(select(Run.id))) == ids[-6:]


def test_audit_entries_stay_at_least_a_year(settings, store):
    for days in (400, 100, 1):
        accounts.audit("otto", "run.request", f"{days} days ago")
        db.session.execute(update(AuditEntry).where(AuditEntry.target == f"{days} days ago")
                           .values(at=utcnow() - timedelta(days=days)))
    db.session.commit()
    report = retention.prune(settings, policy.Retention(days=30), utcnow(), actor="cli:otto")
    assert report.audit_entries == 1
    assert sorted(db.session.scalars(select(AuditEntry.target).where(AuditEntry.action == "run.request"))) == [
        "1 days ago", "100 days ago"]
    pruned = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "store.prune"))
    assert (pruned.actor, pruned.detail) == ("cli:otto", "0 runs, 1 audit entries, 0 exports")  # a prune is audited
    assert "the audit log keeps at least 365 days" in report.describe()


# --- revision exports ---------------------------------------------------------------------------------

def test_exports_are_pruned_unless_desired_or_in_use_and_are_written_again_on_demand(settings, store):
    runner = FakeRunner(events=scripted_events({"web1": "ok"}), hosts=[InventoryHost("web1", "127.0.99.1", 22, ())])
    first = revisions.sync_source(settings, runner).revision.sha
    source = Path(settings.repo)
    (source / "README").write_text("second\n")
    git(source, "add", "README")
    git(source, "commit", "-qm", "second")
    second = revisions.sync_source(settings, runner).revision.sha
    export = settings.data_dir / "revisions"
    assert {p.name for p in export.iterdir()} == {first, second}
    later = utcnow() + timedelta(hours=2)  # past the grace an export just written gets

    report = retention.prune(settings, policy.Retention(), later, dry_run=True)
    assert (report.exports, report.export_names) == (1, [first]) and report.export_bytes > 0
    assert (export / first).is_dir()  # a dry run removes nothing

    in_use = records.create_run("check", "manual", first, "", "cli:test", os.getpid())  # a CLI run at the old sha
    assert retention.prune(settings, policy.Retention(), later).exports == 0
    records.finish_run(in_use.id, "successful", [])
    assert retention.prune(settings, policy.Retention(), later).exports == 1
    assert {p.name for p in export.iterdir()} == {second}  # the desired revision's export stays

    pinned = dataclasses.replace(settings, branch=first)  # the old revision is wanted again
    assert revisions.sync_source(pinned, runner).tree == export / first
    assert (export / first / "playbooks" / "site.yml").is_file()  # written again from the mirror


def test_leftover_run_directories_go_but_an_active_runs_stays(settings, store):
    active = record("check", ["web1"], status="running")
    ended = record("check", ["web1"])
    for run_id in (active, ended):
        (settings.data_dir / "runs" / str(run_id)).mkdir(parents=True)
    report = retention.prune(settings, policy.Retention(), utcnow() + timedelta(hours=2))
    assert report.run_dirs == 1
    assert [p.name for p in (settings.data_dir / "runs").iterdir()] == [str(active)]


# --- the controller's cadence, and a prune told to stop --------------------------------------------

def test_the_controller_prunes_at_start_then_once_a_day(settings, store):
    from fleet.controller import Controller

    controller = Controller(settings, runner=FakeRunner())
    assert controller.lead()  # the controller prunes only while it leads (its tick leads first)
    now = utcnow()
    first = record("check", ["web1"])
    age([first, record("check", ["web1"])], 200)  # the older of two old checks of web1 may go
    controller.prune_if_due(now)
    assert list(db.session.scalars(select(Run.id))) == [first + 1]
    record("check", ["web1"])  # a newer check of web1: the kept old one may go now
    controller.prune_if_due(now + timedelta(hours=23))
    assert db.session.scalar(select(func.count()).select_from(Run)) == 2  # not again the same day
    controller.prune_if_due(now + timedelta(days=1))
    assert db.session.scalar(select(func.count()).select_from(Run)) == 1


def test_a_prune_told_to_stop_stops_after_the_batch_at_hand(settings, store):
    ids = [record("check", ["web1"]) for _ in range(30)]
    age(ids, 200)
    report = retention.prune(settings, policy.Retention(), utcnow(), batch=10, go_on=lambda: False)
    assert (report.runs, report.stopped_early) == (10, True)
    assert "stopped early; the rest is pruned next time" in report.describe()
    assert db.session.scalar(select(func.count()).select_from(Run)) == 20


def test_the_converge_that_last_brought_a_host_in_sync_stays_after_failed_ones(settings, store):
    converged = record("converge", ["web1"])
    failed = [record("converge", ["web1"], status="failed", verdict="failed") for _ in range(3)]
    age([converged, *failed], 200)
    retention.prune(settings, policy.Retention(), utcnow())
    assert sorted(db.session.scalars(select(Run.id))) == [converged, failed[-1]]
