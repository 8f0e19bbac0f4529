"""Hosts behind a bastion, for real: a lab jump host, and hosts only it can name.

`fleet lab up --jump` starts a `bastion` and hosts whose inventory names them
`web1.lab` / `db1.lab` with `-o ProxyJump=root@<bastion>`. Those names are in
the bastion's own /etc/hosts and nowhere on this machine, so a check that
reaches them at all went through the bastion: fleet's paramiko probe (over a
direct-tcpip channel) and Ansible's ssh (OpenSSH's ProxyJump, reading fleet's
ssh_config), with Mitogen's strategy and with linear.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FleetCli, lab_ssh, make_source

pytestmark = pytest.mark.lab

# The subnets given to the bastion tests: web hosts and the bastion on 127.0.28.x, db hosts on 127.0.29.x.
SUBNET = 28
BASTION = f"127.0.{SUBNET}.254"
BEHIND = {"web1": f"127.0.{SUBNET}.1", "db1": f"127.0.{SUBNET + 1}.1"}


@pytest.fixture(scope="module")
def jump_lab(tmp_path_factory):
    """A bastion and two hosts behind it, a git source for those two, and a `fleet` bound to both."""
    root = tmp_path_factory.mktemp("bastion")
    cli = FleetCli(root / "data", root / "source", root)
    up = cli("lab", "up", "--hosts", "2", "--subnet", str(SUBNET), "--jump")
    try:
        assert up.code == 0, up.stderr
        make_source(root / "source", (cli.data_dir / "lab" / "hosts.yml").read_text())
        yield cli
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def known_hosts(cli: FleetCli) -> Path:
    return cli.data_dir / "ssh" / "known_hosts"


def pinned(cli: FleetCli, name: str) -> str | None:
    """The base64 key known_hosts pins for `name`, if any."""
    for line in known_hosts(cli).read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return fields[2]
    return None


def forget_pin(cli: FleetCli, name: str) -> None:
    """Unpin `name` in the store the `fleet` command uses, and so in its known_hosts (a copy of the store's pins)."""
    from sqlalchemy import delete

    from fleet.settings import load_settings
    from fleet.store import pins
    from fleet.store.db import db, open_store
    from fleet.store.models import HostKey

    settings = load_settings(flags={"data_dir": str(cli.data_dir), "repo": str(cli.repo)}, environ=dict(os.environ),
                             cwd=cli.cwd)
    with open_store(settings):
        pins.write_known_hosts(settings.known_hosts_path)  # a store emptied for this test adopts the lab's pins
        db.session.execute(delete(HostKey).where(HostKey.name == name))
        db.session.commit()
    kept = [line for line in known_hosts(cli).read_text().splitlines() if not line.startswith(name + " ")]
    known_hosts(cli).write_text("".join(f"{line}\n" for line in kept))  # what the store holds now


def host_key(cli: FleetCli, lab_host: str) -> str:
    """The public host key a lab host really has."""
    return (cli.data_dir / "lab" / "hosts" / lab_host / "ssh_host_ed25519_key.pub").read_text().split()[1]


def ssh_behind(cli: FleetCli, name: str, command: str) -> str:
    """A command on a host behind the bastion, the way Ansible's ssh gets there (fleet's ssh_config, ProxyJump)."""
    ssh_dir = cli.data_dir / "ssh"
    return subprocess.run(
        ["ssh", "-F", str(ssh_dir / "ssh_config"), "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
         "-o", "StrictHostKeyChecking=yes", "-J", f"root@{BASTION}", f"root@{name}.lab", command],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout


def statuses(result) -> dict[str, str]:
    return {h["name"]: h["status"] for h in result.json()["hosts"]}


def test_only_the_bastion_can_name_the_hosts_behind_it(jump_lab):
    cli = jump_lab
    assert ".lab" not in Path("/etc/hosts").read_text(), "this machine must not resolve the lab's names"
    resolved = lab_ssh(cli, BASTION, "getent hosts web1.lab db1.lab")
    assert f"{BEHIND['web1']}" in resolved and f"{BEHIND['db1']}" in resolved


def test_a_check_goes_through_the_jump_and_pins_both_keys_on_first_contact(jump_lab):
    cli = jump_lab
    # The lab pinned the bastion; forget it, so the jump host too is trusted on first use, like any host.
    forget_pin(cli, BASTION)
    assert pinned(cli, BASTION) is None and pinned(cli, "web1.lab") is None

    first = cli("check", "--json")
    assert first.code == 2, first.stdout + first.stderr
    assert statuses(first) == {"web1": "drifted", "db1": "drifted"}, "checked, not unreachable"
    assert first.json()["run"]["strategy"] == "mitogen_linear", "Mitogen honours the inventory's ProxyJump"
    assert pinned(cli, BASTION) == host_key(cli, "bastion")
    assert pinned(cli, "web1.lab") == host_key(cli, "web1")
    assert pinned(cli, "db1.lab") == host_key(cli, "db1")
    shown = cli("status", "--json").json()["hosts"]
    assert {h["name"]: h["facts"]["os"].startswith("Debian") for h in shown} == {"web1": True, "db1": True}

    linear = cli("check", "--json", env={"FLEET_STRATEGY": "linear"})
    assert linear.code == 2, linear.stdout + linear.stderr
    assert linear.json()["run"]["strategy"] == "linear"
    assert statuses(linear) == {"web1": "drifted", "db1": "drifted"}


def test_a_converge_through_the_jump_lands_on_the_hosts_behind_it(jump_lab):
    cli = jump_lab
    applied = cli("converge", "--yes", "--json")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert statuses(applied) == {"web1": "in_sync", "db1": "in_sync"}
    again = cli("check", "--json")
    assert again.code == 0, again.stdout
    assert statuses(again) == {"web1": "in_sync", "db1": "in_sync"}
    assert ssh_behind(cli, "web1", "hostname").strip() == "web1"
    assert "web1 (web)" in ssh_behind(cli, "web1", "cat /etc/motd"), "the converge wrote web1's motd"
