"""Runs that end in a readable state: a store that refuses writes, a `fleet check` killed with -9 or
canceled from another terminal, and two controllers on one database (issue 11, points 7 to 9).

Real processes throughout: `fleet serve` and `fleet check` as a user starts them, a lab host reached
over real SSH, the real SQLite file (a trigger in it is the injected database error), kill -9.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.ansible_processes import ansible_processes
from tests.conftest import FleetCli, ServeProcess, git, make_source, wait_for
from tests.faults.conftest import HealthWatch

pytestmark = pytest.mark.lab

SUBNET = 27  # this suite's lab subnet: one host, web1 on 127.0.27.1
LEASE_SECONDS = 6
POLL_SECONDS = 2
# One quick task that can drift, and one that takes as long as FLEET_TEST_SLEEP says (0 unless a test asks):
# a run slow enough to be killed or canceled while Ansible works on the host.
PLAYBOOK = """\
- name: Fault suite
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the fleet marker
      ansible.builtin.copy:
        dest: /etc/fleet-fault-marker
        content: "fleet\\n"
    - name: Take a while
      ansible.builtin.command: "sleep {{ lookup('env', 'FLEET_TEST_SLEEP') | default('0', true) }}"
      check_mode: false
      changed_when: false
"""
REFUSAL = "the store refused a write: injected; results recorded before it are kept"


class Fleet:
    """The `fleet` command on the suite's lab and source, with a database of its own per test."""

    def __init__(self, cli: FleetCli, name: str):
        self.cli = cli
        self.db = cli.data_dir.parent / f"{name}.db"
        self.env = {"FLEET_DATABASE_URL": f"sqlite:///{self.db}", "FLEET_LEASE_SECONDS": str(LEASE_SECONDS)}

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 300):
        return self.cli(*args, env={**self.env, **(env or {})}, timeout=timeout)

    def popen(self, *args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        full = {**os.environ, "FLEET_DATA_DIR": str(self.cli.data_dir), "FLEET_REPO": str(self.cli.repo),
                **self.env, **(env or {})}
        return subprocess.Popen([*prefix, self.cli.fleet, *args], cwd=self.cli.cwd, env=full,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def serve(self) -> ServeProcess:
        return ServeProcess(self.cli, POLL_SECONDS, self.env)

    def runs(self) -> list[dict]:
        return self("runs", "--json", "--count", "100").json()["runs"]

    def run(self, run_id: int) -> dict:
        return next(r for r in self.runs() if r["id"] == run_id)

    def statuses(self) -> dict[str, str]:
        return {h["name"]: h["status"] for h in self("status", "--json").json()["hosts"]}

    def sql(self, query: str, *params) -> list[tuple]:
        """Read the real database directly (what the CLI does not show: locks, lease holders, ansible pids)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db, timeout=10)
        try:
            return conn.execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # fleet has not created its tables yet
                return []
            raise
        finally:
            conn.close()

    def execute(self, statement: str) -> None:
        conn = sqlite3.connect(self.db, timeout=10)
        try:
            conn.execute(statement)
            conn.commit()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One lab host and a git source whose playbook can be made slow; torn down whatever happens."""
    root = tmp_path_factory.mktemp("run-faults")
    cli = FleetCli(root / "data", root / "source", root)
    up = cli("lab", "up", "--hosts", "1", "--subnet", str(SUBNET))
    try:
        assert up.code == 0, up.stderr
        inventory = yaml.safe_load((root / "data" / "lab" / "hosts.yml").read_text())
        assert set(inventory["all"]["children"]["web"]["hosts"]) == {"web1"}
        source = make_source(root / "source", yaml.safe_dump(inventory))
        (source / "playbooks" / "site.yml").write_text(PLAYBOOK)
        git(source, "commit", "-qam", "a playbook for the fault suite")
        yield cli
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def ended(fleet: Fleet, run_id: int) -> dict | None:
    run = fleet.run(run_id)
    return run if run["status"] not in ("queued", "running") else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"  # a zombie is dead


def running_with_ansible(fleet: Fleet) -> tuple[int, int]:
    """(run id, ansible-playbook pid) of the run in progress, once Ansible has started on the host."""
    rows = fleet.sql("SELECT id, ansible_pid FROM runs WHERE status = 'running' AND ansible_pid IS NOT NULL")
    return rows[0] if rows else None


# --- 7: a database error mid-run ------------------------------------------------------------------------

def test_a_store_that_refuses_task_results_fails_the_run_frees_its_locks_and_changes_no_host(lab):
    fleet = Fleet(lab, "store-refuses")
    serve = fleet.serve()
    serve.start()
    try:
        with HealthWatch(serve, "the store refuses task results mid-run") as watch:
            wait_for(lambda: any(r["trigger"] == "commit" and r["status"] == "successful" for r in fleet.runs()),
                     180, "the first commit check")
            before = fleet.statuses()
            assert before == {"web1": "drifted"}, "the marker file is not there yet"

            fleet.execute("CREATE TRIGGER injected BEFORE INSERT ON task_results "
                          "BEGIN SELECT RAISE(ABORT, 'injected'); END")
            queued = fleet("request", "check", "--json").json()["run"]
            by_controller = wait_for(lambda: ended(fleet, queued["id"]), 120, "the controller's check to end")
            assert (by_controller["status"], by_controller["error"]) == ("failed", REFUSAL)

            by_cli = fleet("check")
            assert by_cli.code == 1, by_cli.stdout
            assert REFUSAL in by_cli.stderr and "no host's status was changed" in by_cli.stderr
            assert "Traceback" not in by_cli.stderr
            last = fleet.runs()[0]
            assert (last["trigger"], last["status"], last["error"]) == ("manual", "failed", REFUSAL)
            assert last["hosts"]["total"] == 0, "no verdict was written for a run whose recording failed"

            assert fleet.statuses() == before
            assert fleet.sql("SELECT * FROM host_locks") == []
            assert fleet.sql("SELECT id FROM runs WHERE status = 'running'") == []
            assert ansible_processes(lab.data_dir) == [], "Ansible was stopped"

            fleet.execute("DROP TRIGGER injected")
            again = fleet("request", "check", "--json").json()["run"]
            recovered = wait_for(lambda: ended(fleet, again["id"]), 120, "a check once the store takes writes")
            assert recovered["status"] == "successful", "the controller went on working"
        assert watch.longest_silence < 5
    finally:
        serve.stop()


# --- 8: kill -9 and cancel of a CLI run ------------------------------------------------------------------

def test_a_check_killed_with_minus_9_is_interrupted_its_ansible_stopped_and_its_hosts_free(lab):
    fleet = Fleet(lab, "kill-9")
    check = fleet.popen("check", env={"FLEET_TEST_SLEEP": "120"})
    try:
        run_id, ansible_pid = wait_for(lambda: running_with_ansible(fleet), 120, "Ansible to start on web1")
        assert fleet.sql("SELECT host FROM host_locks WHERE run_id = ?", run_id) == [("web1",)]
        killed_at = time.monotonic()
        check.send_signal(signal.SIGKILL)
        check.wait(timeout=10)
    finally:
        check.kill()
        check.communicate()  # reaps it and closes its pipes

    # Whoever looks next closes it: here a CLI user with no controller running checks the same host again.
    again = fleet("check", "--json")
    closed_after = time.monotonic() - killed_at
    assert again.code in (0, 2), again.stderr  # web1 checked: in sync or drifted, never busy
    assert again.json()["run"]["status"] == "successful"
    interrupted = fleet.run(run_id)
    assert interrupted["status"] == "interrupted"
    assert "stopped while this run was running" in interrupted["error"]
    assert "results recorded so far are kept" in interrupted["error"]
    assert closed_after < 60
    print(f"\nkill -9 of a check: interrupted and the host checked again {closed_after:.1f}s later")
    assert fleet.sql("SELECT * FROM host_locks") == []
    assert not pid_alive(ansible_pid), "the orphaned ansible-playbook was stopped"
    assert ansible_processes(lab.data_dir) == []


# As if from another machine: its own UTS namespace names it other-box, so no pid here says it died.
ON_OTHER_BOX = ("unshare", "--uts", "sh", "-c", 'hostname other-box && exec "$@"', "on-other-box")


def test_a_check_from_another_machine_killed_with_minus_9_is_interrupted_once_its_lease_lapses(lab):
    fleet = Fleet(lab, "lease-lapses")
    lease = 20  # long enough that the first look below surely comes before it lapses
    fleet.env["FLEET_LEASE_SECONDS"] = str(lease)
    check = fleet.popen("check", env={"FLEET_TEST_SLEEP": "120"}, prefix=ON_OTHER_BOX)
    try:
        run_id, _ = wait_for(lambda: running_with_ansible(fleet), 120, "Ansible to start on web1")
        [(holder,)] = fleet.sql("SELECT lease_holder FROM runs WHERE id = ?", run_id)
        assert holder.startswith("other-box:")
        check.send_signal(signal.SIGKILL)
        check.wait(timeout=10)
        killed_at = time.monotonic()

        assert fleet.run(run_id)["status"] == "running", "its lease still runs: nothing here can tell it died"
        interrupted = wait_for(lambda: ended(fleet, run_id), 60, "the lapsed lease to interrupt the run")
        lapsed_after = time.monotonic() - killed_at
        assert interrupted["status"] == "interrupted"
        assert "(pid" in interrupted["error"] and "on other-box) stopped while this run was running" in \
            interrupted["error"]
        assert lapsed_after < 60
        print(f"\nkill -9 of a check on another machine: interrupted {lapsed_after:.1f}s later (lease {lease}s)")
        assert fleet.sql("SELECT * FROM host_locks") == []
        again = fleet("check", "--json")
        assert again.code in (0, 2), again.stderr
        assert again.json()["run"]["status"] == "successful"
    finally:
        check.kill()
        check.communicate()
        for pid in ansible_processes(lab.data_dir):  # the other machine's orphan, which only it could stop
            os.kill(pid, signal.SIGKILL)


def test_fleet_cancel_stops_a_running_cli_check_and_its_ansible(lab):
    fleet = Fleet(lab, "cancel")
    check = fleet.popen("check", env={"FLEET_TEST_SLEEP": "120"})
    try:
        run_id, ansible_pid = wait_for(lambda: running_with_ansible(fleet), 120, "Ansible to start on web1")
        canceled = fleet("cancel", str(run_id))
        assert canceled.code == 0, canceled.stderr
        assert canceled.stdout.startswith(f"run {run_id}: canceled (canceled by cli:")
        out, err = check.communicate(timeout=60)
    finally:
        check.kill()
        check.communicate()
    assert check.returncode == 2, err  # the drift found before the cancel; nothing claimed in sync
    assert "canceled" in out
    run = fleet.run(run_id)
    assert (run["status"], run["cancel_requested"]) == ("canceled", True)
    assert not pid_alive(ansible_pid) and ansible_processes(lab.data_dir) == []
    assert fleet.sql("SELECT * FROM host_locks") == []
    assert fleet.statuses()["web1"] == "drifted", "the drift seen before the cancel, never `in_sync`"


def test_the_api_cancel_stops_a_cli_check_while_fleet_serve_answers(lab):
    fleet = Fleet(lab, "api-cancel")
    serve = fleet.serve()
    serve.start()
    check = None
    try:
        with HealthWatch(serve, "a CLI check canceled through the API") as watch:
            wait_for(lambda: any(r["trigger"] == "commit" and r["status"] == "successful" for r in fleet.runs()),
                     180, "the controller's commit check, so the CLI check has web1 to itself")
            token = fleet("token", "create", "canceler", "--role", "operator").stdout.strip().splitlines()[-1]
            check = fleet.popen("check", env={"FLEET_TEST_SLEEP": "120"})
            run_id, ansible_pid = wait_for(lambda: running_with_ansible(fleet), 120, "Ansible to start on web1")
            status, body = serve.request("POST", f"/api/v1/runs/{run_id}/cancel",
                                         headers={"Authorization": f"Bearer {token}"})
            assert (status, body["run"]["cancel_requested"]) == (202, True)
            check.communicate(timeout=60)
            assert check.returncode == 2
            run = fleet.run(run_id)
            assert (run["status"], run["error"]) == ("canceled", "canceled by token:canceler")
            assert not pid_alive(ansible_pid) and ansible_processes(lab.data_dir) == []
            assert fleet.sql("SELECT * FROM host_locks") == []
        assert watch.longest_silence < 5
    finally:
        if check is not None:
            check.kill()
            check.communicate()
        serve.stop()


# --- 9: two controllers on one database -------------------------------------------------------------------

def test_two_serves_on_one_database_one_leads_the_other_waits_then_takes_over(lab):
    fleet = Fleet(lab, "two-controllers")
    first, second = fleet.serve(), fleet.serve()
    second.log = lab.data_dir.parent / "serve-second.log"
    first.start()
    try:
        wait_for(lambda: (first.get("/api/v1/healthz")[1].get("controller") or {}).get("leader"), 30,
                 "the first serve to lead")
        second.start()
        with HealthWatch(second, "two controllers; the leader killed with -9") as watch:
            # Its web answers at once; its controller says it waits from its first tick on.
            health = wait_for(lambda: (lambda c: c if c["standby"] else None)(
                second.get("/api/v1/healthz")[1]["controller"]), 10, "the second serve to stand by")
            assert health["leader"]["pid"] == first.proc.pid
            wait_for(lambda: any(r["trigger"] == "commit" and r["status"] == "successful" for r in fleet.runs()),
                     180, "the commit check")
            holders = {row[0] for row in fleet.sql("SELECT lease_holder FROM runs")}
            assert len(holders) == 1 and f":{first.proc.pid}:" in holders.pop(), "only the leader started runs"

            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=10)
            killed_at = time.monotonic()
            wait_for(lambda: second.get("/api/v1/healthz")[1]["controller"]["standby"] is False,
                     LEASE_SECONDS + 30, "the second serve to take over")
            took_over_after = time.monotonic() - killed_at
            leader = second.get("/api/v1/healthz")[1]["controller"]["leader"]
            assert leader["pid"] == second.proc.pid

            queued = fleet("request", "check", "--json").json()["run"]
            done = wait_for(lambda: ended(fleet, queued["id"]), 120, "the new leader to run the queued check")
            assert done["status"] == "successful"
            [(holder,)] = fleet.sql("SELECT lease_holder FROM runs WHERE id = ?", queued["id"])
            assert f":{second.proc.pid}:" in holder
        assert watch.longest_silence < 5
        assert took_over_after < LEASE_SECONDS + 5
        print(f"\nkill -9 of the leader: the other serve led {took_over_after:.1f}s later (lease {LEASE_SECONDS}s)")
        waiting = [line for line in second.log.read_text().splitlines()
                   if f"another controller (pid {first.proc.pid} on" in line and "is leading; waiting" in line]
        assert len(waiting) == 1, "said once, not every tick"
    finally:
        second.stop()
        first.stop()
