"""The core loop against real SSH hosts and a real git source, through the `fleet` command."""

from __future__ import annotations

import os
import time

import pytest

from tests.ansible_processes import ansible_processes
from tests.conftest import control_dir, git, ssh_masters
from tests.conftest import lab_ssh as ssh

pytestmark = pytest.mark.lab


def hosts_by_name(result) -> dict:
    return {h["name"]: h for h in result.json()["hosts"]}


def test_fresh_hosts_drift_converge_then_in_sync_then_hand_edit_drifts(lab_env):
    cli = lab_env

    first = cli("check", "--json")
    assert first.code == 2, first.stderr
    hosts = hosts_by_name(first)
    assert set(hosts) == {"web1", "web2", "db1", "db2"}
    assert all(h["status"] == "drifted" for h in hosts.values())
    motd = [t for t in hosts["web1"]["changed_tasks"] if "/etc/motd" in t["diff"]]
    assert motd, "a fresh host must show the motd it is missing, as a diff"
    assert "+++ " in motd[0]["diff"] and "\n+" in motd[0]["diff"]
    assert first.json()["run"]["kind"] == "check"
    assert all(h["coverage"]["total"] >= h["coverage"]["verified"] > 0 for h in hosts.values())

    applied = cli("converge", "--yes", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert all(h["status"] == "in_sync" for h in applied.json()["hosts"])

    second = cli("check", "--json")
    assert second.code == 0, second.stdout
    assert all(h["status"] == "in_sync" and not h["changed_tasks"] for h in second.json()["hosts"])

    ssh(cli, "127.0.20.1", "echo 'edited by hand' >> /etc/motd")
    third = cli("check", "--json")
    assert third.code == 2
    hosts = hosts_by_name(third)
    assert [name for name, h in hosts.items() if h["status"] == "drifted"] == ["web1"]
    diffs = "".join(t["diff"] for t in hosts["web1"]["changed_tasks"])
    assert "/etc/motd" in diffs and "-edited by hand" in diffs

    status = cli("status", "--json")
    assert status.code == 0
    by_name = hosts_by_name(status)
    assert by_name["web1"]["status"] == "drifted" and by_name["db1"]["status"] == "in_sync"
    assert by_name["web1"]["last_check_revision"] == third.json()["run"]["revision"]
    assert by_name["web1"]["facts"]["os"].startswith("Debian")

    shown = cli("show", str(third.json()["run"]["id"]))
    assert shown.code == 0 and "-edited by hand" in shown.stdout
    task_paths = [t["path"] for h in cli("show", str(third.json()["run"]["id"]), "--json").json()["hosts"]
                  for t in h["tasks"] if t["path"]]
    assert task_paths and all(p.startswith("playbooks/") for p in task_paths), "paths as the repository names them"
    history = cli("runs", "--json").json()["runs"]
    assert [r["kind"] for r in history[:4]] == ["check", "check", "converge", "check"]


def verdict_digest(result) -> dict:
    """What a check concluded per host, without timings or run ids."""
    return {
        h["name"]: (h["status"], h["coverage"]["verified"], h["coverage"]["total"],
                    sorted((t["task"], t["action"], t["diff"]) for t in h["changed_tasks"]),
                    sorted((t["task"], t["reason"]) for t in h["unverified_tasks"]))
        for h in result.json()["hosts"]
    }


def test_mitogen_and_linear_strategies_give_the_same_verdicts_and_diffs(lab_env):
    cli = lab_env
    ssh(cli, "127.0.21.1", "echo 'drift for both strategies' >> /etc/motd")
    linear = cli("check", "--json", env={"FLEET_STRATEGY": "linear"})
    mitogen = cli("check", "--json", env={"FLEET_STRATEGY": "mitogen"})
    assert linear.json()["run"]["strategy"] == "linear"
    assert mitogen.json()["run"]["strategy"] == "mitogen_linear"
    assert linear.code == mitogen.code == 2
    assert verdict_digest(linear) == verdict_digest(mitogen)
    assert verdict_digest(linear)["db1"][0] == "drifted"


def test_ssh_connections_outlive_a_run_and_serve_both_strategies_until_closed(lab_env):
    from fleet import runner

    cli = lab_env
    runner.close_connections(control_dir(cli.data_dir))
    first = cli("check", "--json", "--limit", "web1,web2", env={"FLEET_STRATEGY": "mitogen"})
    masters = ssh_masters(cli.data_dir)
    assert len(masters) == 2, "one master per host stays up after the run"
    again = cli("check", "--json", "--limit", "web1,web2", env={"FLEET_STRATEGY": "linear"})
    assert ssh_masters(cli.data_dir) == masters, "the next run, of either strategy, reuses the same connections"
    assert verdict_digest(again) == verdict_digest(first)

    assert runner.close_connections(control_dir(cli.data_dir)) == 2
    wait_until_gone = time.monotonic() + 10
    while ssh_masters(cli.data_dir) and time.monotonic() < wait_until_gone:
        time.sleep(0.2)
    assert ssh_masters(cli.data_dir) == {}
    fresh = cli("check", "--json", "--limit", "web1,web2")
    assert verdict_digest(fresh) == verdict_digest(first)
    assert set(ssh_masters(cli.data_dir).values()).isdisjoint(masters.values())


def test_the_example_roles_are_fully_checkable(lab_env):
    result = lab_env("check", "--json", "--limit", "web1")
    host = result.json()["hosts"][0]
    assert host["unverified_tasks"] == [], "the example roles are written to be checkable"
    assert host["coverage"]["verified"] == host["coverage"]["total"] > 0
    assert [(t["task"], t["changed"]) for t in host["executed_in_check"]] == [
        ("Test the full sshd configuration", False)], "a read-only probe runs in check mode, and is listed"


def test_broken_inventory_is_rejected_and_last_good_revision_kept(lab_env):
    cli = lab_env
    good = cli("check", "--json", "--limit", "db1")
    assert good.code in (0, 2), good.stderr
    good_sha = good.json()["run"]["revision"]

    hosts_file = cli.repo / "inventory" / "hosts.yml"
    original = hosts_file.read_text()
    hosts_file.write_text(original + "  broken: [unclosed\n")
    git(cli.repo, "commit", "-qam", "break the inventory")
    try:
        rejected = cli("check")
        assert rejected.code == 1
        assert "rejected" in rejected.stderr and "inventory" in rejected.stderr
        assert "Traceback" not in rejected.stderr
        assert good_sha[:12] in rejected.stderr, "the message names the revision that stays desired"

        listing = cli("revisions", "--json").json()
        assert listing["source"]["desired"] == good_sha
        bad = listing["revisions"][0]
        assert bad["status"] == "rejected" and "hosts.yml" in bad["error"]
        assert not bad["desired"]
        runs_after = cli("runs", "--json").json()["runs"]
        assert runs_after[0]["revision"] == good_sha, "nothing ran from the rejected revision"
    finally:
        hosts_file.write_text(original)
        git(cli.repo, "commit", "-qam", "fix the inventory")
    fixed = cli("check", "--json", "--limit", "db1")
    assert fixed.code in (0, 2)
    assert fixed.json()["run"]["revision"] != good_sha


def test_stopped_host_is_reported_unreachable_within_seconds(lab_env):
    from fleet import lab

    cli = lab_env
    lab.stop_host(cli.data_dir / "lab", "db2")
    started = time.monotonic()
    result = cli("check", "--json", "--limit", "db2")
    elapsed = time.monotonic() - started
    assert result.code == 3
    host = result.json()["hosts"][0]
    assert host["status"] == "unreachable"
    assert "127.0.21.2" in host["message"]
    assert elapsed < 20, f"an unreachable host must be reported within seconds, took {elapsed:.1f}s"
    assert result.json()["run"]["status"] == "failed"


def forge_stored_pin(cli, name: str, key_b64: str) -> None:
    """Pin a key the host does not have, in the store the `fleet` command uses (the truth its known_hosts copies)."""
    from fleet.settings import load_settings
    from fleet.store import pins
    from fleet.store.db import open_store

    settings = load_settings(flags={"data_dir": str(cli.data_dir), "repo": str(cli.repo)}, environ=dict(os.environ),
                             cwd=cli.cwd)
    with open_store(settings):
        pins.write_known_hosts(settings.known_hosts_path)  # a store emptied for this test adopts the lab's pins
        pins.replace_pin(name, "ssh-ed25519", key_b64, "test")


def test_changed_host_key_blocks_the_host_until_accepted(lab_env):
    cli = lab_env
    forge_stored_pin(cli, "127.0.20.2", "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")

    blocked = cli("check", "--json", "--limit", "web2")
    assert blocked.code == 3
    host = blocked.json()["hosts"][0]
    assert host["status"] == "failed" and "host key" in host["message"]
    assert "fleet hosts accept-key web2" in host["message"]
    status = {h["name"]: h for h in cli("status", "--json").json()["hosts"]}
    assert status["web2"]["key_blocked"] is True

    accepted = cli("hosts", "accept-key", "web2")
    assert accepted.code == 0, accepted.stderr
    after = cli("check", "--json", "--limit", "web2")
    assert after.code in (0, 2)
    assert after.json()["hosts"][0]["status"] in ("in_sync", "drifted")
    status = {h["name"]: h for h in cli("status", "--json").json()["hosts"]}
    assert status["web2"]["key_blocked"] is False


def test_rewritten_history_is_flagged(lab_env):
    cli = lab_env
    converged = cli("converge", "--yes", "--json", "--limit", "db1")
    assert converged.code == 0, converged.stdout + converged.stderr
    converged_sha = converged.json()["run"]["revision"]
    first_commit = git(cli.repo, "rev-list", "--max-parents=0", "HEAD").strip()
    git(cli.repo, "reset", "-q", "--hard", first_commit)  # drop every later commit, as a force-push would
    (cli.repo / "NOTES.md").write_text("history rewritten\n")
    git(cli.repo, "add", "NOTES.md")
    git(cli.repo, "commit", "-qm", "rewritten")
    rewritten = git(cli.repo, "rev-parse", "HEAD").strip()
    assert cli("check", "--limit", "db1").code in (0, 2)
    listed = {r["sha"]: r for r in cli("revisions", "--json").json()["revisions"]}
    assert listed[rewritten]["rewrites_history"] is True
    assert listed[converged_sha]["rewrites_history"] is False
    assert "[history rewritten]" in cli("revisions").stdout


def test_run_timeout_stops_the_whole_ansible_tree_and_keeps_partial_results(lab_env):
    cli = lab_env
    (cli.repo / "playbooks" / "slow.yml").write_text(
        "- hosts: web1\n  gather_facts: false\n  tasks:\n"
        "    - name: quick\n      ansible.builtin.ping:\n"
        "    - name: slow\n      ansible.builtin.command: sleep 120\n      check_mode: false\n"
    )
    git(cli.repo, "add", "playbooks/slow.yml")
    git(cli.repo, "commit", "-qm", "a slow playbook")
    env_timeout = {"FLEET_RUN_TIMEOUT": "8"}
    started = time.monotonic()
    result = cli("--playbook", "playbooks/slow.yml", "check", "--json", env=env_timeout)
    assert time.monotonic() - started < 60
    assert result.code == 3
    run = result.json()["run"]
    assert run["status"] == "timeout" and "timeout of 8s" in run["error"]
    assert hosts_by_name(result)["web1"]["status"] == "incomplete"
    shown = {h["name"]: h for h in cli("show", str(run["id"]), "--json").json()["hosts"]}
    assert [t["task"] for t in shown["web1"]["tasks"]] == ["quick"], "results before the stop are kept"
    leftovers = ansible_processes(cli.data_dir)
    assert leftovers == [], f"ansible processes outlived the run: {leftovers}"
    web1 = next(h for h in cli("status", "--json").json()["hosts"] if h["name"] == "web1")
    assert web1["status"] != "incomplete", "a stopped run proves nothing, so the host keeps its last status"
