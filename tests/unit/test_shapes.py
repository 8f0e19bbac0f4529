"""The JSON shapes of fleet's records (fleet.shapes), pure: records in, dicts out. The same shape is printed by
`fleet check --json`, `fleet show --json` and the API (tests/web/test_shapes.py compares the three); here
each function's own promises: which tasks explain a verdict, None for what is not there, times with zone."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from fleet import shapes
from fleet.drift import HostVerdict, TaskResult
from fleet.store.workers import WorkerView
from fleet.vocabulary import ApprovalKind

WHEN = datetime(2026, 4, 1, 9, 0)  # naive, as SQLite gives it back: UTC


def run(**fields) -> SimpleNamespace:
    base = dict(id=7, kind="check", trigger="schedule", status="successful", revision_sha="a" * 40, limit="",
                requested_by="controller", strategy="", created_at=WHEN, started_at=WHEN, finished_at=None,
                error="", cancel_requested=0, approval_id=None, hosts_total=3, hosts_in_sync=1, hosts_drifted=1,
                hosts_unverified=0, hosts_unreachable=1, hosts_failed=0)
    return SimpleNamespace(**{**base, **fields})


def task(name: str, status: str = "ok", **marks) -> TaskResult:
    return TaskResult(seq=1, host="web1", task=name, action="ansible.builtin.copy", status=status, **marks)


def test_a_run_says_none_for_what_it_does_not_have_and_gives_times_with_their_zone():
    shaped = shapes.run_json(run())
    assert shaped["limit"] is None and shaped["error"] is None and shaped["strategy"] is None
    assert shaped["finished_at"] is None
    assert shaped["started_at"] == "2026-04-01T09:00:00+00:00"
    assert shaped["cancel_requested"] is False and shaped["revision"] == "a" * 40
    # rows of older pages carry neither the waiting reason nor how Ansible ran
    assert shaped["waiting_reason"] is None and shaped["ansible_path"] is None
    json.dumps(shaped)  # nothing a script cannot read


def test_a_run_that_waits_or_ran_says_why_and_how():
    shaped = shapes.run_json(run(limit="web*", waiting_reason="no worker online", ansible_path="cold: x",
                                 cancel_requested=1, error="canceled by cli:ann"))
    assert (shaped["limit"], shaped["waiting_reason"], shaped["cancel_requested"]) == ("web*", "no worker online",
                                                                                      True)
    assert shaped["ansible_path"] == {"warm": False, "reason": "x"} and shaped["error"] == "canceled by cli:ann"


def test_a_run_in_a_history_page_counts_its_hosts_per_status():
    counts = shapes.run_summary_json(run())["hosts"]
    assert counts == {"total": 3, "in_sync": 1, "drifted": 1, "unverified": 0, "unreachable": 1, "failed": 0}


def test_a_path_without_its_reason_and_an_unknown_kind():
    assert shapes.ansible_path_json("cold") == {"warm": False, "reason": None}
    assert shapes.ansible_path_line("cold: no kept process yet") == "cold: no kept process yet"


def test_only_the_tasks_that_explain_a_verdict_are_listed_each_in_its_list():
    tasks = [task("plain"), task("motd", "changed", diff="+x\n", cause="local"),
             task("probe", unverified=True, note="raw: no check mode"),
             task("why", unverified=True, reason="skipped because it reads probe", accepted=True),
             task("restart", "changed", flapping=True, cause="commit"),
             task("stamp", "changed", executed=True), task("read", executed=True),
             task("handled", "changed", handler=True)]
    lists = shapes.verdict_lists_json(tasks)
    assert [t["task"] for t in lists["changed_tasks"]] == ["motd", "restart", "handled"]
    assert lists["changed_tasks"][0] == {"task": "motd", "action": "ansible.builtin.copy", "diff": "+x\n",
                                         "cause": "local", "flapping": False}
    assert lists["unverified_tasks"] == [
        {"task": "probe", "action": "ansible.builtin.copy", "reason": "raw: no check mode", "accepted": False},
        {"task": "why", "action": "ansible.builtin.copy", "reason": "skipped because it reads probe",
         "accepted": True}]
    assert lists["flapping_tasks"] == [{"task": "restart", "action": "ansible.builtin.copy"}]
    assert lists["executed_in_check"] == [{"task": "stamp", "action": "ansible.builtin.copy", "changed": True},
                                          {"task": "read", "action": "ansible.builtin.copy", "changed": False}]


def test_a_host_verdict_counts_its_coverage_as_verified_of_verified_plus_unverified():
    verdict = HostVerdict("web1", "unverified", ok=4, unverified=2, accepted=1, verified=4)
    shaped = shapes.run_host_json("web1", verdict, [])
    assert shaped["coverage"] == {"verified": 4, "total": 6}
    assert shaped["message"] is None and shaped["accepted"] == 1
    report = shapes.run_report_json(run(), [("web1", verdict, []), ("db1", HostVerdict("db1", "in_sync"), [])])
    assert [h["name"] for h in report["hosts"]] == ["web1", "db1"] and report["run"]["id"] == 7


def test_a_host_as_fleet_status_prints_it():
    host = SimpleNamespace(name="web1", status="drifted", group_list=["web", "prod"], address="10.0.0.1",
                           message="", last_check_at=WHEN, last_check_sha="b" * 40, last_check_run_id=7,
                           last_converge_at=None, last_converge_sha=None, verified_tasks=5, total_tasks=6,
                           os="", virtualization="kvm", key_blocked=False)
    shaped = shapes.host_json(host, [task("motd", "changed", cause="new")])
    assert shaped["coverage"] == {"verified": 5, "total": 6}
    assert shaped["facts"] == {"os": None, "virtualization": "kvm"}
    assert shaped["last_converge_at"] is None and shaped["last_check_at"].endswith("+00:00")
    assert [t["cause"] for t in shaped["changed_tasks"]] == ["new"]


def test_the_source_before_its_first_fetch_and_after():
    assert shapes.source_json(None, "/srv/git/site") == {"repo": "/srv/git/site", "desired": None, "head": None,
                                                         "stale": False, "error": None, "last_fetch_at": None}
    state = SimpleNamespace(repo="", desired_sha="c" * 40, head_sha="d" * 40, stale=1, last_error="timeout",
                            last_fetch_at=WHEN)
    shaped = shapes.source_json(state, "/srv/git/site")
    assert shaped["repo"] == "/srv/git/site" and shaped["stale"] is True and shaped["error"] == "timeout"


def test_a_revision_knows_whether_it_is_the_desired_one():
    revision = SimpleNamespace(sha="e" * 40, ref="main", status="valid", error="", author="Tess",
                               authored_at=WHEN, message="m", signature="good", rewrites_history=False)
    assert shapes.revision_json(revision, "e" * 40)["desired"] is True
    assert shapes.revision_json(revision, None)["desired"] is False
    assert shapes.revision_json(revision, None)["error"] is None


def test_an_approved_approval_says_what_the_controller_does_next():
    drift = SimpleNamespace(id=3, kind=ApprovalKind.DRIFT, host="web1", revision_sha="f" * 40)
    inventory = SimpleNamespace(id=4, kind=ApprovalKind.INVENTORY, host="", revision_sha="0" * 40)
    assert shapes.approved_message(drift) == ("approval 3 for web1 approved: the controller re-checks, then "
                                              f"converges exactly this drift at {'f' * 12}")
    assert shapes.approved_message(inventory).startswith(f"approval 4 approved: the inventory of {'0' * 12} is "
                                                         "accepted")


def test_a_worker_s_heartbeat_age_is_rounded_never_negative_and_none_before_the_first():
    now = datetime(2026, 4, 1, 9, 0, tzinfo=timezone.utc)
    worker = WorkerView(name="fleet@a", host="a", pid=1, version="0.1.0", concurrency=2, queues=("fleet",),
                        running=1, started_at=now, heartbeat_at=now - timedelta(seconds=4.26), stopped_at=None,
                        refusing="", state="online", version_ok=True)
    assert shapes.worker_json(worker, now)["heartbeat_age_seconds"] == 4.3
    ahead = WorkerView(**{**worker.__dict__, "heartbeat_at": now + timedelta(seconds=2)})  # another clock
    assert shapes.worker_json(ahead, now)["heartbeat_age_seconds"] == 0.0
    never = WorkerView(**{**worker.__dict__, "heartbeat_at": None})
    shaped = shapes.worker_json(never, now)
    assert shaped["heartbeat_age_seconds"] is None and shaped["queues"] == ["fleet"] and shaped["refusing"] is None


def test_a_shard_lists_its_hosts_and_history():
    shard = SimpleNamespace(index=1, hosts=("web1", "web2"), status="done", attempt=2, worker="", reason="",
                            started_at=WHEN, finished_at=None, history=("attempt 1 lost on fleet@a",))
    shaped = shapes.shard_json(shard)
    assert shaped["hosts"] == ["web1", "web2"] and shaped["history"] == ["attempt 1 lost on fleet@a"]
    assert shaped["worker"] is None and shaped["ansible_path"] is None and shaped["finished_at"] is None
