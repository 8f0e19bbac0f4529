"""The controller's pure parts: drift signatures, and what policy does with flapping drift."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fleet.controller import drift_signature, only_flapping
from fleet.drift import HostVerdict, TaskResult


@dataclass
class Task:
    task: str
    action: str
    diff: str


def test_drift_signature_ignores_order_but_not_content():
    a = Task("motd", "template", "-old\n+new\n")
    b = Task("users", "user", "")
    assert drift_signature([a, b]) == drift_signature([b, a])
    assert drift_signature([a, b]) != drift_signature([a])
    assert drift_signature([a]) != drift_signature([Task("motd", "template", "-old\n+newer\n")])


def _drift(task: str, flapping: bool) -> TaskResult:
    return TaskResult(seq=1, host="web1", task=task, action="ansible.builtin.template", status="changed",
                      flapping=flapping)


@pytest.mark.parametrize(("tasks", "only"), [
    pytest.param([_drift("stamp", True)], True, id="only a flapping task: not converged by policy"),
    pytest.param([_drift("stamp", True), _drift("motd", False)], False, id="real drift beside it: converged"),
    pytest.param([_drift("motd", False)], False, id="no flapping task"),
    pytest.param([], False, id="no drift at all"),
])
def test_only_flapping_drift_is_left_alone_by_policy(tasks, only):
    assert only_flapping(tasks) is only


def test_policy_converges_real_drift_but_leaves_flapping_only_hosts_alone(monkeypatch):
    from types import SimpleNamespace

    from fleet import policy
    from fleet.controller import Controller

    controller = Controller(settings=None)
    rolled_out = []
    monkeypatch.setattr(controller, "current_policy", lambda: policy.parse_policy(
        "remediation:\n  - {group: all, mode: auto}\n"))
    monkeypatch.setattr(controller, "rollout", lambda hosts, rollout: rolled_out.extend(hosts))
    report = SimpleNamespace(
        verdicts=[HostVerdict("web1", "drifted"), HostVerdict("web2", "drifted")],
        tasks_by_host={"web1": [_drift("stamp", True)], "web2": [_drift("stamp", True), _drift("motd", False)]})
    desired = SimpleNamespace(hosts=[SimpleNamespace(name="web1", groups=("web",)),
                                     SimpleNamespace(name="web2", groups=("web",))],
                              revision=SimpleNamespace(rewrites_history=False, sha="a" * 40))
    controller.remediate(report, desired)
    assert rolled_out == ["web2"]
