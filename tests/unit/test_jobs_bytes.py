"""Whole runs (fake runner, real store) whose Ansible text is not UTF-8, or that the store partly refuses:
the run ends with its real status, every result recorded, the hosts their verdicts."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from fleet.fake_runner import FakeRunner, scripted_events
from fleet.jobs import DROPPED_RESULT, execute_run, skipped_diff
from fleet.runner import InventoryHost
from fleet.store import db, queries
from fleet.store.db import open_store
from fleet.store.models import Host, TaskResultRow
from fleet.text import NOT_UTF8_MARK
from tests.conftest import settings_for_source

HOSTS = [InventoryHost("web1", "127.0.99.1", 22, ("web",)), InventoryHost("db1", "127.0.99.2", 22, ("db",))]
LATIN1 = b"caf\xe9=1\n".decode("utf-8", errors="surrogateescape")  # a Latin-1 file, as Ansible reads it


@pytest.fixture
def settings(tmp_path):
    return settings_for_source(tmp_path, "")


@pytest.fixture
def store(settings):
    with open_store(settings):
        yield


def legacy_events() -> list[dict]:
    """web1 changes a Latin-1 file; db1 fails with a message holding a Latin-1 byte and a NUL."""
    events = scripted_events({"web1": "changed", "db1": "failed"}, task="legacy config")
    for event in events:
        data = event.get("event_data") or {}
        if data.get("host") == "web1":
            data["res"]["diff"] = [{"before": "", "after": LATIN1, "after_header": "/etc/legacy.conf"}]
            event["stdout"] = f"--- before\n+++ after\n+{LATIN1}changed: [web1]\n"
        elif data.get("host") == "db1":
            data["res"]["msg"] = "cannot read /etc/l\udce9gacy\x00"
    return events


def stored(host: str) -> TaskResultRow:
    return db.session.scalar(select(TaskResultRow).where(TaskResultRow.host == host))


def test_a_converge_of_latin1_files_records_every_result_escaped_and_ends_as_it_really_ended(settings, store):
    report = execute_run(settings, "converge", runner=FakeRunner(events=legacy_events(), hosts=HOSTS))
    assert report.run.status == "failed", "db1 failed for real; nothing about the bytes fails the run"
    assert {v.name: v.status for v in report.verdicts} == {"web1": "in_sync", "db1": "failed"}
    web = stored("web1")
    assert web.diff.startswith(NOT_UTF8_MARK + "\n") and "+caf\\xe9=1" in web.diff
    assert stored("db1").note.startswith("cannot read /etc/l\\xe9gacy\\x00")
    assert queries.get_host("db1").message.endswith("cannot read /etc/l\\xe9gacy\\x00")
    assert "+caf\\xe9=1" in "".join(queries.iter_run_stdout(report.run.id))
    assert report.run.error == ""


def test_a_result_ansible_runner_emptied_for_its_size_says_so(settings, store):
    events = scripted_events({"web1": "changed", "db1": "ok"})
    for event in events:
        data = event.get("event_data") or {}
        if data.get("host"):
            data["fleet"] = {"changed": data["res"]["changed"]}  # fleet's callback says so beside the result
            data["res"] = {}  # what ansible-runner sends for a result over MAX_EVENT_RES
    report = execute_run(settings, "converge", runner=FakeRunner(events=events, hosts=HOSTS))
    assert report.run.status == "successful"
    assert stored("web1").diff == DROPPED_RESULT
    assert stored("db1").note == DROPPED_RESULT and stored("db1").diff == ""


def test_a_file_diff_ansible_skipped_says_why_instead_of_nothing(settings, store):
    events = scripted_events({"web1": "changed", "db1": "changed"})
    events[1]["event_data"]["res"]["diff"] = [{"dst_larger": 104448, "src_binary": 1}]
    events[2]["event_data"]["res"]["diff"] = [{"before": "", "after": "x\n"}]
    execute_run(settings, "converge", runner=FakeRunner(events=events, hosts=HOSTS))
    assert stored("db1").diff == ("[fleet: Ansible sent no diff: the source file appears to be binary; the "
                                  "destination file is larger than 104448 bytes (Ansible's max_diff_size)]")
    assert stored("web1").diff.startswith("--- before")
    assert skipped_diff({"diff": {"dst_binary": 1}}) == (
        "[fleet: Ansible sent no diff: the destination file appears to be binary]")
    assert skipped_diff({"diff": [{"before": "a", "after": "b"}]}) == skipped_diff({}) == ""


# A trigger refusing one value: what a store may refuse that the cleaning at the boundary did not foresee.
@pytest.mark.sqlite_only
def test_a_value_the_store_refuses_costs_that_value_not_the_run(settings, store):
    db.session.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON task_results WHEN NEW.diff LIKE '%caf%' "
                            "BEGIN SELECT RAISE(ABORT, 'not this one'); END"))
    db.session.commit()
    events = scripted_events({"web1": "changed", "db1": "changed"})
    events[1]["event_data"]["res"]["diff"][0]["after"] = "caf\n"  # db1's (hosts come sorted)
    report = execute_run(settings, "converge", runner=FakeRunner(events=events, hosts=HOSTS))
    assert report.run.status == "successful"
    assert {v.name: v.status for v in report.verdicts} == {"web1": "in_sync", "db1": "in_sync"}
    assert stored("db1").diff == "[fleet: the store refused this diff (not this one); this note stands in its place]"
    assert "+new" in stored("web1").diff
    assert report.run.error == ("every result was recorded, but the diff of a task result (db1, 'Write the motd') "
                                "was refused by the store (not this one) and replaced by a note")
    assert {h.name: h.status for h in db.session.scalars(select(Host))} == {"web1": "in_sync", "db1": "in_sync"}


# A shard on a worker (in process, the recorded truth events): its retry is fenced like its batches.
@pytest.mark.sqlite_only
def test_a_shard_whose_value_the_store_refuses_is_done_and_names_it(tmp_path):
    from fleet.executor.shard import execute_shard
    from fleet.fake_runner import hosts_of, load_events
    from fleet.revisions import sync_source
    from fleet.store import records, shards
    from tests.unit.test_executor_shard import RECORDED

    hosts = hosts_of(RECORDED, groups=("cases",))
    settings = settings_for_source(tmp_path, "")
    with open_store(settings):
        fake = FakeRunner(events=RECORDED, hosts=hosts)
        desired = sync_source(settings, runner=fake)
        run = records.create_run("check", "manual", desired.revision.sha, "", "test", None)
        [shard] = shards.create_shards(run.id, [[h.name for h in hosts]])
        assert shards.mark_sent(shard)
        db.session.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON task_results WHEN NEW.diff LIKE '---%' "
                                "BEGIN SELECT RAISE(ABORT, 'not this one'); END"))
        db.session.commit()
        assert execute_shard(settings, shard.id, 1, "w1", runner=fake) == "done"
        done = shards.get_shard(shard.id)
        assert done.reason.startswith("every result was recorded, but the diff of a task result (")
        assert "(not this one)" in done.reason
        rows = db.session.scalars(select(TaskResultRow).where(TaskResultRow.run_id == run.id)).all()
        replaced = [r for r in rows if r.diff]
        assert replaced and all(r.diff.startswith("[fleet: the store refused this diff") for r in replaced)
        assert len(rows) > len(replaced), "the other results are there too"
