"""Host-key pins shared through the store, for real: two data directories (the controller's and a worker's,
say) with their own known_hosts files and SSH keys, one store, and real lab hosts.

The lab is one host behind a bastion, both on 127.0.43.x: `web1` (reached as
`web1.lab` through the bastion) and the bastion itself, which the source's
inventory also lists as a host reached directly. What one data directory
pins, the other trusts; a key the store no longer trusts blocks the host in
both; a key accepted in one is accepted in both.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from fleet import lab
from tests.conftest import FleetCli, FleetResult, make_source

pytestmark = pytest.mark.lab

SUBNET = 43  # this file's own: web1 on 127.0.43.1, the bastion on 127.0.43.254
BASTION = f"127.0.{SUBNET}.254"
WEB1 = "web1.lab"  # web1's known_hosts name: only the bastion resolves it
FORGED = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"  # a valid ed25519 key, no host's


class SharedStoreCli(FleetCli):
    """`fleet` with its own data directory and the store it shares with the other data directory."""

    def __init__(self, data_dir: Path, repo: Path, cwd: Path, database: Path):
        super().__init__(data_dir, repo, cwd)
        self.database = database

    def __call__(self, *args: str, **kwargs) -> FleetResult:
        env = {"FLEET_DATABASE_URL": f"sqlite:///{self.database}", **(kwargs.pop("env", None) or {})}
        return super().__call__(*args, env=env, **kwargs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(a, b): `a` started the lab (its key is on the hosts); `b` has a copy of that key and nothing pinned."""
    root = tmp_path_factory.mktemp("pins")
    a = SharedStoreCli(root / "a", root / "source", root, root / "shared.db")
    b = SharedStoreCli(root / "b", root / "source", root, root / "shared.db")
    up = a("lab", "up", "--hosts", "1", "--subnet", str(SUBNET), "--jump")
    try:
        assert up.code == 0, up.stderr
        make_source(root / "source", inventory_with_bastion(a.data_dir / "lab" / "hosts.yml"))
        (b.data_dir / "ssh").mkdir(parents=True, mode=0o700)
        for name in ("id_ed25519", "id_ed25519.pub"):  # a worker's own key, authorised on the hosts like a's
            (b.data_dir / "ssh" / name).write_bytes((a.data_dir / "ssh" / name).read_bytes())
            (b.data_dir / "ssh" / name).chmod(0o600)
        yield a, b
    finally:
        down = a("lab", "down")
        assert down.code == 0, down.stderr


def inventory_with_bastion(lab_inventory: Path) -> str:
    """The lab's inventory (web1 behind the bastion) with the bastion as a host too, reached directly."""
    inventory = yaml.safe_load(lab_inventory.read_text())
    inventory["all"]["children"]["jump"] = {"hosts": {"bastion": {"ansible_host": BASTION}}}
    return yaml.safe_dump(inventory)


def store_pins(cli: SharedStoreCli) -> dict[str, tuple[str, str]]:
    """known_hosts name -> (base64 key, pinned_by), read from the shared store with SQL."""
    with sqlite3.connect(cli.database) as connection:
        return {name: (key, by) for name, key, by in
                connection.execute("SELECT name, key_b64, pinned_by FROM host_keys")}


def file_pins(cli: FleetCli) -> dict[str, str]:
    lines = (cli.data_dir / "ssh" / "known_hosts").read_text().splitlines()
    return {fields[0]: fields[2] for fields in map(str.split, lines)}


def host_key(a: FleetCli, lab_host: str) -> str:
    return (a.data_dir / "lab" / "hosts" / lab_host / "ssh_host_ed25519_key.pub").read_text().split()[1]


def checked(cli: FleetCli) -> dict[str, dict]:
    result = cli("check", "--json")
    assert result.code in (2, 3), result.stdout + result.stderr  # drift found, or a host blocked
    return {h["name"]: h for h in result.json()["hosts"]}


def key_blocked(cli: FleetCli) -> dict[str, bool]:
    return {h["name"]: h["key_blocked"] for h in cli("status", "--json").json()["hosts"]}


def test_lab_up_pins_the_bastion_in_the_store(pair):
    a, _ = pair
    assert store_pins(a)[BASTION][0] == host_key(a, "bastion")
    assert store_pins(a)[BASTION][1].startswith("cli:")
    assert file_pins(a) == {BASTION: host_key(a, "bastion")}


def test_a_first_check_pins_in_the_store_what_it_met_first(pair):
    a, _ = pair
    hosts = checked(a)
    assert {name: h["status"] for name, h in hosts.items()} == {"web1": "drifted", "bastion": "drifted"}
    assert store_pins(a)[WEB1][0] == host_key(a, "web1"), "pinned on first contact, through the bastion"
    assert not store_pins(a)[WEB1][1].startswith("cli:"), "pinned by the checking process (host:pid)"
    assert file_pins(a) == {name: key for name, (key, _) in store_pins(a).items()}


def test_a_data_dir_with_an_empty_known_hosts_trusts_the_stores_pins(pair):
    a, b = pair
    (b.data_dir / "ssh" / "known_hosts").write_text("")
    before = store_pins(a)

    hosts = checked(b)

    assert {name: h["status"] for name, h in hosts.items()} == {"web1": "drifted", "bastion": "drifted"}
    assert file_pins(b) == {name: key for name, (key, _) in before.items()}, "written from the store"
    assert store_pins(a) == before, "nothing pinned anew: b trusted a's pins"


def test_a_changed_host_key_is_enforced_by_the_other_data_dir_until_accepted_in_one(pair):
    a, b = pair
    old = host_key(a, "web1")
    lab.restart_host(a.data_dir / "lab", "web1", new_key=True)  # reinstalled, or an impostor

    blocked = checked(b)  # b never saw web1's old key in its own file before this run wrote it from the store
    assert blocked["web1"]["status"] == "failed" and "host key" in blocked["web1"]["message"]
    assert "fleet hosts accept-key web1" in blocked["web1"]["message"]
    assert blocked["bastion"]["status"] == "drifted"
    assert key_blocked(b)["web1"] is True
    assert store_pins(a)[WEB1][0] == old, "a changed key is never pinned by itself"
    assert checked(a)["web1"]["status"] == "failed", "the controller's data dir enforces the same pin"

    accepted = a("hosts", "accept-key", "web1")
    assert accepted.code == 0, accepted.stderr
    assert store_pins(a)[WEB1] == (host_key(a, "web1"), store_pins(a)[WEB1][1]) and host_key(a, "web1") != old
    assert checked(b)["web1"]["status"] == "drifted", "accepted in a, trusted in b"
    assert key_blocked(b)["web1"] is False


def test_a_pin_rewritten_in_the_store_blocks_the_host_and_every_host_behind_it(pair):
    a, b = pair
    with sqlite3.connect(a.database) as connection:
        connection.execute("UPDATE host_keys SET key_b64 = ? WHERE name = ?", (FORGED, BASTION))

    hosts = checked(b)

    assert hosts["bastion"]["status"] == "failed" and "fleet hosts accept-key bastion" in hosts["bastion"]["message"]
    assert hosts["web1"]["status"] == "failed"
    assert f"jump host root@{BASTION}:22 changed" in hosts["web1"]["message"]
    assert file_pins(b)[BASTION] == FORGED and file_pins(a)[BASTION] != FORGED, "a's file is a copy until a probes"

    accepted = b("hosts", "accept-key", "bastion")
    assert accepted.code == 0, accepted.stderr
    assert store_pins(a)[BASTION][0] == host_key(a, "bastion")
    assert {name: h["status"] for name, h in checked(a).items()} == {"web1": "drifted", "bastion": "drifted"}
