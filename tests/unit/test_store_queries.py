"""Reads of the store against a real SQLite file: keyset pages, views, the converge rule, run verdicts."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fleet.errors import NotFound
from fleet.store import queries
from fleet.store.models import Host, HostLock, RunHost, TaskResultRow
from fleet.store.views import HostView, RunView, TaskView
from tests.unit.store_fixtures import add_hosts, add_runs, temporary_store


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def walk_down(read, size: int) -> list[int]:
    """Every id, page after page, following each page's cursor."""
    seen, cursor = [], None
    while True:
        page = read(before=cursor, size=size)
        seen += [item.id for item in page]
        cursor = page.cursor()
        if cursor is None:
            return seen


@pytest.mark.parametrize("runs,size", [
    pytest.param(0, 3, id="empty history"),
    pytest.param(6, 3, id="exact pages"),
    pytest.param(7, 3, id="a short last page"),
    pytest.param(2, 50, id="one page"),
])
def test_run_pages_walk_the_history_without_gaps_or_duplicates(store, runs, size):
    ids = add_runs(store, runs)
    assert walk_down(queries.runs_page, size) == sorted(ids, reverse=True)


def test_the_page_above_a_cursor_is_newest_first_and_says_whether_newer_runs_exist(store):
    ids = add_runs(store, 7)
    page = queries.runs_page(after=ids[2], size=3)
    assert [run.id for run in page] == [ids[5], ids[4], ids[3]]
    assert page.more
    top = queries.runs_page(after=ids[3], size=3)
    assert [run.id for run in top] == [ids[6], ids[5], ids[4]] and not top.more


def test_run_pages_filter_by_kind_status_trigger_and_host(store):
    checks = add_runs(store, 2)
    converge = add_runs(store, 1, kind="converge", status="failed", trigger="policy")[0]
    store.add(RunHost(run_id=checks[0], host="web1", status="in_sync"))
    store.commit()
    assert [r.id for r in queries.runs_page(kind="converge")] == [converge]
    assert [r.id for r in queries.runs_page(status="failed", trigger="policy")] == [converge]
    assert [r.id for r in queries.runs_page(host="web1")] == [checks[0]]


def test_host_pages_go_by_name(store):
    add_hosts(store, ("web2", "web"), ("db1", "db"), ("web1", "web"))
    first = queries.hosts_page(size=2)
    assert [h.name for h in first] == ["db1", "web1"] and first.cursor("name") == "web1"
    assert [h.name for h in queries.hosts_page(after="web1", size=2)] == ["web2"]
    assert [h.name for h in queries.inventory_hosts(group="web")] == ["web1", "web2"]


def test_reads_hand_out_detached_views_with_aware_datetimes(store):
    run_id = add_runs(store, 1)[0]
    add_hosts(store, ("web1", "web prod"))
    run, host = queries.get_run(run_id), queries.get_host("web1")
    assert isinstance(run, RunView) and isinstance(host, HostView)
    assert isinstance(run.created_at, datetime) and run.created_at.tzinfo is not None
    assert host.group_list == ["web", "prod"] and str(host.coverage) == "0/0"
    with pytest.raises(AttributeError):
        run.status = "failed"  # a view cannot change the store


def test_hosts_named_carry_the_converge_history_a_check_needs(store):
    converged = datetime(2026, 11, 1, 12, 0)  # naive, as SQLite hands it back
    store.add(Host(name="web1", last_converge_at=converged, last_converge_sha="a" * 40, flapping='["x|y"]'))
    store.commit()
    assert queries.hosts_named([]) == []
    (host,) = queries.hosts_named(["web1", "unseen"])
    assert isinstance(host, HostView) and host.last_check_at is None
    assert (host.last_converge_at, host.last_converge_sha, host.flapping) == (
        converged.replace(tzinfo=timezone.utc), "a" * 40, '["x|y"]')


def test_changed_tasks_of_a_host_are_views_of_its_drift_only(store):
    run_id = add_runs(store, 1)[0]
    store.add_all([TaskResultRow(run_id=run_id, seq=1, host="web1", task="drift", action="copy", status="changed"),
                   TaskResultRow(run_id=run_id, seq=2, host="web1", task="ran", action="raw", status="changed",
                                 executed=True),
                   TaskResultRow(run_id=run_id, seq=3, host="web2", task="drift", action="copy", status="changed")])
    store.commit()
    tasks = queries.changed_tasks_of(run_id, "web1")
    assert [(type(t), t.task) for t in tasks] == [(TaskView, "drift")]


def test_missing_runs_and_hosts_say_where_to_look(store):
    with pytest.raises(NotFound, match="fleet runs"):
        queries.get_run(404)
    with pytest.raises(NotFound, match="fleet status"):
        queries.get_host("nope")


def test_source_and_controller_reads_never_insert_their_rows(store):
    assert queries.source_state() is None and queries.desired_sha() is None
    assert queries.controller_state().fetch_failures == 0
    assert queries.controller_heartbeat() is None


def test_run_verdicts_give_each_host_with_the_tasks_that_explain_it(store):
    run_id = add_runs(store, 1)[0]
    store.add_all([RunHost(run_id=run_id, host="web2", status="in_sync"),
                   RunHost(run_id=run_id, host="web1", status="drifted", changed=1),
                   TaskResultRow(run_id=run_id, seq=1, host="web1", task="ok one", action="copy", status="ok"),
                   TaskResultRow(run_id=run_id, seq=2, host="web1", task="drift", action="copy", status="changed"),
                   TaskResultRow(run_id=run_id, seq=3, host="web2", task="probe", action="raw", status="ok",
                                 unverified=True)])
    store.commit()
    found = [(name, verdict.status, [t.task for t in tasks]) for name, verdict, tasks in queries.run_verdicts(run_id)]
    assert found == [("web1", "drifted", ["drift"]), ("web2", "in_sync", ["probe"])]


@pytest.mark.parametrize("active,locks,request_limit,blocked", [
    pytest.param([("queued", "web1")], [], "web1", True, id="the same limit"),
    pytest.param([("running", "")], [], "db1", True, id="a converge of every host"),
    pytest.param([("running", "web*")], [], "web1", True, id="a known host both patterns cover"),
    pytest.param([("running", "web")], [], "web2", True, id="a group covering a known host"),
    pytest.param([("running", "web*")], [], "db1", False, id="disjoint known hosts"),
    pytest.param([("running", "web*")], ["web9"], "db1,web9", True, id="a named host locked"),
    pytest.param([("successful", "web1")], [], "web1", False, id="an ended converge"),
    pytest.param([], [], "", False, id="nothing active"),
])
def test_one_rule_for_a_conflicting_converge(store, active, locks, request_limit, blocked):
    add_hosts(store, ("web1", "web"), ("web2", "web"), ("db1", "db"))
    ids = [add_runs(store, 1, kind="converge", status=status, limit=limit)[0] for status, limit in active]
    store.add_all([HostLock(host=host, run_id=ids[0]) for host in locks])
    store.commit()
    conflict = queries.converge_conflict(request_limit)
    assert bool(conflict) is blocked, conflict
    if blocked:
        assert f"already being converged by run {ids[0]}" in conflict
