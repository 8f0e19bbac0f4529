"""The runner's pure parts: which Ansible strategy a run uses, and why."""

from __future__ import annotations

import pytest

from fleet import runner
from fleet.errors import ConfigError


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
