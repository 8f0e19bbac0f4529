"""File faults on a real `fleet serve`: a vault password file others can read, a data directory open to them.

fleet refuses to hand Ansible a vault password others could read: at start
(serve exits 1 before it binds or runs anything) and before every run (a file
opened up while serving fails that run with the fix, and the controller keeps
answering). A data directory an older fleet left open is closed when serve
opens it, and everything serve writes afterwards is private.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import FleetCli, ServeProcess, make_source, wait_for
from tests.faults.conftest import HealthWatch

LAB_SUBNET = 32  # this file's own: lab hosts on 127.0.32.x
FINAL = {"successful", "failed", "canceled", "interrupted", "timeout"}


@pytest.fixture(autouse=True)
def umask_022():
    """What most users have: any private mode below is fleet's doing."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def vault_file(tmp_path: Path, bits: int) -> Path:
    vault = tmp_path / "vault-pass"
    vault.write_text("not-a-secret\n")
    vault.chmod(bits)
    return vault


def final_run(cli: FleetCli, run_id: int) -> dict:
    def ended():
        shown = cli("show", str(run_id), "--json")
        return shown.json()["run"] if shown.code == 0 and shown.json()["run"]["status"] in FINAL else None
    return wait_for(ended, 240, f"run {run_id} to end")


def test_serve_refuses_a_vault_file_others_can_read_before_it_serves_or_runs_anything(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    vault = vault_file(tmp_path, 0o644)
    serve = ServeProcess(cli, env={"FLEET_VAULT_PASSWORD_FILE": str(vault)})
    env = {**os.environ, "FLEET_DATA_DIR": str(cli.data_dir), "FLEET_REPO": str(cli.repo),
           "FLEET_BIND": f"127.0.0.1:{serve.port}", **serve.env}
    proc = subprocess.run([cli.fleet, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"vault password file {vault} can be read or changed by other users (mode 0644)" in proc.stderr
    assert f"chmod 600 {vault}" in proc.stderr and "Traceback" not in proc.stderr
    assert "web UI and API on" not in proc.stderr  # it never bound its port
    assert cli("runs", "--json").json()["runs"] == []


def test_a_vault_file_opened_up_while_serving_fails_the_next_run_with_the_fix_and_serve_keeps_answering(tmp_path):
    cli = FleetCli(tmp_path / "data", tmp_path / "source", tmp_path)
    vault = vault_file(tmp_path, 0o600)
    serve = ServeProcess(cli, env={"FLEET_VAULT_PASSWORD_FILE": str(vault)})
    try:
        up = cli("lab", "up", "--hosts", "1", "--subnet", str(LAB_SUBNET))
        assert up.code == 0, up.stderr
        make_source(tmp_path / "source", (cli.data_dir / "lab" / "hosts.yml").read_text())
        serve.start()
        with HealthWatch(serve, "vault password file opened to others while serving") as watch:
            vault.chmod(0o644)
            refused = final_run(cli, cli("request", "check", "--json").json()["run"]["id"])
            vault.chmod(0o600)
            accepted = final_run(cli, cli("request", "check", "--json").json()["run"]["id"])
        assert refused["status"] == "failed"
        shown = cli("show", str(refused["id"]))
        assert f"vault password file {vault} can be read or changed by other users" in shown.stdout
        assert f"chmod 600 {vault}" in shown.stdout
        assert accepted["status"] == "successful", accepted
        assert cli("status", "--json").json()["hosts"][0]["status"] != "unknown"  # the second run checked it
        assert watch.longest_silence < 5, watch.longest_silence
    finally:
        serve.stop()
        down = cli("lab", "down")
    assert down.code == 0, down.stderr


def test_serve_closes_a_data_dir_an_older_fleet_left_open_and_keeps_what_it_writes_private(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    assert cli("check").code == 3  # an existing store, with history
    data = cli.data_dir
    for path, wide in [(data, 0o755), (data / "fleet.db", 0o644), (data / "revisions", 0o755)]:
        path.chmod(wide)
    serve = ServeProcess(cli)
    serve.start()
    try:
        with HealthWatch(serve, "serve on a data directory open to others") as watch:
            queued = cli("request", "check", "--json").json()["run"]["id"]
            assert final_run(cli, queued)["status"] in FINAL
            time.sleep(1)  # one more poll of healthz after the run
    finally:
        serve.stop()
    assert watch.longest_silence < 5, watch.longest_silence
    assert f"data directory {data} was open to other users" in serve.log.read_text()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600  # written by serve itself
    shared = {(p.stat().st_dev, p.stat().st_ino) for p in (tmp_source / ".git" / "objects").rglob("*") if p.is_file()}
    opened = [str(p.relative_to(data)) for p in [data, *data.rglob("*")]
              if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077
              and (p.lstat().st_dev, p.lstat().st_ino) not in shared]
    assert opened == []
    assert {1, queued} <= {r["id"] for r in cli("runs", "--json").json()["runs"]}  # the history stayed
