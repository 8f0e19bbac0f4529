"""fleet-ansible-playbook (fleet.warm.client), run as ansible-runner runs it: a real process, talking to a
stand-in kept process on the socket fleet.warm names (the protocol's other end, played by this test), or
becoming the real ansible-playbook when it goes cold. Each path says which it took in the run's report."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from fleet import warm
from fleet.warm import client
from tests.conftest import wait_for

BIN = Path(sys.executable).parent
CLIENT = BIN / "fleet-ansible-playbook"
# The interpreter the installed script runs under: the kept process's key names it (fleet.warm._code_marks).
INTERPRETER = CLIENT.read_text().splitlines()[0].removeprefix("#!").strip()


@pytest.fixture
def runtime(monkeypatch):
    directory = Path(tempfile.mkdtemp(prefix="fw-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class Run:
    """One fleet-ansible-playbook process with its own data directory, report file and environment."""

    def __init__(self, tmp_path: Path, runtime: Path, anchor: bool = True):
        self.cwd = tmp_path / "project"
        self.cwd.mkdir()
        self.report = tmp_path / "report.json"
        self.anchor = tmp_path / "data"
        self.anchor.mkdir()
        # A kept process started by mistake (a key this test got wrong) would leave after a second idle.
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), warm.REPORT_ENV: str(self.report),
                    warm.IDLE_ENV: "1"}
        if anchor:
            self.env[warm.ANCHOR_ENV] = str(self.anchor)

    def socket_path(self) -> Path:
        """Where this run's client looks for its kept process (computed as a process started from BIN would)."""
        code = ("import os, sys; sys.path[0] = sys.argv[1]; from fleet import warm; "
                "print(warm.socket_path(os.environ[warm.ANCHOR_ENV], warm.server_key(dict(os.environ), os.getcwd())))")
        return Path(subprocess.run([INTERPRETER, "-c", code, str(BIN)], cwd=self.cwd, env=self.env, check=True,
                                   capture_output=True, text=True).stdout.strip())

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([str(CLIENT), *args], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def said(self) -> tuple[bool, str] | None:
        return warm.read_report(self.report)


def reading(pid: int) -> bool:
    """Is the process blocked reading a Unix stream socket?"""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() == "unix_stream_read_generic"
    except OSError:
        return False


class StandIn:
    """The kept process's end of one conversation: takes the request and its descriptors, then plays `script`."""

    def __init__(self, path: Path, script):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.script, self.request, self.descriptors, self.heard = script, None, 0, []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.request, fds = warm.receive_request(conn)
            self.descriptors = len(fds)
            for fd in fds:
                os.close(fd)
            # The kept process answers while the client waits for its answer: a real run takes far longer than
            # the client's last send. (Answering and hanging up before that send makes it fail with EPIPE and
            # the client go cold: see the report of this change.)
            wait_for(lambda: reading(self.request["client_pid"]), 30, "the client to wait for an answer",
                     interval=0.01)
            self.script(self, conn)

    def close(self) -> None:
        self.thread.join(timeout=30)
        self.listener.close()
        assert self.request is not None, "the client never came to the stand-in (another socket path?)"


def test_the_real_ansible_playbook_is_the_one_beside_the_script_first(tmp_path, monkeypatch):
    beside = tmp_path / "bin"
    beside.mkdir()
    (beside / "ansible-playbook").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(beside / "fleet-ansible-playbook")])
    assert client.real_ansible_playbook() == str(beside / "ansible-playbook")
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "nowhere" / "fleet-ansible-playbook")])
    assert client.real_ansible_playbook() == str(BIN / "ansible-playbook")  # this interpreter's


def test_why_no_socket_can_be_used(runtime, monkeypatch):
    assert client.unusable_socket_reason().startswith("socket path too long")
    (runtime / f"fleet-warm-{os.getuid()}").chmod(0o755)
    assert client.unusable_socket_reason().startswith("socket directory unsafe")


def test_connect_finds_a_listening_socket_or_nothing(tmp_path):
    path = tmp_path / "k.sock"
    assert client.connect(path) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        conn = client.connect(path)
        assert conn is not None
        conn.close()


def test_without_a_data_directory_it_is_the_real_ansible_playbook_and_says_why(tmp_path, runtime):
    run = Run(tmp_path, runtime, anchor=False)
    proc = run.start("--version")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("ansible-playbook [core ")
    assert run.said() == (False, f"no data directory named ({warm.ANCHOR_ENV} unset)")


def test_a_run_the_kept_process_ran_ends_with_its_exit_code_and_is_reported_warm(tmp_path, runtime):
    run = Run(tmp_path, runtime)

    def ran(stand_in, conn):
        conn.sendall(b"P 4242\n")
        conn.sendall(f"X {3 << 8}\n".encode())  # the child exited 3 (as waitpid reports it)

    stand_in = StandIn(run.socket_path(), ran)
    proc = run.start("-i", "inventory", "playbooks/site.yml", "--check")
    _, err = proc.communicate(timeout=60)
    stand_in.close()
    assert proc.returncode == 3, err
    assert run.said() == (True, "")
    request = stand_in.request
    assert request["argv"] == ["-i", "inventory", "playbooks/site.yml", "--check"]
    assert request["protocol"] == warm.PROTOCOL and request["client_pid"] == proc.pid
    assert Path(request["cwd"]) == run.cwd and request["env"][warm.ANCHOR_ENV] == str(run.anchor)
    assert stand_in.descriptors == 3  # its stdin, stdout and stderr: the run's terminal


def test_a_run_the_kept_process_cannot_run_goes_cold_with_its_reason(tmp_path, runtime):
    run = Run(tmp_path, runtime)
    stand_in = StandIn(run.socket_path(), lambda s, conn: conn.sendall(b"F ANSIBLE_FORKS differs: 5, kept 20\n"))
    proc = run.start("--version")
    out, err = proc.communicate(timeout=60)
    stand_in.close()
    assert proc.returncode == 0, err
    assert out.startswith("ansible-playbook [core ")  # the real one ran it
    assert run.said() == (False, "ANSIBLE_FORKS differs: 5, kept 20")


def test_a_kept_process_that_ends_before_starting_the_run_sends_it_cold(tmp_path, runtime):
    run = Run(tmp_path, runtime)
    stand_in = StandIn(run.socket_path(), lambda s, conn: None)  # takes the request, says nothing, hangs up
    proc = run.start("--version")
    out, err = proc.communicate(timeout=60)
    stand_in.close()
    assert proc.returncode == 0, err
    assert run.said() == (False, "the kept process ended before starting this run")


def test_a_kept_process_lost_during_the_run_fails_it_and_its_processes_are_killed(tmp_path, runtime):
    run = Run(tmp_path, runtime)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)

    def lost(stand_in, conn):
        conn.sendall(f"P {child.pid}\n".encode())  # the run's child started, then the kept process dies

    stand_in = StandIn(run.socket_path(), lost)
    proc = run.start("playbooks/site.yml")
    _, err = proc.communicate(timeout=60)
    stand_in.close()
    try:
        assert proc.returncode == 1
        assert "the kept Ansible process ended during this run" in err
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_a_signal_to_the_client_reaches_the_run_and_the_client_ends_as_the_run_did(tmp_path, runtime):
    run = Run(tmp_path, runtime)
    started = threading.Event()

    def forwarded(stand_in, conn):
        conn.sendall(b"P 4242\n")
        started.set()
        stand_in.heard.append(conn.recv(64).decode())  # what the client forwards
        conn.sendall(f"X {signal.SIGTERM}\n".encode())  # the run's child was killed by that signal

    stand_in = StandIn(run.socket_path(), forwarded)
    proc = run.start("playbooks/site.yml")
    try:
        assert started.wait(30)
        wait_for(run.said, 30, "the client to report the run warm", interval=0.05)  # its handlers are in place
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    stand_in.close()
    assert stand_in.heard == [f"S {signal.SIGTERM}\n"]
    assert proc.returncode == -signal.SIGTERM
