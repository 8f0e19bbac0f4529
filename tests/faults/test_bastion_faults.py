"""A bastion under faults, on a real `fleet serve`: its host key changes, it goes down.

Hosts behind the lab's jump host (see tests/integration/test_bastion.py) are
checked by the controller on request. A changed jump host key must block
every host behind it before fleet authenticates to the impostor, with a
message naming the jump host and the command that accepts its new key; a
jump host that is down must make those hosts `unreachable`, naming the jump
host, not the hosts. Throughout, the controller answers healthz.
"""

from __future__ import annotations

from pathlib import Path

from fleet import lab
from tests.conftest import FleetCli, ServeProcess, wait_for
from tests.faults.conftest import HealthWatch
from tests.integration.test_bastion import BASTION, host_key, jump_lab, pinned  # noqa: F401 (a fixture)

FINAL = {"successful", "failed", "canceled", "interrupted", "timeout"}
BEHIND = {"web1", "db1"}


def lab_dir(cli: FleetCli) -> Path:
    return cli.data_dir / "lab"


def show(cli: FleetCli, run_id: int) -> dict:
    result = cli("show", str(run_id), "--json")
    assert result.code == 0, result.stderr
    return result.json()


def idle(cli: FleetCli) -> bool:
    runs = cli("runs", "--json")
    return runs.code == 0 and all(r["status"] in FINAL for r in runs.json()["runs"])


def checked(cli: FleetCli) -> dict:
    """Ask the controller for a check once nothing else runs; its `fleet show --json` once it has ended."""
    wait_for(lambda: idle(cli), 300, "the controller's runs to end")
    requested = cli("request", "check", "--json")
    assert requested.code == 0, requested.stderr
    run_id = requested.json()["run"]["id"]
    return wait_for(lambda: (shown := show(cli, run_id))["run"]["status"] in FINAL and shown, 300,
                    f"check {run_id} to end")


def hosts_of(shown: dict) -> dict[str, dict]:
    return {h["name"]: h for h in shown["hosts"]}


def serving(cli: FleetCli) -> ServeProcess:
    serve = ServeProcess(cli, poll_seconds=2)
    serve.start()
    return serve


def test_a_changed_jump_host_key_blocks_every_host_behind_it_until_accepted(jump_lab):
    cli = jump_lab
    serve = serving(cli)
    try:
        with HealthWatch(serve, "bastion: the jump host's key changes") as watch:
            before = checked(cli)
            assert {h["status"] for h in before["hosts"]} <= {"drifted", "in_sync", "unverified"}, before["hosts"]
            old_key = pinned(cli, BASTION)

            lab.restart_host(lab_dir(cli), "bastion", new_key=True)  # a reinstalled host, or an impostor
            blocked = checked(cli)
            hosts = hosts_of(blocked)
            assert set(hosts) == BEHIND
            for host in hosts.values():
                assert host["status"] == "failed"
                assert f"SSH host key of jump host root@{BASTION}:22 changed" in host["message"]
                assert f"fleet hosts accept-key {host['name']} --jump {BASTION}" in host["message"]
                assert host["tasks"] == [], "nothing ran through the changed jump host"
            assert pinned(cli, BASTION) == old_key, "a changed key is never pinned by itself"
            status = {h["name"]: h for h in cli("status", "--json").json()["hosts"]}
            assert {status[name]["status"] for name in BEHIND} == {"failed"}
            assert "jump host" in status["web1"]["message"]

            accepted = cli("hosts", "accept-key", "web1", "--jump", BASTION)
            assert accepted.code == 0, accepted.stderr
            assert pinned(cli, BASTION) == host_key(cli, "bastion") != old_key
            after = checked(cli)
            assert {h["status"] for h in after["hosts"]} <= {"drifted", "in_sync", "unverified"}, after["hosts"]
        assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"
    finally:
        serve.stop()


def test_a_jump_host_that_is_down_makes_the_hosts_behind_it_unreachable_naming_it(jump_lab):
    cli = jump_lab
    serve = serving(cli)
    try:
        with HealthWatch(serve, "bastion: the jump host is down") as watch:
            lab.stop_host(lab_dir(cli), "bastion")
            down = checked(cli)
            for host in hosts_of(down).values():
                assert host["status"] == "unreachable"
                assert host["message"].startswith(f"cannot connect to jump host root@{BASTION}:22")
                assert f"on the way to {host['name']}.lab:22" in host["message"]
            assert set(hosts_of(down)) == BEHIND
            listed = cli("runs")
            assert listed.code == 0 and str(down["run"]["id"]) in listed.stdout

            lab.restart_host(lab_dir(cli), "bastion")
            back = checked(cli)
            assert {h["status"] for h in back["hosts"]} <= {"drifted", "in_sync", "unverified"}, back["hosts"]
        assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"
    finally:
        serve.stop()
