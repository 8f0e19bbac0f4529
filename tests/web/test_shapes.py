"""One JSON shape of a run: `fleet check --json`, `fleet show --json` and GET /api/v1/runs/<id> agree."""

from __future__ import annotations

from types import SimpleNamespace

from fleet import cli
from fleet.drift import HostVerdict, TaskResult
from fleet.store import accounts, records
from tests.web.test_api import make_app

SHARED_RUN_KEYS = {"id", "kind", "status", "revision"}
SHARED_HOST_KEYS = {"name", "status", "coverage", "changed_tasks", "unverified_tasks", "flapping_tasks",
                    "executed_in_check"}


def task(seq, host, name, status, **marks) -> TaskResult:
    return TaskResult(seq=seq, host=host, task=name, action="ansible.builtin.copy", status=status, **marks)


TASKS = {
    "web1": [task(1, "web1", "motd", "changed", diff="+hello\n", cause="local"),
             task(2, "web1", "probe", "ok", unverified=True, reason="raw has no check mode", accepted=True),
             task(3, "web1", "restart", "changed", flapping=True, diff="+x\n", cause="commit"),
             task(4, "web1", "read-only", "ok", executed=True)],
    "web2": [task(5, "web2", "motd", "ok")],
}
VERDICTS = [HostVerdict("web1", "drifted", ok=2, changed=2, unverified=1, accepted=1, verified=3, executed=1),
            HostVerdict("web2", "in_sync", ok=1, verified=1, facts={"os": "Debian 12"})]


def record_check(app) -> SimpleNamespace:
    """A finished check written the way jobs writes one, and the report `fleet check` prints."""
    with app.app_context():
        run = records.create_run("check", "manual", "a" * 40, "", "cli:test", None)
        recorder = records.RunRecorder(run.id)
        for result in [t for tasks in TASKS.values() for t in tasks]:
            recorder.add_task(result)
        recorder.add_output(9, "PLAY RECAP")
        recorder.flush()
        run = records.finish_run(run, "successful", VERDICTS)
        report = SimpleNamespace(run=run, verdicts=VERDICTS, tasks_by_host=TASKS)
        return SimpleNamespace(report=report, check_json=cli.report_json(report))


def test_check_show_and_the_api_give_one_shape_of_a_run(tmp_path):
    app = make_app(tmp_path)
    check_json = record_check(app).check_json
    run_id = check_json["run"]["id"]
    with app.app_context():
        show_json = cli._show_json(run_id)
        token = accounts.create_token("reader", "viewer", "test")
    api_json = app.test_client().get(f"/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert check_json["run"] == show_json["run"] == api_json["run"]  # the whole run object, not only the contract's
    assert SHARED_RUN_KEYS <= set(check_json["run"])
    for name in ("web1", "web2"):
        hosts = [next(h for h in doc["hosts"] if h["name"] == name) for doc in (check_json, show_json, api_json)]
        shared = set(hosts[0]) & set(hosts[1]) & set(hosts[2])
        assert SHARED_HOST_KEYS <= shared
        for key in sorted(shared):
            assert hosts[0][key] == hosts[1][key] == hosts[2][key], (name, key)


def test_the_shared_shape_explains_each_verdict(tmp_path):
    web1 = next(h for h in record_check(make_app(tmp_path)).check_json["hosts"] if h["name"] == "web1")
    assert web1["coverage"] == {"verified": 3, "total": 4}
    assert [(t["task"], t["cause"], t["flapping"]) for t in web1["changed_tasks"]] == [
        ("motd", "local", False), ("restart", "commit", True)]
    assert web1["unverified_tasks"] == [{"task": "probe", "action": "ansible.builtin.copy",
                                         "reason": "raw has no check mode", "accepted": True}]
    assert web1["flapping_tasks"] == [{"task": "restart", "action": "ansible.builtin.copy"}]
    assert web1["executed_in_check"] == [{"task": "read-only", "action": "ansible.builtin.copy", "changed": False}]


def test_check_json_adds_the_facts_it_gathered(tmp_path):
    hosts = record_check(make_app(tmp_path)).check_json["hosts"]
    assert [h["facts"] for h in hosts] == [None, {"os": "Debian 12"}]
