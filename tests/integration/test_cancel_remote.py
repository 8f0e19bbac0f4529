"""Cancel and timeout end the run's work on the hosts too, before its host locks are released.

Real lab hosts, real SSH. Every case converges `shell: "sleep NAP; touch /root/x"` on two hosts (one of them
through `become`), stops the run while the sleep runs, and proves: once the run has ended and its locks are
free, no `sleep` runs on either host (pgrep over SSH), and /root/x does not appear after the sleep would have
ended. With Mitogen and with plain SSH (linear), forked from the kept process and cold. A host that cannot be
reached when the run stops keeps its lock and reads `incomplete` ("remote work may still run") until
`fleet hosts release`; then a new run may take it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from fleet import lab, processes
from tests.conftest import FLEET, FleetCli, add_sudo_user, git, lab_ssh, wait_for

SUBNET = 84  # this file's own lab: web hosts on 127.0.84.x, db1 on 127.0.85.1
NAP = 30  # seconds the remote task sleeps before it writes /root/x (a loaded machine takes seconds to cancel)
PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: slow work
      shell: "{{ 'nohup' if ignores_hangup | default(false) else '' }} sh -c 'sleep {{ nap }}; touch /root/x'"
      become: "{{ use_become | default(false) }}"
"""


class Lab:
    def __init__(self, cli: FleetCli):
        self.cli = cli
        inventory = yaml.safe_load((cli.data_dir / "lab" / "hosts.yml").read_text())
        self.address = {name: spec["ansible_host"] for group in inventory["all"]["children"].values()
                        for name, spec in group["hosts"].items()}
        inventory["all"]["vars"]["nap"] = NAP
        inventory["all"]["children"]["web"]["hosts"]["web2"]["use_become"] = True  # root -> sudo -> root
        self.inventory = inventory

    def sleeping(self, name: str) -> str:
        """The sleep processes on a host, as pgrep lists them over SSH ('' when none)."""
        return lab_ssh(self.cli, self.address[name], "pgrep -a -x sleep || true").strip()

    def sleeps_seen(self, name: str) -> list[int]:
        """The host's sleep processes, seen from this machine (the lab host's namespace is a child of it):
        cheaper than SSH, for polling; the assertions ask the host itself."""
        root = int((self.cli.data_dir / "lab" / "hosts" / name / "pid").read_text())
        found = []
        for pid in processes.descendants(root):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    found.append(pid)
            except OSError:
                continue
        return found

    def marker(self, name: str) -> bool:
        return lab_ssh(self.cli, self.address[name], "test -e /root/x && echo yes || echo no").strip() == "yes"

    def clean(self, *names: str) -> None:
        for name in names:
            lab_ssh(self.cli, self.address[name], "rm -f /root/x")


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cancel")
    cli = FleetCli(tmp / "data", tmp / "source", tmp)
    up = cli("lab", "up", "--hosts", "3", "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        here = Lab(cli)
        repo = tmp / "source"
        (repo / "playbooks").mkdir(parents=True)
        (repo / "inventory").mkdir()
        (repo / "playbooks" / "site.yml").write_text(PLAYBOOK)
        (repo / "inventory" / "hosts.yml").write_text(yaml.safe_dump(here.inventory))
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "slow work")
        yield here
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def start_converge(cli: FleetCli, limit: str, env: dict) -> subprocess.Popen:
    full = {**os.environ, "FLEET_DATA_DIR": str(cli.data_dir), "FLEET_REPO": str(cli.repo), **env}
    return subprocess.Popen([FLEET, "converge", "--yes", "--json", "--limit", limit], cwd=cli.cwd, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def running_run(cli: FleetCli) -> int:
    """The running run's id, read from the SQLite store directly (a `fleet runs` takes seconds on a busy machine)."""
    with sqlite3.connect(cli.data_dir / "fleet.db", timeout=30) as db:
        row = db.execute("SELECT id FROM runs WHERE status = 'running' ORDER BY id DESC").fetchone()
    return row[0] if row else 0


def host_row(cli: FleetCli, name: str) -> dict:
    return next(h for h in cli("status", "--json").json()["hosts"] if h["name"] == name)


def stop_mid_task(here: Lab, names: list[str], env: dict, how: str) -> tuple[dict, float]:
    """Converge `names` and stop it (`cancel`, or `timeout` through FLEET_RUN_TIMEOUT) while every host sleeps;
    return the run as `fleet show --json` has it once the converge ended, and when the sleeps started."""
    cli = here.cli
    here.clean(*names)
    extra = {"FLEET_RUN_TIMEOUT": str(NAP - 5)} if how == "timeout" else {}
    converge = start_converge(cli, ",".join(names), {**env, **extra})
    try:
        wait_for(lambda: all(here.sleeps_seen(n) for n in names), 120, f"the sleep to run on {names}", 0.2)
        slept_at = time.monotonic()
        if how == "cancel":
            run_id = running_run(cli)
            assert run_id, "the converge runs"
            canceled = cli("cancel", str(run_id))
            assert canceled.code == 0, canceled.stderr
        _out, said = converge.communicate(timeout=90)
        print(said)  # the stop's log lines (what each host's reaper said), shown when a test fails
    finally:
        converge.kill()
    run_id = cli("runs", "--json", "--count", "1").json()["runs"][0]["id"]
    return cli("show", str(run_id), "--json").json(), slept_at


def assert_stopped_on_hosts(here: Lab, names: list[str], run: dict, slept_at: float, status: str) -> None:
    assert run["run"]["status"] == status, run["run"]
    ended = [(h["name"], t["status"]) for h in run["hosts"] for t in h.get("tasks", []) if t["task"] == "slow work"]
    assert all(s not in ("ok", "changed") for _, s in ended), f"the task ended before the stop reached it: {ended}"
    for name in names:
        assert here.sleeping(name) == "", f"{name} still runs the canceled task: {here.sleeping(name)}"
    time.sleep(max(0.0, slept_at + NAP + 2 - time.monotonic()))  # past when the sleep would have ended
    assert [n for n in names if here.marker(n)] == [], "the stopped task finished on a host"
    status_rows = {n: host_row(here.cli, n) for n in names}
    assert all(r["status"] != "incomplete" or "remote work" not in (r["message"] or "")
               for r in status_rows.values()), status_rows


CASES = [
    ("mitogen-warm-cancel", {"FLEET_STRATEGY": "mitogen"}, "cancel"),
    ("mitogen-cold-cancel", {"FLEET_STRATEGY": "mitogen", "FLEET_WARM_ANSIBLE": "false"}, "cancel"),
    ("linear-warm-cancel", {"FLEET_STRATEGY": "linear"}, "cancel"),
    ("linear-cold-cancel", {"FLEET_STRATEGY": "linear", "FLEET_WARM_ANSIBLE": "false"}, "cancel"),
    ("mitogen-warm-timeout", {"FLEET_STRATEGY": "mitogen"}, "timeout"),
    ("linear-cold-timeout", {"FLEET_STRATEGY": "linear", "FLEET_WARM_ANSIBLE": "false"}, "timeout"),
]


@pytest.mark.lab
@pytest.mark.parametrize("env,how", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_stopped_converge_leaves_nothing_running_on_its_hosts(lab_env, env, how):
    names = ["web1", "web2"]  # web2's task runs through become (sudo)
    run, slept_at = stop_mid_task(lab_env, names, env, how)
    assert_stopped_on_hosts(lab_env, names, run, slept_at, "canceled" if how == "cancel" else "timeout")
    # The hosts are free and usable at once (a warm run's Mitogen interpreters were among what ended).
    check = lab_env.cli("check", "--json", "--limit", "web1,web2", env=env)
    assert check.code in (0, 2, 4), check.stderr
    assert {h["name"]: h["status"] for h in check.json()["hosts"]}.keys() == set(names)
    assert all(h["status"] not in ("failed", "unreachable") for h in check.json()["hosts"]), check.stdout


# A login that is not root and whose sudo asks a password, as companies set hosts up.
DEPLOY_PASSWORD = "Dp-cancel-51c9"


def vaulted_become_password(vault: Path) -> str:
    """`ansible_become_password: !vault |…` for host_vars, as ansible-vault writes it."""
    done = subprocess.run([str(Path(FLEET).parent / "ansible-vault"), "encrypt_string", "--vault-password-file",
                           str(vault), "--name", "ansible_become_password", DEPLOY_PASSWORD],
                          capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.lab
def test_a_stop_ends_root_work_of_a_login_whose_sudo_needs_the_vaulted_password(lab_env, tmp_path):
    """db1 logs in as `deploy`, whose sudo asks the password the inventory keeps in a vault: the reaper cannot
    reach root's processes with `sudo -n`, so it asks Ansible for that password and goes through sudo with it.
    The task's root processes end, the host is free, and the password is nowhere in fleet's data."""
    here, cli = lab_env, lab_env.cli
    add_sudo_user(cli, here.address["db1"], DEPLOY_PASSWORD)
    vault = tmp_path / "vault-password"
    vault.write_text("cancel-vault-secret\n")
    vault.chmod(0o600)
    host_vars = cli.repo / "inventory" / "host_vars"
    host_vars.mkdir(exist_ok=True)
    # nohup: the root processes outlive the hangup that ending the login's own processes (sudo among them)
    # sends down a terminal; only root can end them then, as with a daemon or an async task.
    (host_vars / "db1.yml").write_text("ansible_user: deploy\nuse_become: true\nignores_hangup: true\n"
                                       + vaulted_become_password(vault))
    git(cli.repo, "add", "-A")
    git(cli.repo, "commit", "-q", "-m", "db1: deploy with a sudo password")
    try:
        env = {"FLEET_STRATEGY": "mitogen", "FLEET_VAULT_PASSWORD_FILE": str(vault)}
        run, slept_at = stop_mid_task(here, ["db1"], env, "cancel")
        assert_stopped_on_hosts(here, ["db1"], run, slept_at, "canceled")
        check = cli("check", "--json", "--limit", "db1", env=env)
        assert check.code in (0, 2, 4), check.stderr  # its lock went with the run
    finally:
        (host_vars / "db1.yml").unlink()
        git(cli.repo, "add", "-A")
        git(cli.repo, "commit", "-q", "-m", "db1: root again")
    leaked = [str(path) for path in cli.data_dir.rglob("*") if path.is_file() and "lab" not in path.parts
              and DEPLOY_PASSWORD.encode() in path.read_bytes()]
    assert leaked == [], "the become password was written to fleet's data"


@pytest.mark.lab
def test_a_host_unreachable_at_cancel_keeps_its_lock_until_released(lab_env):
    here, cli = lab_env, lab_env.cli
    names = ["web1", "db1"]
    here.clean(*names)
    converge = start_converge(cli, "web1,db1", {"FLEET_STRATEGY": "mitogen"})
    try:
        wait_for(lambda: all(here.sleeps_seen(n) for n in names), 120, "the sleep to run on both hosts", 0.2)
        run_id = running_run(cli)
        lab.stop_host(cli.data_dir / "lab", "db1")  # gone: the run cannot confirm anything there
        canceled = cli("cancel", str(run_id))
        assert canceled.code == 0, canceled.stderr
        converge.communicate(timeout=90)
    finally:
        converge.kill()
    run = cli("show", str(run_id), "--json").json()
    assert run["run"]["status"] == "canceled", run["run"]
    assert here.sleeping("web1") == ""

    db1 = host_row(cli, "db1")
    assert db1["status"] == "incomplete" and db1["message"].startswith("remote work may still run"), db1
    api_like = cli("status", "--json").json()
    assert json.dumps(api_like).count("remote work may still run") >= 1

    busy = cli("check", "--limit", "db1")
    assert busy.code != 0 and "fleet hosts release db1" in busy.stderr, (busy.stdout, busy.stderr)
    free = cli("check", "--json", "--limit", "web1")  # web1 was confirmed: its lock went with the run
    assert free.code in (0, 2, 4), free.stderr

    lab.restart_host(cli.data_dir / "lab", "db1")
    assert host_row(cli, "db1")["status"] == "incomplete", "a restart alone proves nothing to fleet"
    released = cli("hosts", "release", "db1")
    assert released.code == 0, released.stderr
    assert f"run {run_id}" in released.stdout
    again = cli("hosts", "release", "db1")
    assert again.code != 0 and "no kept lock" in again.stderr
    audit = cli("audit", "--json").json()["entries"]
    assert any(e["action"] == "host.release" and e["target"] == "db1" for e in audit), audit

    after = cli("check", "--json", "--limit", "db1")
    assert after.code in (0, 2, 4), after.stderr
    assert host_row(cli, "db1")["status"] != "incomplete"
