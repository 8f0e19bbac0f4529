"""The kept Ansible process (fleet.warm.server): a real `python -m fleet.warm.server` on a private socket, asked
as fleet-ansible-playbook asks it; and its small parts (signalling a run, one process per socket, the peer's
user) in process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fleet import warm
from fleet.warm import server
from tests.conftest import wait_for

PYTHON = sys.executable


@pytest.fixture
def runtime(monkeypatch):
    directory = Path(tempfile.mkdtemp(prefix="fw-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class Kept:
    """One kept process for a data directory of tmp_path, its stderr in a file beside it."""

    def __init__(self, tmp_path: Path, idle: int = 600):
        self.anchor = tmp_path / "data"
        self.anchor.mkdir(exist_ok=True)
        self.socket = warm.socket_path(str(self.anchor), "k" * 64)
        self.log = tmp_path / "kept.log"
        self.env = {**os.environ, warm.IDLE_ENV: str(idle)}
        self.env.pop("ANSIBLE_STRATEGY", None)  # no Mitogen: nothing to start on hosts
        self.proc = self.start()

    def start(self) -> subprocess.Popen:
        with open(self.log, "ab") as log:
            return subprocess.Popen([PYTHON, "-m", "fleet.warm.server", str(self.socket), str(self.anchor)],
                                    env=self.env, cwd=self.anchor, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def wait_ready(self) -> None:
        wait_for(lambda: warm.state_path(self.socket).exists() or self.proc.poll() is not None, 60,
                 "the kept process to listen", interval=0.05)
        assert self.proc.poll() is None, self.log.read_text()

    def ask(self, argv: list[str], cwd: Path, protocol: int = warm.PROTOCOL, with_fds: bool = True):
        """Hand it a run as the client does (its stdin, stdout and stderr with the request); returns the
        connection and the read ends of the run's stdout and stderr."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.socket))
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        body = json.dumps({"protocol": protocol, "argv": argv, "env": self.env, "cwd": str(cwd),
                           "client_pid": os.getpid()}).encode()
        data = len(body).to_bytes(4, "big") + body
        fds = [stdin, out_write, err_write] if with_fds else []
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))]
        # Sent whole in one call (not warm.send_message, whose trailing empty send fails once the kept
        # process has answered and hung up: a run as short as --version can be that quick).
        assert conn.sendmsg([data], ancillary if fds else []) == len(data)
        for fd in (stdin, out_write, err_write):
            os.close(fd)
        return conn, os.fdopen(out_read), os.fdopen(err_read)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(timeout=30)


def lines_of(conn: socket.socket) -> list[str]:
    """What the kept process says on a connection until it hangs up."""
    conn.settimeout(60)
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data.decode().splitlines()


def test_a_signal_for_a_run_reaches_its_whole_group_when_it_leads_one_else_only_itself():
    code = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
            "time.sleep(60)']); print(child.pid, flush=True); time.sleep(60)")
    leader = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    other = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        grandchild = int(leader.stdout.readline())
        server.signal_run(leader.pid, signal.SIGTERM)
        assert leader.wait(timeout=10) == -signal.SIGTERM
        wait_for(lambda: not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat")
                 .read_text().split()[2], 10, "the run's own child to end too")
        other_child = int(other.stdout.readline())
        server.signal_run(other_child, signal.SIGTERM)  # not a group leader: its group is not signalled
        wait_for(lambda: not Path(f"/proc/{other_child}").exists() or "Z" in Path(f"/proc/{other_child}/stat")
                 .read_text().split()[2], 10, "the child to end")
        assert other.poll() is None  # its parent, in the same group, lives on
        server.signal_run(2 ** 22 + 11, signal.SIGTERM)  # a run already gone: nothing to do, nothing raised
    finally:
        for proc in (leader, other):
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # each leads its own group (start_new_session)
            except ProcessLookupError:
                pass
            proc.communicate()


def test_the_peer_of_a_connection_is_this_user():
    one, two = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with one, two:
        assert server.peer_uid(one) == os.getuid()


def test_one_kept_process_per_socket_and_its_lock_names_its_pid(tmp_path):
    path = tmp_path / "abc.sock"
    held = server.take_lock(path)
    code = "import sys; from pathlib import Path; from fleet.warm.server import take_lock; take_lock(Path(sys.argv[1])); print('took it')"
    try:
        assert path.with_suffix(".lock").read_text() == f"{os.getpid()}\n"
        second = subprocess.run([PYTHON, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        assert (second.returncode, second.stdout) == (0, "")  # leaves at once, quietly
        assert path.with_suffix(".lock").read_text() == f"{os.getpid()}\n"  # and leaves the pid alone
    finally:
        held.close()
    third = subprocess.run([PYTHON, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert third.stdout == "took it\n"


def test_a_kept_process_serves_runs_lists_itself_and_retires_cleanly_when_asked(runtime, tmp_path):
    kept = Kept(tmp_path)
    try:
        kept.wait_ready()
        assert warm.server_pids(str(kept.anchor)) == [kept.proc.pid]
        assert kept.socket.stat().st_mode & 0o777 == 0o600

        refused, out, err = kept.ask(["--version"], tmp_path, protocol=99)  # not what fleet-ansible-playbook sends
        assert lines_of(refused) == []
        for handle in (refused, out, err):
            handle.close()
        assert kept.proc.poll() is None and kept.socket.exists()

        conn, out, err = kept.ask(["--version"], tmp_path)
        said = lines_of(conn)
        with conn, out, err:
            printed = out.read()
            err.read()
        assert said[0].startswith("P ") and said[1:] == ["X 0"]  # the run's pid, then how it ended
        assert printed.startswith("ansible-playbook [core ")  # Ansible's own entry point ran, on our descriptors
        listed = warm.kept_processes(str(kept.anchor))
        assert [(p["pid"], p["runs"], p["hosts"]) for p in listed] == [(kept.proc.pid, 1, ["all"])]

        assert warm.stop_servers(str(kept.anchor)) == 1
        assert kept.proc.wait(timeout=30) == 0
    finally:
        kept.stop()
    assert not kept.socket.exists() and not warm.state_path(kept.socket).exists()
    log = kept.log.read_text()
    assert "a request refused" in log and "ended: asked to stop" in log


def test_a_second_kept_process_for_the_same_socket_leaves_and_an_idle_one_ends_by_itself(runtime, tmp_path):
    kept = Kept(tmp_path, idle=1)
    try:
        kept.wait_ready()
        second = kept.start()
        assert second.wait(timeout=60) == 0
        assert warm.server_pids(str(kept.anchor)) == [kept.proc.pid]
        assert kept.proc.wait(timeout=60) == 0  # no run came for a second
    finally:
        kept.stop()
    assert "ended: idle" in kept.log.read_text()
    assert not kept.socket.exists()


def test_a_kept_process_whose_data_directory_is_gone_ends(runtime, tmp_path):
    kept = Kept(tmp_path)
    try:
        kept.wait_ready()
        shutil.rmtree(kept.anchor)
        assert kept.proc.wait(timeout=60) == 0
    finally:
        kept.stop()
    assert "ended: the data directory is gone" in kept.log.read_text()


def test_a_run_whose_client_goes_away_is_stopped(runtime, tmp_path):
    kept = Kept(tmp_path)
    playbook = tmp_path / "pause.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                        "    - ansible.builtin.pause:\n        seconds: 60\n")
    try:
        kept.wait_ready()
        conn, out, err = kept.ask([str(playbook), "-i", "localhost,", "-c", "local"], tmp_path)
        conn.settimeout(60)
        first = conn.recv(64).decode()
        assert first.startswith("P ")
        run_pid = int(first.split()[1])
        started = time.monotonic()
        conn.close()  # ansible-runner killed the client
        wait_for(lambda: not Path(f"/proc/{run_pid}").exists(), 30, "the run to be stopped and reaped")
        assert time.monotonic() - started < 30  # not the pause's 60 s
        assert kept.proc.poll() is None  # the kept process itself goes on
        out.close()
        err.close()
    finally:
        kept.stop()
