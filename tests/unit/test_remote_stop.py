"""fleet.remote_stop without lab hosts: the reaper's identification run on this machine's own /proc, its answer
read, the ssh command it goes through, and how the verdicts and locks of a stop that was not confirmed come out."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet import processes, remote_stop
from fleet.drift import HostVerdict
from fleet.jobs import _mark_unconfirmed
from fleet.runner import InventoryHost


def start(command: str, connection: str | None, clear_env: bool = False) -> subprocess.Popen:
    """A process tree as an SSH session would start it: its environment carries `connection` (or none)."""
    env = {"PATH": os.environ["PATH"]} if clear_env else dict(os.environ)
    env.pop("SSH_CONNECTION", None)
    if connection is not None:
        env["SSH_CONNECTION"] = connection
    return subprocess.Popen(["sh", "-c", command], env=env, start_new_session=True)


def reap(connection: str, reaper_env: str | None = None) -> subprocess.CompletedProcess:
    """The reaper, as the remote shell runs it: argv[2] is the session's SSH_CONNECTION; itself started from a
    shell that carries it (as the reaper's own session does), which it must spare."""
    encoded = base64.b64encode(remote_stop.REAPER.encode()).decode()
    env = {**os.environ, "SSH_CONNECTION": reaper_env if reaper_env is not None else connection}
    script = "import base64,sys; exec(base64.b64decode(sys.argv[1]))"
    return subprocess.run(["sh", "-c", f'{sys.executable} -c "$0" {encoded} "$SSH_CONNECTION"; echo shell-alive',
                           script], env=env, capture_output=True, text=True, timeout=60)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def below(proc: subprocess.Popen) -> list[int]:
    return [proc.pid, *processes.descendants(proc.pid)]


@pytest.fixture
def connection():
    # A value no real session has: the reaper scans this whole machine's /proc.
    return f"192.0.2.{secrets.randbelow(250) + 1} {secrets.randbelow(60000) + 1024} 198.51.100.7 22"


def test_the_reaper_kills_the_sessions_processes_and_their_descendants_and_nothing_else(connection):
    ours = start("sleep 60; touch /nonexistent/x", connection)
    # sudo's env_reset: a child whose environment no longer names the connection, found by its ancestry
    under_sudo = start(f"env -i PATH=/usr/bin:/bin sh -c 'sleep 61'", connection)
    other = start("sleep 62", connection.replace(" 22", " 2222"))  # an operator's own session: another connection
    plain = start("sleep 63", None)
    time.sleep(0.5)
    victims = below(ours) + below(under_sudo)
    assert len(victims) >= 4, "sh and sleep of each tree"
    try:
        result = reap(connection)
        assert result.returncode == 0, result
        assert result.stdout.splitlines()[0] == f"fleet-stopped {len(victims)}"
        assert result.stdout.splitlines()[-1] == "shell-alive", "the reaper's own shell carries it too, and is spared"
        for pid in victims:
            for proc in (ours, under_sudo):
                if pid == proc.pid:
                    proc.wait(timeout=10)
            assert not alive(pid), pid
        assert alive(other.pid) and alive(plain.pid)
    finally:
        for proc in (ours, under_sudo, other, plain):
            processes.kill_tree(proc.pid)
            proc.wait(timeout=10)


def test_a_reaper_without_a_connection_refuses_rather_than_matching_everything():
    bare = start("sleep 60", "")
    try:
        result = reap("", reaper_env="")
        assert result.stdout.startswith("fleet-left 0: the reaper's session has no SSH_CONNECTION"), result
        assert alive(bare.pid)
    finally:
        processes.kill_tree(bare.pid)
        bare.wait(timeout=10)


@pytest.mark.parametrize(("code", "stdout", "stderr", "confirmed", "detail", "needs_root"), [
    (0, "fleet-stopped 3\n", "", True, "stopped 3 processes", False),
    (0, "fleet-stopped 1\n", "", True, "stopped 1 process", False),
    (3, "fleet-left 2: not allowed to signal them (no root)\n", "", False,
     "processes of the run are left: 2: not allowed to signal them (no root)", True),
    (3, "fleet-left 1: they outlived SIGKILL\n", "", False, "processes of the run are left: 1: they outlived SIGKILL",
     False),
    (255, "", "ssh: connect to host 127.0.0.9 port 22: Connection refused\n", False,
     "the reaper could not run (exit 255: ssh: connect to host 127.0.0.9 port 22: Connection refused)", False),
    (127, "", "", False, "the reaper could not run (exit 127: no output)", False),
], ids=["stopped", "one", "left to root", "outlived", "ssh failed", "silent"])
def test_the_reapers_answer(code, stdout, stderr, confirmed, detail, needs_root):
    assert remote_stop.judge_reaper("web1", code, stdout, stderr) == remote_stop.HostStop(
        "web1", confirmed, detail, needs_root)


def test_sudo_reads_the_password_from_the_reapers_stdin_only_when_it_has_one():
    assert "sudo -n python3" in remote_stop.reaper_command()
    with_password = remote_stop.reaper_command(with_password=True)
    assert "sudo -S -p '' python3" in with_password and "sudo -n" not in with_password


def test_become_passwords_are_asked_only_for_hosts_left_to_root_and_then_used(tmp_path, monkeypatch):
    hosts = [InventoryHost(name, "127.0.0.254", 22, ()) for name in ("web1", "web2", "db1")]
    tries = []

    def stop_host(host, connection, timeout, become_password=None, touched=True):
        tries.append((host.name, become_password))
        if host.name == "web1" or become_password == "pw-db1":
            return remote_stop.HostStop(host.name, True, "stopped 2 processes")
        return remote_stop.HostStop(host.name, False, "left: (no root)", needs_root=True)

    asked, renewals = [], []
    monkeypatch.setattr(remote_stop, "stop_host", stop_host)
    stops = remote_stop.stop_remote_work(
        hosts, {"web1", "web2", "db1"}, remote_stop.Connection(tmp_path, tmp_path, 60),
        become_passwords=lambda names: asked.append(sorted(names)) or {"db1": "pw-db1"},
        keep_alive=lambda: renewals.append(len(tries)))
    assert asked == [["db1", "web2"]], "asked once, for the hosts where root was missing"
    assert renewals == [3, 3], "the run renews its lease before and after the lookup, before the second pass"
    assert sorted(tries, key=str) == [("db1", "pw-db1"), ("db1", None), ("web1", None), ("web2", None)]
    assert {n: s.confirmed for n, s in stops.items()} == {"web1": True, "web2": False, "db1": True}
    assert stops["web2"].needs_root, "no password known: still left, and says why"


def test_the_reaper_goes_the_way_ansibles_ssh_goes():
    tmp_path = Path("/tmp/fleet-t")  # short enough for a ControlPath named by connection (runner.control_path)
    host = InventoryHost("web1", "10.0.0.5", 2222, ("web",), "deploy",
                         ("", "-o ProxyJump=root@bastion", "-o ServerAliveCountMax=2"))
    command = remote_stop.ssh_command(host, remote_stop.Connection(tmp_path / "known_hosts", tmp_path / "cp", 600,
                                                                    tmp_path / "id"))
    text = " ".join(command)
    assert command[0] == "ssh" and command[-1] == "10.0.0.5"
    assert f"ControlPath={tmp_path / 'cp'}/%C" in text, "the run's own master"
    assert "StrictHostKeyChecking=yes" in text and f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in text
    assert "BatchMode=yes" in text and f"-i {tmp_path / 'id'}" in text
    assert "-p 2222 -l deploy" in text
    assert text.index("ProxyJump=root@bastion") < text.index("10.0.0.5")
    assert "StrictHostKeyChecking=no" not in text


def test_a_host_the_run_never_started_a_task_on_is_confirmed_without_a_connection(tmp_path):
    host = InventoryHost("web1", "127.0.0.254", 22, ())
    stops = remote_stop.stop_remote_work([host], set(), remote_stop.Connection(tmp_path, tmp_path / "cp", 60))
    assert stops == {"web1": remote_stop.HostStop("web1", True, "no task of the run started there")}


def test_a_touched_host_without_the_runs_master_is_not_confirmed(tmp_path):
    (tmp_path / "cp").mkdir()
    host = InventoryHost("web1", "127.0.0.254", 22, ())
    stops = remote_stop.stop_remote_work([host], {"web1"}, remote_stop.Connection(
        tmp_path / "known_hosts", tmp_path / "cp", 60), timeout=20)
    assert not stops["web1"].confirmed and "connection to it is gone" in stops["web1"].detail


def test_unconfirmed_hosts_read_incomplete_with_the_reason_whatever_the_run_saw():
    verdicts = [HostVerdict("web1", "drifted", changed=1), HostVerdict("web2", "incomplete", "stopped")]
    marked = _mark_unconfirmed(verdicts, {"web2": "remote work may still run: gone", "db1": "remote work may "
                                                                                              "still run: x"})
    assert [(v.name, v.status, v.message) for v in marked] == [
        ("web1", "drifted", ""), ("web2", "incomplete", "remote work may still run: gone"),
        ("db1", "incomplete", "remote work may still run: x")]
