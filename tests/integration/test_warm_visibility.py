"""Kept Ansible processes made visible and bounded, and the path of every run recorded, for real.

Without lab hosts (a local playbook on localhost through the real runner and ansible-runner): the first run
goes cold saying there was no kept process yet, the next is forked warm, one with other Ansible settings goes
cold saying which; the kept process is listed with its pid, age, memory and hosts by `fleet status` (text and
--json); a `fleet worker` stopped by SIGTERM ends its kept processes. On lab hosts: `fleet show --json` of a
first check says cold ("no kept process yet"), of the second warm, and the kept process lists the lab hosts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import processes, runner, warm
from fleet.runner import JobSpec, Strategy
from tests.conftest import FLEET, FleetCli, make_source, wait_for

SUBNET = 82  # this file's own lab: 127.0.82.x

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: say
      command: "true"
"""


@pytest.fixture
def local(tmp_path):
    """A project with a local playbook, and a data directory whose kept processes end with the test."""
    data = tmp_path / "d"
    project = tmp_path / "project"
    project.mkdir()
    (project / "site.yml").write_text(PLAYBOOK)
    (project / "inventory").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    data.mkdir(mode=0o700)
    yield data, project
    for pid in warm.server_pids(str(data.resolve())):
        os.kill(pid, signal.SIGKILL)


def spec(data: Path, project: Path, number: int) -> JobSpec:
    private = data / "runs" / str(number)
    private.mkdir(parents=True)
    limit = private / "limit"
    limit.write_text("localhost\n")
    return JobSpec(kind="check", project_dir=project, playbook="site.yml", inventory=project / "inventory",
                   private_data_dir=private, known_hosts=data / "known_hosts", control_path_dir=data / "cp",
                   limit_file=limit, strategy=Strategy("linear", None, "test"), warm_anchor=data.resolve())


def run(data: Path, project: Path, number: int, **env: str) -> runner.RunnerOutcome:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        outcome = runner.run_job(spec(data, project, number), lambda event: None)
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    assert outcome.status == "successful", outcome
    return outcome


def test_each_run_says_warm_or_cold_and_why(local):
    data, project = local
    first = run(data, project, 1)
    assert first.ansible_path == "cold: no kept process yet (starting one)"
    [server] = wait_for(lambda: warm.server_pids(str(data.resolve())), 60, "the kept process the first run started")
    wait_for(lambda: warm.kept_processes(str(data))[0]["age_seconds"] is not None, 60, "its state file")

    second = run(data, project, 2)
    assert second.ansible_path == "warm"
    other = run(data, project, 3, ANSIBLE_TIMEOUT="77")  # another key: another kept process, started for it
    assert other.ansible_path == "cold: no kept process yet (starting one)"
    wait_for(lambda: len(warm.server_pids(str(data.resolve()))) == 2, 60, "the second kept process")
    log = (data / warm.LOG_NAME).read_text()
    assert log.count("a run goes cold") == 2 and "no kept process yet" in log, log

    off = runner.run_job(dataclasses.replace(spec(data, project, 4), warm_anchor=None), lambda event: None)
    assert off.ansible_path == "cold: FLEET_WARM_ANSIBLE=false"
    assert server in warm.server_pids(str(data.resolve()))


def test_a_run_whose_settings_differ_from_the_kept_process_s_goes_cold_saying_which(local):
    """The kept process on the run's socket, started again by hand with the environment it had plus another
    ANSIBLE_TIMEOUT: the run's child proves the settings differ, and the run goes cold naming the setting."""
    data, project = local
    run(data, project, 1)
    [server] = wait_for(lambda: warm.server_pids(str(data.resolve())), 60, "the kept process")
    command = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")[:-1]
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{server}/environ").read_text().split("\0") if item)
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: not processes.pid_alive(server), 30, "the kept process to end")
    Path(command[-2].decode()).unlink()  # left by the kill: the new one's appears once it listens
    with (data / warm.LOG_NAME).open("ab") as log:
        other = subprocess.Popen([c.decode() for c in command], env={**environ, "ANSIBLE_TIMEOUT": "17"},
                                 stdout=log, stderr=log, start_new_session=True, cwd="/")
    try:
        wait_for(lambda: Path(command[-2].decode()).exists(), 60, "the socket of the kept process started by hand")
        differs = run(data, project, 2)
        assert differs.ansible_path == "cold: Ansible setting DEFAULT_TIMEOUT differs from the kept process's"
        assert "a run goes cold" in (data / warm.LOG_NAME).read_text()
    finally:
        other.kill()
        other.wait(10)


def test_fleet_status_lists_the_kept_processes_with_pid_age_memory_and_hosts(local, tmp_path):
    data, project = local
    run(data, project, 1)
    [server] = wait_for(lambda: warm.server_pids(str(data.resolve())), 60, "the kept process")
    wait_for(lambda: warm.kept_processes(str(data))[0]["age_seconds"] is not None, 60, "its state file")
    run(data, project, 2)
    cli = FleetCli(data, tmp_path / "no-source", tmp_path)

    listed = json.loads(cli("status", "--json").stdout)["kept_processes"]
    assert [k["pid"] for k in listed] == [server]
    [kept] = listed
    assert kept["hosts"] == ["localhost"] and kept["runs"] == 1
    assert kept["age_seconds"] >= 0 and kept["rss_kib"] > 10_000 and 0 < kept["pss_kib"]
    rss = int(Path(f"/proc/{server}/status").read_text().split("VmRSS:")[1].split()[0])
    assert abs(kept["rss_kib"] - rss) < rss / 4, (kept, rss)  # from /proc, the same process

    text = cli("status")
    assert text.code == 0, text.stderr
    assert f"kept Ansible processes (1):\n  pid {server}, up " in text.stdout and "hosts localhost" in text.stdout

    os.kill(server, signal.SIGTERM)
    wait_for(lambda: not processes.pid_alive(server), 30, "the kept process to end")
    assert json.loads(cli("status", "--json").stdout)["kept_processes"] == []
    assert "kept Ansible processes: none" in cli("status").stdout
    assert not list(warm.runtime_dir().glob(f"{warm.anchor_prefix(str(data))}-*.json")), "state file removed"


# --- fleet worker: a clean stop ends its kept processes ------------------------------------------------

def test_a_worker_stopped_by_sigterm_ends_its_kept_processes(local, tmp_path):
    from tests.scaleout.conftest import RedisServer

    data, project = local
    run(data, project, 1)
    [server] = wait_for(lambda: warm.server_pids(str(data.resolve())), 60, "the kept process")
    broker = RedisServer(tmp_path / "redis")
    broker.start()
    log = tmp_path / "worker.log"
    try:
        env = {**os.environ, "FLEET_DATA_DIR": str(data), "FLEET_REPO": str(tmp_path / "no-source"),
               "FLEET_BROKER_URL": broker.url}
        with log.open("ab") as out:
            worker = subprocess.Popen([FLEET, "worker", "--name", "w@visibility"], cwd=tmp_path, env=env,
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: b"ready" in log.read_bytes() or worker.poll() is not None, 120, "the worker to start")
            assert worker.poll() is None, log.read_text()
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0, log.read_text()
        finally:
            if worker.poll() is None:
                worker.kill()
        wait_for(lambda: not processes.pid_alive(server), 30, "the worker's kept process to end")
        assert "stopped 1 kept Ansible processes" in log.read_text()
    finally:
        broker.stop()


# --- lab hosts: the run records ---------------------------------------------------------------------

@pytest.mark.lab
def test_the_first_check_is_recorded_cold_and_the_next_warm_with_the_hosts_kept(tmp_path):
    cli = FleetCli(tmp_path / "data", tmp_path / "source", tmp_path)
    up = cli("lab", "up", "--hosts", "2", "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        make_source(tmp_path / "source", (cli.data_dir / "lab" / "hosts.yml").read_text())
        off = cli("check", "--json", env={"FLEET_WARM_ANSIBLE": "false"})
        first = cli("check", "--json")  # runs cold, and starts the kept process of runs for the next one
        wait_for(lambda: [k for k in warm.kept_processes(str(cli.data_dir)) if k["strategy"] == "mitogen_linear"],
                 60, "the kept Ansible process of runs")
        second = cli("check", "--json")
        paths = []
        for result in (off, first, second):
            assert result.code in (0, 2), result.stderr
            shown = cli("show", str(result.json()["run"]["id"]), "--json")
            paths.append(json.loads(shown.stdout)["run"]["ansible_path"])
            assert result.json()["run"]["strategy"] == json.loads(shown.stdout)["run"]["strategy"]
        assert paths == [{"warm": False, "reason": "FLEET_WARM_ANSIBLE=false"},
                         {"warm": False, "reason": "no kept process yet (starting one)"},
                         {"warm": True, "reason": None}]
        text = cli("show", str(second.json()["run"]["id"])).stdout
        assert "ansible: mitogen_linear, warm (forked from the kept Ansible process)" in text, text

        names = sorted(h["name"] for h in second.json()["hosts"])
        listed = json.loads(cli("status", "--json").stdout)["kept_processes"]
        [kept] = [k for k in listed if k["hosts"]]  # not a syntax check's (FLEET_WARM_ANSIBLE=false did that)
        assert sorted(kept["hosts"]) == names and kept["multiplexers"], kept
        assert kept["strategy"] == "mitogen_linear" and kept["pss_kib"] > kept["rss_kib"] / 10
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr
