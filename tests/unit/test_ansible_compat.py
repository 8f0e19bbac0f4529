"""fleet.ansible_compat: the contract with the installed Ansible, ansible-runner and Mitogen.

The first test is the one that fails, naming each internal, when a release moves what fleet relies on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import ansible_compat

FLEET = Path(ansible_compat.__file__).parent
# Resolving every internal imports ansible.cli, whose SSH agent code imports cryptography's DSA (a warning of
# cryptography's to Ansible, printed by every ansible-playbook too).
pytestmark = pytest.mark.filterwarnings("ignore:DSA is deprecated")


def test_every_internal_fleet_relies_on_is_where_the_installed_releases_have_it():
    assert ansible_compat.missing() == {}, "these internals moved: fleet's code that names them must follow"


def test_every_internal_named_in_fleets_code_is_listed_with_its_purpose():
    named = set()
    for path in FLEET.rglob("*.py"):
        named |= set(re.findall(r'(?:internal|patch)\(\s*f?"([\w.]+:[\w.{}]+)"', path.read_text()))
    # The one name built in a loop (the callback's search-path hooks).
    named = {n for n in named if "{" not in n} | {f"ansible.parsing.dataloader:DataLoader.{method}"
                                                  for method in ("path_dwim_relative_stack", "path_dwim_relative")}
    unlisted = sorted(named - ansible_compat.INTERNALS.keys())
    assert len(named) >= 20 and unlisted == [], unlisted
    assert all(why.strip() for why in ansible_compat.INTERNALS.values())


def test_a_moved_internal_is_named_with_what_fleet_uses_it_for(monkeypatch):
    monkeypatch.setitem(ansible_compat.INTERNALS, "ansible.plugins.strategy:StrategyBase._gone_in_2_99",
                        "the test: a method a later release removed")
    with pytest.raises(ansible_compat.InternalMoved) as raised:
        ansible_compat.internal("ansible.plugins.strategy:StrategyBase._gone_in_2_99")
    text = str(raised.value)
    assert "StrategyBase._gone_in_2_99" in text and "a method a later release removed" in text
    assert "ansible-core 2.19" in text, "the release it looked in"


def test_an_internal_not_listed_is_refused():
    with pytest.raises(KeyError, match="not listed"):
        ansible_compat.internal("ansible.plugins.strategy:StrategyBase._execute_meta_not_listed")


def test_patching_twice_wraps_once(monkeypatch):
    import ansible.plugins.strategy as strategy

    path = "ansible.plugins.strategy:StrategyBase._execute_meta"
    monkeypatch.setattr(strategy.StrategyBase, "_execute_meta", strategy.StrategyBase._execute_meta)
    calls = []

    def wrap(original):
        calls.append(original)
        return lambda *args, **kwargs: original(*args, **kwargs)

    ansible_compat.patch(path, wrap)
    ansible_compat.patch(path, wrap)
    assert len(calls) == 1 and getattr(strategy.StrategyBase._execute_meta, "_fleet_hook", False)


def test_the_command_lists_what_is_missing_and_fails_when_anything_is():
    done = subprocess.run([sys.executable, "-m", "fleet.ansible_compat"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(ansible_compat.INTERNALS)
    assert f"{count} of {count} internals found in ansible-core 2.19" in done.stdout
