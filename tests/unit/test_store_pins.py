"""Host-key pins in the store (fleet.store.pins): the known_hosts file as a copy of the store, the upgrade
that adopts an old file, first-contact pins recorded, a race lost to another process, accept-key's replace;
and a whole run (fake runner) whose fresh pin loses such a race. On SQLite, and on PostgreSQL when
FLEET_TEST_DATABASE_URL names one (tests/conftest.py)."""

from __future__ import annotations

import stat
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from sqlalchemy import insert, select

from fleet import hostkeys
from fleet.fake_runner import FakeRunner
from fleet.hostkeys import Hop, Probe, Target
from fleet.jobs import execute_run
from fleet.store import db, pins
from fleet.store.db import open_store
from fleet.store.models import Host, HostKey
from fleet.vocabulary import utcnow
from tests.conftest import settings_for_source
from tests.unit.store_fixtures import temporary_store
from tests.unit.test_jobs import CASE_HOSTS, FLEET_YML, RECORDED


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> list[tuple[str, str]]:
    """Four real ed25519 public keys as (type, base64)."""
    folder = tmp_path_factory.mktemp("keys")
    found = []
    for index in range(4):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / f"k{index}")],
                       check=True, stdin=subprocess.DEVNULL)
        key_type, key_b64 = (folder / f"k{index}.pub").read_text().split()[:2]
        found.append((key_type, key_b64))
    return found


@pytest.fixture
def ecdsa() -> tuple[str, str]:
    key = paramiko.ECDSAKey.generate()
    return key.get_name(), key.get_base64()


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def file_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def line(name: str, key: tuple[str, str]) -> str:
    return f"{name} {key[0]} {key[1]}"


def rival_pins(name: str, key: tuple[str, str]) -> None:
    """Another process pins `key` for `name`: its own connection, its own committed transaction."""
    with db.engine.connect() as connection:
        connection.execute(insert(HostKey).values(name=name, key_type=key[0], key_b64=key[1], pinned_at=utcnow(),
                                                  pinned_by="other:1"))
        connection.commit()


def stored(name: str) -> list[tuple[str, str, str]]:
    return [p for p in pins.stored_pins() if p[0] == name]


# --- the file is a copy of the store -----------------------------------------------------------

def test_the_file_holds_exactly_the_stores_pins_private(store, tmp_path, keys):
    pins.replace_pin("10.0.0.1", *keys[0], by="test")
    pins.replace_pin("[10.0.0.2]:2222", *keys[1], by="test")
    path = tmp_path / "ssh" / "known_hosts"
    path.parent.mkdir(mode=0o755)
    path.write_text(line("10.0.0.9", keys[2]) + "\n" + line("10.0.0.1", keys[3]) + "\n")  # an old copy

    written = pins.write_known_hosts(path)

    assert file_lines(path) == [line("10.0.0.1", keys[0]), line("[10.0.0.2]:2222", keys[1])]
    assert written == [("10.0.0.1", *keys[0]), ("[10.0.0.2]:2222", *keys[1])]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert hostkeys.pinned_entries(path) == written, "paramiko (the probe) reads what was written"
    assert [p.name for p in path.parent.iterdir()] == ["known_hosts"], "no temporary file is left behind"


def test_an_empty_store_writes_an_empty_file(store, tmp_path):
    path = tmp_path / "ssh" / "known_hosts"
    assert pins.write_known_hosts(path) == [] and path.read_text() == ""


def test_one_probe_at_a_time_holds_a_data_directorys_file(tmp_path):
    path = tmp_path / "ssh" / "known_hosts"
    entered = threading.Event()
    order = []

    def second_run():
        with pins.probing(path):
            order.append("second")
        entered.set()

    with pins.probing(path):
        other = threading.Thread(target=second_run)
        other.start()
        assert not entered.wait(0.5), "a second run waits while the first probes and records"
        order.append("first")
    other.join(5)
    assert order == ["first", "second"]
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# --- the upgrade: an old file adopted once ----------------------------------------------------

def test_an_upgrade_adopts_the_files_pins_into_an_empty_store_once(store, tmp_path, keys):
    path = tmp_path / "known_hosts"
    old = [line("10.0.0.1", keys[0]), line("[10.0.0.2]:2222", keys[1])]
    path.write_text("\n".join(old) + "\n")

    pins.write_known_hosts(path)  # the first probe after the upgrade

    assert pins.stored_pins() == [("10.0.0.1", *keys[0]), ("[10.0.0.2]:2222", *keys[1])]
    assert file_lines(path) == old, "the upgraded controller keeps trusting what it trusted"
    assert all("adopted from" in by for by in db.session.scalars(select(HostKey.pinned_by)))

    path.write_text("\n".join(old) + "\n" + line("10.0.0.3", keys[2]) + "\n")  # another data dir's old file
    assert pins.adopt_file_pins(path) == 0, "a store holding pins is the truth: nothing more is adopted"
    pins.write_known_hosts(path)
    assert "10.0.0.3" not in path.read_text()


# --- first-contact pins, and the race ---------------------------------------------------------

def test_first_contact_pins_go_to_the_store(store, tmp_path, keys):
    pins.replace_pin("10.0.0.1", *keys[0], by="test")
    path = tmp_path / "known_hosts"
    written = pins.write_known_hosts(path)
    with path.open("a") as known:  # what the probe does on first contact
        known.write(line("10.0.0.2", keys[1]) + "\n")

    assert pins.record_new_pins(path, "worker-a:7", written) == []

    assert stored("10.0.0.2") == [("10.0.0.2", *keys[1])]
    row = db.session.scalars(select(HostKey).where(HostKey.name == "10.0.0.2")).one()
    assert row.pinned_by == "worker-a:7" and row.pinned_at is not None
    assert file_lines(path) == [line("10.0.0.1", keys[0]), line("10.0.0.2", keys[1])]


def test_a_fresh_pin_that_lost_the_race_gives_way_to_the_stores(store, tmp_path, keys):
    path = tmp_path / "known_hosts"
    written = pins.write_known_hosts(path)
    path.write_text(line("10.0.0.2", keys[1]) + "\n" + line("10.0.0.3", keys[2]) + "\n")  # this probe pinned both
    rival_pins("10.0.0.2", keys[3])  # another worker pinned a different key for one of them, first

    lost = pins.record_new_pins(path, "worker-a:7", written)

    assert lost == ["10.0.0.2"]
    assert stored("10.0.0.2") == [("10.0.0.2", *keys[3])], "the first pin stays"
    assert stored("10.0.0.3") == [("10.0.0.3", *keys[2])], "the other host's fresh pin is kept"
    assert file_lines(path) == [line("10.0.0.2", keys[3]), line("10.0.0.3", keys[2])], "the file follows the store"


def test_the_same_key_pinned_by_two_processes_at_once_is_no_conflict(store, tmp_path, keys):
    path = tmp_path / "known_hosts"
    written = pins.write_known_hosts(path)
    path.write_text(line("10.0.0.2", keys[1]) + "\n")
    rival_pins("10.0.0.2", keys[1])  # the unique (name, type) refuses our insert: it is re-read, and agrees

    assert pins.record_new_pins(path, "worker-a:7", written) == []
    assert stored("10.0.0.2") == [("10.0.0.2", *keys[1])]


def test_a_rival_key_of_another_type_wins_and_ours_is_taken_back(store, tmp_path, keys, ecdsa):
    path = tmp_path / "known_hosts"
    written = pins.write_known_hosts(path)
    path.write_text(line("10.0.0.2", keys[1]) + "\n")
    rival_pins("10.0.0.2", ecdsa)  # no unique violation: the name is what counts

    assert pins.record_new_pins(path, "worker-a:7", written) == ["10.0.0.2"]
    assert stored("10.0.0.2") == [("10.0.0.2", *ecdsa)], "never two different keys trusted for one name"
    assert file_lines(path) == [line("10.0.0.2", ecdsa)]


def test_without_what_was_written_only_names_the_store_lacks_are_new(store, tmp_path, keys):
    pins.replace_pin("10.0.0.1", *keys[0], by="test")
    path = tmp_path / "known_hosts"
    path.write_text(line("10.0.0.1", keys[3]) + "\n" + line("10.0.0.2", keys[1]) + "\n")

    assert pins.record_new_pins(path, "cli:root") == []
    assert pins.stored_pins() == [("10.0.0.1", *keys[0]), ("10.0.0.2", *keys[1])]
    assert file_lines(path) == [line("10.0.0.1", keys[0]), line("10.0.0.2", keys[1])]


# --- accept-key -------------------------------------------------------------------------------

def test_replace_pin_removes_the_names_other_keys(store, keys, ecdsa):
    pins.replace_pin("10.0.0.1", *keys[0], by="test")
    rival_pins("10.0.0.1", ecdsa)
    pins.replace_pin("10.0.0.2", *keys[2], by="test")

    pins.replace_pin("10.0.0.1", *keys[1], by="cli:admin")

    assert pins.stored_pins() == [("10.0.0.1", *keys[1]), ("10.0.0.2", *keys[2])]


def test_replace_pins_from_file_takes_the_names_keys_as_accept_key_wrote_them(store, tmp_path, keys):
    pins.replace_pin("10.0.0.1", *keys[0], by="test")
    path = tmp_path / "known_hosts"
    path.write_text(line("10.0.0.1", keys[1]) + "\n" + line("10.0.0.2", keys[2]) + "\n")

    assert pins.replace_pins_from_file(path, "10.0.0.1", "cli:admin") is True
    assert pins.replace_pins_from_file(path, "10.0.0.7", "cli:admin") is False

    assert pins.stored_pins() == [("10.0.0.1", *keys[1])], "only the accepted name changes"


def test_accepted_name_is_the_host_or_the_jump_host_on_its_way():
    target = Target("web1", "web1.lab", 22, (Hop("10.0.0.254", 2222, "root"),))
    assert hostkeys.accepted_name(target) == "web1.lab"
    assert hostkeys.accepted_name(target, "10.0.0.254") == "[10.0.0.254]:2222"
    assert hostkeys.accepted_name(target, "10.9.9.9") == "", "not a jump host of web1"


# --- a whole run whose fresh pin loses the race -----------------------------------------------

@dataclass(eq=False)  # compared by identity, as FakeRunner
class RacedRunner(FakeRunner):
    """Probes as fleet's probe does against the known_hosts file: every host offers `offered`, and a host met
    for the first time is pinned; while the first probe runs, another process pins `rival` for `raced`."""

    known_hosts: Path = Path()
    offered: tuple[str, str] = ("", "")
    raced: str = ""
    rival: tuple[str, str] = ("", "")
    probes: list[list[str]] = field(default_factory=list)

    def probe_hosts(self, hosts) -> dict[str, Probe]:
        self.probes.append([h.name for h in hosts])
        if len(self.probes) == 1:
            rival_pins(self.raced, self.rival)
        return {h.name: self._probe(h) for h in hosts}

    def _probe(self, host) -> Probe:
        name = hostkeys.known_hosts_name(host.address, host.port)
        pinned = {(t, b) for n, t, b in hostkeys.pinned_entries(self.known_hosts) if n == name}
        if not pinned:
            with self.known_hosts.open("a") as known:
                known.write(line(name, self.offered) + "\n")
            return Probe(host.name, "pinned", "pinned on first contact")
        if self.offered in pinned:
            return Probe(host.name, "ok")
        return Probe(host.name, "key_changed", f"SSH host key of {name} changed; run `fleet hosts accept-key "
                     f"{host.name}`")


def test_a_host_whose_fresh_pin_lost_the_race_is_blocked_like_a_changed_key(tmp_path, keys):
    settings = settings_for_source(tmp_path, FLEET_YML)
    raced = CASE_HOSTS[0]
    runner = RacedRunner(events=RECORDED, hosts=CASE_HOSTS, known_hosts=settings.known_hosts_path,
                         offered=keys[0], raced=hostkeys.known_hosts_name(raced.address, raced.port), rival=keys[1])
    with open_store(settings):
        report = execute_run(settings, "check", runner=runner)
        verdicts = {v.name: v for v in report.verdicts}
        host = db.session.scalars(select(Host).where(Host.name == raced.name)).one()

        assert verdicts[raced.name].status == "failed"
        assert "another fleet process pinned a different SSH host key" in verdicts[raced.name].message
        assert f"fleet hosts accept-key {raced.name}" in verdicts[raced.name].message
        assert host.key_blocked is True
        assert raced.name not in runner.job_hosts[0], "Ansible never went to the host"
        assert len(runner.probes) == 2, "the usable hosts were probed again against the store's pins"
        assert pins.stored_pins().count((runner.raced, *keys[1])) == 1
        assert not [v for v in report.verdicts if v.name != raced.name and "another fleet" in v.message]
        assert set(runner.job_hosts[0]) == {h.name for h in CASE_HOSTS} - {raced.name}
    assert line(runner.raced, keys[1]) in file_lines(settings.known_hosts_path)
