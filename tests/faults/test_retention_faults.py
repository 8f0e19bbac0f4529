"""Faults of volume: history that grows forever, output nobody can page through, a prune that stalls the store.

Each test drives real processes (`fleet check`, `fleet prune`, `fleet serve`)
on a real git source and SQLite store; volume is written through the store
(`records`, or bulk rows for tens of thousands of runs), the only thing a
test sets by hand is how old a run is.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta

from sqlalchemy import func, insert, select, update

from fleet import jobs
from fleet.fake_runner import FakeRunner
from fleet.runner import InventoryHost
from fleet.settings import load_settings
from fleet.store import records
from fleet.store.db import db, open_store
from fleet.store.models import AuditEntry, Run, RunHost, RunOutput, TaskResultRow
from fleet.vocabulary import utcnow
from tests.conftest import FleetCli, ServeProcess, git, wait_for
from tests.faults.conftest import HealthWatch

BIG_PRUNE = 20_000
CHUNKS = 20_000
FIVE_MB = 5 * 1024 * 1024


def settings_of(cli: FleetCli):
    return load_settings(flags={"repo": str(cli.repo), "data_dir": str(cli.data_dir)}, environ={}, cwd=cli.cwd)


def make_old(cli: FleetCli, run_ids: list[int], days: int) -> None:
    """Move these runs `days` back in time."""
    moment = utcnow() - timedelta(days=days)
    with open_store(settings_of(cli)):
        db.session.execute(update(Run).where(Run.id.in_(run_ids)).values(
            created_at=moment, started_at=moment, finished_at=moment))
        db.session.commit()


def make_export_old(cli: FleetCli, sha: str) -> None:
    """An export written more than the grace period ago (a fetch may be about to use a newer one)."""
    past = time.time() - 2 * 3600
    os.utime(cli.data_dir / "revisions" / sha, (past, past))


def viewer_token(cli: FleetCli) -> str:
    made = cli("token", "create", "reader", "--role", "viewer")
    assert made.code == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def seed_old_runs(cli: FleetCli, count: int, days: int) -> None:
    """`count` ended runs `days` old, each with a host verdict, 2 task results and 5 output chunks, in bulk."""
    moment = utcnow() - timedelta(days=days)
    with open_store(settings_of(cli)):
        ids = db.session.scalars(insert(Run).returning(Run.id), [
            {"kind": "check", "trigger": "schedule", "status": "successful", "created_at": moment,
             "started_at": moment, "finished_at": moment, "hosts_total": 1} for _ in range(count)]).all()
        db.session.execute(insert(RunHost), [{"run_id": i, "host": "web1", "status": "in_sync"} for i in ids])
        db.session.execute(insert(TaskResultRow), [
            {"run_id": i, "seq": s, "host": "web1", "task": "motd", "action": "copy", "status": "ok"}
            for i in ids for s in (1, 2)])
        db.session.execute(insert(RunOutput), [
            {"run_id": i, "seq": s, "text": f"TASK [motd {s}] ok: [web1]"} for i in ids for s in range(1, 6)])
        db.session.commit()


def count_runs(cli: FleetCli) -> int:
    with open_store(settings_of(cli)):
        return db.session.scalar(select(func.count()).select_from(Run))


# --- fleet prune on the real CLI ----------------------------------------------------------------------

def test_fleet_prune_forgets_old_runs_and_exports_and_a_pruned_export_comes_back_on_demand(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    first = cli("check", "--json")
    assert first.code == 3, first.stderr  # web1 does not answer: a real check, recorded
    old_run, old_sha = first.json()["run"]["id"], first.json()["run"]["revision"]
    (tmp_source / "README").write_text("a second commit\n")
    git(tmp_source, "add", "README")
    git(tmp_source, "commit", "-qm", "second")
    second = cli("check", "--json")
    new_run, new_sha = second.json()["run"]["id"], second.json()["run"]["revision"]
    assert old_sha != new_sha and old_run != new_run
    make_old(cli, [old_run], days=100)
    make_export_old(cli, old_sha)

    dry = cli("prune", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    report = dry.json()
    assert (report["dry_run"], report["runs"], report["kept_runs"], report["exports"]) == (True, 1, 0, 1)
    assert report["export_names"] == [old_sha] and report["export_bytes"] > 0
    assert cli("show", str(old_run)).code == 0  # a dry run removes nothing
    said = cli("prune", "--dry-run").stdout
    assert "would prune 1 run(s) older than" in said and "the audit log keeps at least 365 days" in said

    pruned = cli("prune")
    assert pruned.code == 0 and pruned.stdout.startswith("pruned 1 run(s) older than"), pruned.stdout
    gone = cli("show", str(old_run))
    assert gone.code == 1 and f"no run with id {old_run}" in gone.stderr
    assert [r["id"] for r in cli("runs", "--json").json()["runs"]] == [new_run]  # web1's last check stays
    assert not (cli.data_dir / "revisions" / old_sha).exists()
    assert (cli.data_dir / "revisions" / new_sha).is_dir()  # the desired revision's export stays
    with open_store(settings_of(cli)):
        assert db.session.scalar(select(AuditEntry.detail).where(AuditEntry.action == "store.prune")).startswith(
            "1 runs, 0 audit entries, 1 exports")

    again = cli("check", "--json", env={"FLEET_BRANCH": old_sha})  # the old revision is wanted again
    assert again.json()["run"]["revision"] == old_sha
    assert (cli.data_dir / "revisions" / old_sha / "playbooks" / "site.yml").is_file()  # written again

    refused = cli("prune", "--days", "0")
    assert refused.code == 2 and "--days" in refused.stderr


# --- the controller ----------------------------------------------------------------------------------

def test_the_controller_prunes_at_start_says_so_and_keeps_its_lead(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    seed_old_runs(cli, BIG_PRUNE, days=120)
    assert cli("check").code == 3  # web1's last check, newer than the old runs
    serve = ServeProcess(cli, poll_seconds=2)
    serve.start()
    try:
        with HealthWatch(serve, f"prune of {BIG_PRUNE} runs at controller start") as watch:
            line = wait_for(lambda: next((line for line in serve.log.read_text().splitlines()
                                          if "retention: pruned" in line), None), 180, "the start-up prune")
    finally:
        serve.stop()
    assert f"retention: pruned {BIG_PRUNE} run(s) older than" in line
    assert count_runs(cli) < 10  # web1's real check stays, and whatever the controller ran since
    assert watch.longest_silence < 5, watch.longest_silence
    # The prune renews the heartbeat and leader lock between batches: the lead never lapses (30 s lease).
    assert watch.longest_heartbeat_age is not None and watch.longest_heartbeat_age < 30, watch.longest_heartbeat_age
    print(f"\nstart-up prune: longest silence {watch.longest_silence:.2f}s, "
          f"largest heartbeat age {watch.longest_heartbeat_age}s")


def test_a_big_prune_while_serving_never_stalls_the_controller(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    serve = ServeProcess(cli, poll_seconds=2)
    serve.start()
    try:
        wait_for(lambda: "retention: nothing older than 90 days to prune" in serve.log.read_text(), 60,
                 "the controller's start-up prune")
        seed_old_runs(cli, BIG_PRUNE, days=200)
        outcome: dict = {}

        def prune() -> None:
            started = time.monotonic()
            outcome["result"] = cli("prune", "--json")
            outcome["seconds"] = time.monotonic() - started

        with HealthWatch(serve, f"prune of {BIG_PRUNE} runs from the CLI while serving") as watch:
            pruning = threading.Thread(target=prune)
            pruning.start()
            time.sleep(0.5)
            queued = cli("request", "check", "--json")  # another writer, during the prune
            pruning.join(timeout=300)
        status, runs = serve.get("/api/v1/healthz")
    finally:
        serve.stop()
    result = outcome["result"]
    assert result.code == 0, result.stderr
    # The newest of them is web1's last check (the controller's own check of web1 came first): it stays.
    assert (result.json()["runs"], result.json()["kept_runs"]) == (BIG_PRUNE - 1, 1)
    assert result.json()["output_chunks"] == 5 * (BIG_PRUNE - 1)
    assert queued.code == 0, queued.stderr
    assert watch.longest_silence < 5, watch.longest_silence
    assert watch.longest_heartbeat_age is not None and watch.longest_heartbeat_age < 30, watch.longest_heartbeat_age
    assert count_runs(cli) < 10
    print(f"\npruned {result.json()['runs']} runs in {outcome['seconds']:.1f}s; longest silence {watch.longest_silence:.2f}s, "
          f"largest heartbeat age {watch.longest_heartbeat_age}s")


# --- output of hostile size, served by a real fleet serve ------------------------------------------------

def chatty_events() -> list[dict]:
    """A run that prints 20,000 lines, one of them an event of 5 MB, then its recap."""
    events = [{"event": "playbook_on_play_start", "counter": 1, "stdout": "PLAY [all]",
               "event_data": {"play_uuid": "chatty"}}]
    events += [{"event": "verbose", "counter": n, "stdout": f"line {n:05d} of a chatty run", "event_data": {}}
               for n in range(2, CHUNKS + 1)]
    events.append({"event": "verbose", "counter": CHUNKS + 1, "stdout": "x" * FIVE_MB, "event_data": {}})
    events.append({"event": "playbook_on_stats", "counter": CHUNKS + 2, "stdout": "PLAY RECAP",
                   "event_data": {"processed": {"web1": 1}}})
    return events


def test_a_run_of_20000_chunks_and_a_5_mb_event_is_stored_capped_and_served_a_page_at_a_time(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    settings = settings_of(cli)
    runner = FakeRunner(events=chatty_events(), hosts=[InventoryHost("web1", "127.0.99.1", 22, ("web",))])
    with open_store(settings):
        run_id = jobs.execute_run(settings, "check", runner=runner).run.id
        stored = db.session.scalar(select(func.max(func.length(RunOutput.text))).where(RunOutput.run_id == run_id))
    assert stored < records.OUTPUT_CAP_BYTES + 200  # the 5 MB event went in capped
    token = viewer_token(cli)
    auth = {"Authorization": f"Bearer {token}"}
    serve = ServeProcess(cli, poll_seconds=60)
    serve.start()
    sizes, texts, answered = [], [], []
    try:
        with HealthWatch(serve, "a run of 20000 output chunks and a 5 MB event, paged") as watch:
            started = time.monotonic()
            status, first = serve.request("GET", f"/api/v1/runs/{run_id}", headers=auth)
            answered.append(time.monotonic() - started)
            sizes.append(len(json.dumps(first)))
            after = 0
            while after is not None:
                started = time.monotonic()
                code, page = serve.request("GET", f"/api/v1/runs/{run_id}/output?after={after}", headers=auth)
                answered.append(time.monotonic() - started)
                assert code == 200, page
                sizes.append(len(json.dumps(page)))
                texts += [chunk["text"] for chunk in page["output"]]
                after = page["next"]
    finally:
        serve.stop()
    assert status == 200 and first["more"] is True and first["output_next"] == first["last_seq"]
    assert max(sizes) < 600 * 1024, max(sizes)  # no answer carries the whole output
    assert len(texts) == CHUNKS + 2 and texts[0] == "PLAY [all]" and texts[-1] == "PLAY RECAP"
    capped = texts[-2]
    assert capped.startswith("x" * 1000) and capped.endswith("of output cut; the event's first 64 KiB kept]")
    assert watch.longest_silence < 5, watch.longest_silence
    print(f"\n{len(sizes)} answers, largest {max(sizes) // 1024} KiB, slowest {max(answered):.2f}s")
