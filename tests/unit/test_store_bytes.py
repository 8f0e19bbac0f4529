"""Results whose text is not UTF-8, written to a real store (SQLite here; PostgreSQL too with
FLEET_TEST_DATABASE_URL): cleaned at fleet's boundary they are stored exactly as cleaned; a value the
store still refuses costs that value only (a marked placeholder), never the run's other results; a store
that refuses everything keeps nothing of the batch."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from fleet.drift import DriftTracker, TaskResult
from fleet.store import records
from fleet.store.models import RunOutput, TaskResultRow
from fleet.text import clean_event
from tests.unit.store_fixtures import temporary_store

LATIN1 = b"caf\xe9=1\n".decode("utf-8", errors="surrogateescape")


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def stored_tasks(session) -> list[TaskResultRow]:
    return list(session.scalars(select(TaskResultRow).order_by(TaskResultRow.seq)))


def stored_output(session) -> list[str]:
    return list(session.scalars(select(RunOutput.text).order_by(RunOutput.seq)))


def event(counter: int, after: str, stdout: str, msg: str = "") -> dict:
    return {"event": "runner_on_ok", "counter": counter, "stdout": stdout, "event_data": {
        "host": "web1", "task": f"task {counter}", "resolved_action": "ansible.builtin.copy",
        "res": {"changed": True, "msg": msg, "dest": "/etc/legacy.conf",
                "diff": [{"before": "", "after": after}]}}}


def test_cleaned_events_of_every_kind_are_stored_exactly_as_cleaned(store):
    run = records.create_run("converge", "manual", "a" * 40, "", "test", None)
    recorder = records.RunRecorder(run.id)
    tracker = DriftTracker(check_mode=False)
    events = [event(1, LATIN1, "changed: [web1] " + LATIN1),
              event(2, "nul\x00inside\n", "a\x00b", msg="m\x00"),
              event(3, "high\ud800 surrogate\n", "x\udfffy"),
              event(4, "café ☃ 😀\n", "café ☃ 😀")]
    kept = []
    for raw in events:
        cleaned = clean_event(raw).value
        recorder.add_output(cleaned["counter"], cleaned["stdout"])
        for result in tracker.add_all(cleaned):
            recorder.add_task(result)
            kept.append(result)
    recorder.flush()
    rows = stored_tasks(store)
    assert [(r.seq, r.diff, r.note) for r in rows] == [(r.seq, r.diff, r.note) for r in kept]
    assert "+caf\\xe9=1" in rows[0].diff and "+nul\\x00inside" in rows[1].diff
    assert rows[1].note == "m\\x00" and "+high\\ud800 surrogate" in rows[2].diff
    assert "+café ☃ 😀" in rows[3].diff, "valid UTF-8 is stored as it is"
    assert stored_output(store) == ["changed: [web1] caf\\xe9=1\n", "a\\x00b", "x\\udfffy", "café ☃ 😀"]
    assert recorder.problems == []


def test_a_value_the_store_refuses_is_replaced_and_the_batch_s_other_rows_are_kept(store):
    """Past the boundary (a value nobody cleaned): the driver refuses a lone surrogate on both stores."""
    run = records.create_run("converge", "manual", "a" * 40, "", "test", None)
    recorder = records.RunRecorder(run.id)
    recorder.add_output(1, "before")
    recorder.add_task(TaskResult(seq=2, host="web1", task="legacy", action="copy", status="changed",
                                 diff="+caf\udce9\n", note="kept note"))
    recorder.add_task(TaskResult(seq=3, host="web1", task="next", action="file", status="ok"))
    recorder.add_output(4, "after")
    recorder.flush()
    rows = stored_tasks(store)
    assert [(r.seq, r.task, r.status) for r in rows] == [(2, "legacy", "changed"), (3, "next", "ok")]
    assert rows[0].diff.startswith("[fleet: the store refused this diff (")
    assert "surrogates not allowed" in rows[0].diff
    assert rows[0].note == "kept note", "only the refused value is replaced"
    assert stored_output(store) == ["before", "after"]
    [problem] = recorder.problems
    assert problem.startswith("the diff of a task result (web1, 'legacy') was refused by the store (")
    assert recorder.rows_written == 4
    recorder.add_output(5, "the next batch goes the usual way")
    recorder.flush()
    assert stored_output(store)[-1] == "the next batch goes the usual way"


# The refusal is an SQLite trigger (RAISE(ABORT)): a store that refuses every row, not a value.
@pytest.mark.sqlite_only
def test_a_store_that_refuses_even_the_placeholders_keeps_nothing_of_the_batch(store):
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    recorder = records.RunRecorder(run.id)
    recorder.add_output(1, "kept")
    recorder.flush()
    store.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON task_results "
                       "BEGIN SELECT RAISE(ABORT, 'injected'); END"))
    store.commit()
    recorder.add_output(2, "written with the refused task, so never")
    recorder.add_task(TaskResult(seq=3, host="web1", task="t", action="file", status="ok", diff="d", note="n"))
    with pytest.raises(IntegrityError, match="injected"):
        recorder.flush()
    assert stored_output(store) == ["kept"] and stored_tasks(store) == []
    assert recorder.problems == []


# A trigger refusing one value: what a store may refuse that no cleaning foresaw (a length, a check).
@pytest.mark.sqlite_only
def test_a_refusal_of_one_column_replaces_that_column_only(store):
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    recorder = records.RunRecorder(run.id)
    store.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON task_results WHEN NEW.note LIKE '%forbidden%' "
                       "BEGIN SELECT RAISE(ABORT, 'notes may not say that'); END"))
    store.commit()
    recorder.add_task(TaskResult(seq=1, host="web1", task="t", action="file", status="changed", diff="+d\n",
                                 note="a forbidden word"))
    recorder.flush()
    [row] = stored_tasks(store)
    assert row.diff == "+d\n"
    assert row.note == ("[fleet: the store refused this note (notes may not say that); "
                        "this note stands in its place]")
    assert recorder.problems == ["the note of a task result (web1, 't') was refused by the store "
                                 "(notes may not say that) and replaced by a note"]


def test_a_store_that_says_it_is_locked_or_gone_is_not_tried_row_by_row(store, monkeypatch):
    run = records.create_run("check", "manual", "a" * 40, "", "test", None)
    recorder = records.RunRecorder(run.id)
    recorder.add_output(1, "one")
    recorder.add_task(TaskResult(seq=2, host="web1", task="t", action="file", status="ok", diff="d", note="n"))
    tries = []

    def locked(*args, **kwargs):
        tries.append(args)
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(store, "execute", locked)
    with pytest.raises(OperationalError, match="database is locked"):
        recorder.flush()
    assert len(tries) == 1, "one refusal of the store itself ends the batch: no savepoint per row, no waiting"
    monkeypatch.undo()
    assert stored_output(store) == [] and recorder.problems == []
