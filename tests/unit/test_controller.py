"""The controller's wiring: the order it carries out actions in, and what it hands the plan."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from fleet import controller as controller_module
from fleet import plan, policy
from fleet.controller import Controller, finished_run
from fleet.drift import HostVerdict, TaskResult
from fleet.store import queries, records
from fleet.store.db import store_app
from fleet.store.models import Approval, Run


class RecordingExecutor:
    """Stands in for ActionExecutor: notes each action and answers with scripted follow-ups."""

    def __init__(self, follow_ups: dict):
        self.follow_ups, self.done = follow_ups, []

    def perform(self, action, now):
        self.done.append(action)
        return self.follow_ups.get(action, [])


def test_follow_ups_run_right_after_their_action_before_the_rest():
    controller = Controller(settings=None, stop=threading.Event())
    batch = plan.VerifyCheck("web1")
    controller.actions = RecordingExecutor({
        plan.StartRun(1): [plan.OpenApproval("db1", 1, "a"), batch],
        batch: [plan.Hold(("web2",), "why")],
    })
    assert controller.execute([plan.StartRun(1), plan.StartRun(2)], now=None) is True
    assert controller.actions.done == [plan.StartRun(1), plan.OpenApproval("db1", 1, "a"), batch,
                                       plan.Hold(("web2",), "why"), plan.StartRun(2)]


def test_nothing_to_do_lets_the_loop_sleep():
    controller = Controller(settings=None)
    controller.actions = RecordingExecutor({})
    assert controller.execute([], now=None) is False


def _drift(host: str, task: str, flapping: bool) -> TaskResult:
    return TaskResult(seq=1, host=host, task=task, action="ansible.builtin.template", status="changed",
                      flapping=flapping)


def test_policy_converges_real_drift_but_leaves_flapping_only_hosts_alone():
    report = SimpleNamespace(
        run=SimpleNamespace(id=9, kind="check", trigger="schedule", status="successful", limit=""),
        verdicts=[HostVerdict("web1", "drifted"), HostVerdict("web2", "drifted")],
        tasks_by_host={"web1": [_drift("web1", "stamp", True)],
                       "web2": [_drift("web2", "stamp", True), _drift("web2", "motd", False)]})
    desired = SimpleNamespace(hosts=[SimpleNamespace(name="web1", groups=("web",)),
                                     SimpleNamespace(name="web2", groups=("web",))],
                              revision=SimpleNamespace(rewrites_history=False, sha="a" * 40))
    finished = finished_run(report, desired)
    assert finished.host("web2") == plan.HostOutcome("web2", "drifted", ("web",), ("stamp", "motd"), ("stamp",))
    rules = policy.parse_policy("remediation:\n  - {group: all, mode: auto}\n")
    actions = plan.after_run(finished, rules, now=None, stopping=False)
    assert [type(a) for a in actions] == [plan.Hold, plan.ConvergeBatch]
    assert actions[0].hosts == ("web1",) and actions[1].progress.batch == ("web2",)


# --- whole ticks on an in-memory store, with jobs faked (no git, no SSH) ----------------------

SHA = "c" * 40
NOW = datetime(2026, 3, 2, 10, 7, tzinfo=timezone.utc)
POLICY = policy.parse_policy("""\
remediation:
  - {group: web, mode: auto}
  - {group: db, mode: approve}
rollout: {canary: 1, batch: 50%}
""")
INVENTORY = [SimpleNamespace(name="web1", groups=("web",)), SimpleNamespace(name="web2", groups=("web",)),
             SimpleNamespace(name="db1", groups=("db",))]


class FakeFleet:
    """Hosts that drift until converged; a converge of a host in `failing` fails."""

    def __init__(self, drifted=("web1", "web2", "db1"), failing=()):
        self.drifted, self.failing = set(drifted), set(failing)
        self.desired = SimpleNamespace(revision=SimpleNamespace(sha=SHA, rewrites_history=False), hosts=INVENTORY)

    def sync_source(self, settings):
        records.record_fetch("repo", SHA, SHA)

    def resolve_targets(self, settings, desired, limit):
        return [h for h in INVENTORY if not limit or h.name in limit.split(",")]

    def perform_run(self, settings, run, desired, targets, should_cancel=None):
        verdicts = [HostVerdict(t.name, self._status(run.kind, t.name)) for t in targets]
        if run.kind == "converge":
            self.drifted -= {v.name for v in verdicts if v.status == "in_sync"}
        run = records.finish_run(run, "successful", verdicts)
        tasks = {v.name: [_drift(v.name, "motd", False)] for v in verdicts if v.status == "drifted"}
        return SimpleNamespace(run=run, verdicts=verdicts, tasks_by_host=tasks)

    def _status(self, kind: str, host: str) -> str:
        if kind == "converge":
            return "failed" if host in self.failing else "in_sync"
        return "drifted" if host in self.drifted else "in_sync"


@pytest.fixture
def fleet(monkeypatch):
    fake = FakeFleet()
    for name in ("sync_source", "resolve_targets", "perform_run"):
        monkeypatch.setattr(controller_module.jobs, name, getattr(fake, name))
    monkeypatch.setattr(controller_module.jobs, "desired_state", lambda settings: fake.desired)
    monkeypatch.setattr(controller_module, "current_policy", lambda settings: POLICY)
    with store_app("sqlite://").app_context():
        yield fake


def _runs() -> list[tuple[str, str, str]]:
    return [(r.kind, r.trigger, r.limit) for r in Run.query.order_by(Run.id)]


def _approvals() -> list[tuple[str, str]]:
    return [(a.host, a.status) for a in Approval.query.order_by(Approval.id)]


def _controller() -> Controller:
    return Controller(SimpleNamespace(poll_interval=60, repo="repo"))


def test_a_new_commit_is_checked_then_auto_drift_rolled_out_and_approve_drift_waits(fleet):
    controller = _controller()
    assert controller.tick(NOW) is True, "the commit check is queued"
    assert _runs() == [("check", "commit", "")]
    assert controller.tick(NOW) is True, "and run, with the policy's follow-ups"
    assert _runs() == [("check", "commit", ""), ("converge", "policy", "web1"), ("converge", "policy", "web2"),
                       ("check", "policy", "web1,web2")]
    assert _approvals() == [("db1", "pending")]
    assert controller.tick(NOW) is False, "nothing left to do"


def test_an_approved_drift_is_rechecked_converged_and_verified(fleet):
    controller = _controller()
    controller.tick(NOW)
    controller.tick(NOW)
    records.decide_approval(Approval.query.one().id, "tess")
    assert controller.tick(NOW) is True
    assert _runs()[-3:] == [("check", "policy", "db1"), ("converge", "policy", "db1"), ("check", "policy", "db1")]
    assert _approvals() == [("db1", "applied")]
    assert queries.approved_waiting() == []


def test_a_failed_canary_stops_the_rollout(fleet):
    fleet.failing = {"web1"}
    controller = _controller()
    controller.tick(NOW)
    controller.tick(NOW)
    assert [r for r in _runs() if r[0] == "converge"] == [("converge", "policy", "web1")]
    assert ("check", "policy", "web1,web2") not in _runs()


def test_a_requested_converge_ends_with_a_verifying_check(fleet):
    controller = _controller()
    controller.tick(NOW)
    controller.tick(NOW)
    records.enqueue_run("converge", "manual", "web2", "tess")
    assert controller.tick(NOW) is True
    assert _runs()[-2:] == [("converge", "manual", "web2"), ("check", "policy", "web2")]
