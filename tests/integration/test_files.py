"""File modes with the real `fleet` command: nothing in the data directory is for other users, and a vault
password file others can read stops fleet before anything runs.

Every test runs fleet under umask 022 (what most users have), so a private mode
proves fleet set it, not the test's environment.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import FleetCli, lab_ssh, make_source

LAB_SUBNET = 32  # this file's own: lab hosts on 127.0.32.x
UNREACHABLE = "all:\n  children:\n    web:\n      hosts:\n        web1: {ansible_host: 127.0.99.1}\n"


@pytest.fixture(autouse=True)
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def cli(tmp_path) -> FleetCli:
    return FleetCli(tmp_path / "data", make_source(tmp_path / "source", UNREACHABLE), tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def open_to_others(data_dir: Path, source: Path) -> list[str]:
    """Every path under the data directory with a group or other bit, except git objects a local clone
    hard-linked from the source repository (the same inode: the source's own file, with the source's mode)."""
    shared = {(p.stat().st_dev, p.stat().st_ino) for p in (source / ".git" / "objects").rglob("*") if p.is_file()}
    found = []
    for path in [data_dir, *data_dir.rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
            continue
        if (info.st_dev, info.st_ino) not in shared:
            found.append(f"{stat.S_IMODE(info.st_mode):04o} {path.relative_to(data_dir)}")
    return found


def test_a_check_under_umask_022_leaves_nothing_in_the_data_dir_open_to_others(cli):
    check = cli("check")
    assert check.code == 3, check.stderr  # web1 cannot be reached: the run went all the way through
    data = cli.data_dir
    assert open_to_others(data, cli.repo) == []
    assert mode(data) == 0o700
    assert mode(data / "fleet.db") == 0o600  # SQLite removed its -wal and -shm on close (the store tests see them)
    exports = list((data / "revisions").iterdir())
    assert exports and mode(data / "revisions") == 0o700
    assert mode(exports[0] / "playbooks" / "site.yml") == 0o600


def test_an_open_data_dir_of_an_older_fleet_is_closed_with_a_log_line_and_keeps_its_history(cli):
    assert cli("check").code == 3
    data = cli.data_dir
    for path, wide in [(data, 0o755), (data / "fleet.db", 0o644), (data / "revisions", 0o755),
                       (data / "ssh", 0o755)]:
        path.chmod(wide)
    runs = cli("runs", "--json")
    assert runs.code == 0, runs.stderr
    assert [r["id"] for r in runs.json()["runs"]] == [1]
    assert f"data directory {data} was open to other users" in runs.stderr
    assert "fleet.db was 0644" in runs.stderr
    assert (mode(data), mode(data / "fleet.db"), mode(data / "revisions"), mode(data / "ssh")) == (
        0o700, 0o600, 0o700, 0o700)
    again = cli("runs")
    assert "open to other users" not in again.stderr  # said once, when it was fixed


def vault_file(tmp_path: Path, bits: int, script: bool = False) -> Path:
    path = tmp_path / ("vault-client" if script else "vault-pass")
    path.write_text("#!/bin/sh\necho not-a-secret\n" if script else "not-a-secret\n")
    path.chmod(bits)
    return path


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604])
def test_a_vault_file_others_can_read_stops_check_before_anything_runs(cli, tmp_path, bits):
    vault = vault_file(tmp_path, bits)
    check = cli("check", env={"FLEET_VAULT_PASSWORD_FILE": str(vault)})
    assert check.code == 1
    assert f"vault password file {vault} can be read or changed by other users (mode {bits:04o})" in check.stderr
    assert f"chmod 600 {vault}" in check.stderr
    assert "Traceback" not in check.stderr
    assert not (cli.data_dir / "revisions").exists()  # not even the source was fetched
    assert cli("runs", "--json").json()["runs"] == []


@pytest.mark.parametrize("bits, script", [(0o600, False), (0o400, False), (0o700, True), (0o755, True)])
def test_a_private_vault_file_or_a_script_only_its_owner_can_change_is_accepted(cli, tmp_path, bits, script):
    vault = vault_file(tmp_path, bits, script)
    check = cli("check", env={"FLEET_VAULT_PASSWORD_FILE": str(vault)})
    assert check.code == 3, check.stderr  # it ran: web1 is simply unreachable
    assert "vault password file" not in check.stderr


def test_a_vault_script_anyone_can_change_is_refused(cli, tmp_path):
    vault = vault_file(tmp_path, 0o757, script=True)
    check = cli("converge", "--yes", env={"FLEET_VAULT_PASSWORD_FILE": str(vault)})
    assert check.code == 1
    assert f"vault password file {vault} is an executable vault script anyone can change" in check.stderr
    assert f"chmod o-w {vault}" in check.stderr
    assert cli("runs", "--json").json()["runs"] == []


def test_a_lab_check_under_umask_022_keeps_every_file_private_and_the_lab_host_a_normal_machine(tmp_path):
    cli = FleetCli(tmp_path / "data", tmp_path / "source", tmp_path)
    try:
        up = cli("lab", "up", "--hosts", "1", "--subnet", str(LAB_SUBNET))
        assert up.code == 0, up.stderr
        make_source(tmp_path / "source", (tmp_path / "data" / "lab" / "hosts.yml").read_text())
        check = cli("check", "--no-diff")
        assert check.code in (0, 2, 4), check.stdout + check.stderr  # Ansible ran on the host
        # fleet's umask stays fleet's: the host's own files get a machine's usual modes.
        assert lab_ssh(cli, f"127.0.{LAB_SUBNET}.1", "umask; stat -c %a / /run/sshd").split() == [
            "0022", "755", "755"]
        assert open_to_others(cli.data_dir, cli.repo) == []
        assert {mode(cli.data_dir / name) for name in ("lab", "ssh", "revisions")} == {0o700}
        assert mode(cli.data_dir / "ssh" / "id_ed25519") == 0o600
    finally:
        down = cli("lab", "down")
    assert down.code == 0, down.stderr
