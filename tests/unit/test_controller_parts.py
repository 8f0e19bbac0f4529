"""Pure pieces of the controller, runner and service: signatures, strategy choice, bind parsing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fleet import runner
from fleet.controller import drift_signature, only_flapping
from fleet.drift import HostVerdict, TaskResult, settle_incomplete
from fleet.errors import ConfigError
from fleet.serve import parse_bind


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


@pytest.mark.parametrize("bind, expected", [
    pytest.param("127.0.0.1:8080", ("127.0.0.1", 8080), id="ipv4"),
    pytest.param("[::1]:9000", ("::1", 9000), id="ipv6 in brackets"),
    pytest.param("0.0.0.0:80", ("0.0.0.0", 80), id="all addresses"),
])
def test_parse_bind(bind, expected):
    assert parse_bind(bind) == expected


@pytest.mark.parametrize("bind", ["8080", "localhost", "host:port", ":8080"])
def test_parse_bind_refuses_what_is_not_host_and_port(bind):
    with pytest.raises(ConfigError, match="FLEET_BIND"):
        parse_bind(bind)


def test_linear_strategy_when_asked():
    chosen = runner.choose_strategy("linear")
    assert chosen.name == "linear" and chosen.plugin_dir is None
    assert runner.strategy_env(chosen) == {"ANSIBLE_STRATEGY": "linear"}


def test_auto_picks_mitogen_when_installed_and_compatible():
    chosen = runner.choose_strategy("auto")
    assert chosen.name == "mitogen_linear"
    assert chosen.plugin_dir.endswith("ansible_mitogen/plugins/strategy")
    assert runner.strategy_env(chosen)["ANSIBLE_STRATEGY_PLUGINS"] == chosen.plugin_dir


def test_auto_falls_back_with_a_reason_when_ansible_is_too_new(monkeypatch):
    monkeypatch.setattr(runner, "MITOGEN_ANSIBLE_RANGE", ((2, 10), (2, 11)))
    chosen = runner.choose_strategy("auto")
    assert chosen.name == "linear"
    assert "not known to work with ansible-core" in chosen.reason


def test_explicit_mitogen_that_cannot_work_is_an_error(monkeypatch):
    monkeypatch.setattr(runner, "MITOGEN_ANSIBLE_RANGE", ((2, 10), (2, 11)))
    with pytest.raises(ConfigError, match="FLEET_STRATEGY=linear"):
        runner.choose_strategy("mitogen")


def test_a_stopped_run_does_not_prove_hosts_in_sync():
    verdicts = [HostVerdict("web1", "in_sync"), HostVerdict("web2", "drifted"), HostVerdict("db1", "unreachable"),
                HostVerdict("db2", "unverified")]
    settled = settle_incomplete(verdicts)
    assert [v.status for v in settled] == ["incomplete", "drifted", "unreachable", "incomplete"]
    assert "stopped" in settled[0].message


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
