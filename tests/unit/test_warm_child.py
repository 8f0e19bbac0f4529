"""fleet.warm.child without a kept process: which hops of Mitogen's connection stack are a warm run's own,
how an ended run is told apart, and which runs must go cold for their collections."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleet.warm import child

pytestmark = pytest.mark.filterwarnings("ignore:DSA is deprecated")  # ansible_mitogen imports Ansible's ssh code
BECOME = ["sudo", "su", "doas"]
SSH = {"method": "ssh", "kwargs": {"hostname": "web1"}, "enable_lru": True}
SUDO = {"method": "sudo", "kwargs": {"username": "root"}, "enable_lru": True}


class FakeConnection:
    become_methods = BECOME


def stack_for(monkeypatch, stack: list[dict], mark: str = "123-456") -> list[dict]:
    """What a run's connection asks Mitogen for, when Mitogen's own stack is `stack`."""
    import ansible_mitogen.connection as connection

    monkeypatch.setattr(connection.Connection, "_build_stack", lambda self: ("web1", [dict(hop) for hop in stack]))
    child.give_the_run_its_own_hops(mark)
    return connection.Connection._build_stack(FakeConnection())[1]


def test_a_login_users_tasks_run_in_a_fork_made_for_the_run(monkeypatch):
    assert stack_for(monkeypatch, [SSH]) == [SSH, {"method": "fork", "kwargs": {}, child.RUN_MARK: "123-456"}]


def test_a_become_hop_is_the_runs_own_and_needs_no_fork(monkeypatch):
    assert stack_for(monkeypatch, [SSH, SUDO]) == [SSH, {**SUDO, child.RUN_MARK: "123-456"}]


def test_a_jump_host_stays_shared_and_the_fork_is_of_the_last_hop(monkeypatch):
    bastion = {"method": "ssh", "kwargs": {"hostname": "bastion"}, "enable_lru": True}
    got = stack_for(monkeypatch, [bastion, SSH])
    assert got[:2] == [bastion, SSH] and got[2]["method"] == "fork"


def test_a_run_mark_names_a_live_run_until_its_process_ends():
    assert child.run_alive(child.run_mark()), "this process runs"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert not child.run_alive(f"{ended.pid}-1"), "its pid is gone: its contexts are idle whatever their count"
    assert child.run_alive("not-a-mark"), "a mark it cannot read is kept (never ends a live run's context)"


def test_collections_beside_a_playbook_send_the_run_cold(tmp_path):
    playbook = tmp_path / "site.yml"
    playbook.write_text("- hosts: all\n")
    assert child.collections_problem([str(playbook), "--check"]) is None
    (tmp_path / "collections").mkdir()
    problem = child.collections_problem(["--check", str(playbook)])
    assert problem and str(tmp_path / "collections") in problem and "kept process" in problem
    assert child.collections_problem([os.fspath(tmp_path / "missing.yml")]) is None
