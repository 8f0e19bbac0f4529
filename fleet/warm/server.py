"""The kept Ansible process: `python -m fleet.warm.server SOCKET DATA_DIR` (started by fleet-ansible-playbook).

It imports Ansible once in the environment of the run that started it, starts Mitogen's multiplexers
when that run uses Mitogen (so the interpreters on the hosts outlive each run), and then forks one
child per run handed to it over its socket. It stops a run's whole process group when the client
that asked for it goes away (ansible-runner killed it, or its fleet process died), and ends when no
run came for the idle time the last run named, when the data directory is gone, when a multiplexer
died, or after MAX_AGE (the next run starts a fresh one), leaving no run behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fleet import ansible_compat, processes, warm

log = logging.getLogger("fleet.warm")
DEFAULT_IDLE = 120  # seconds, when the run that started it named none
MAX_AGE = 4 * 3600  # seconds: hosts' interpreters and Mitogen's caches start afresh at least this often
TICK = 2.0  # seconds between looks at the idle time and the data directory


@dataclass
class Run:
    pid: int
    conn: socket.socket
    idle: int
    abandoned: bool = False  # its client went away: stopped, waiting to be reaped


def signal_run(pid: int, number: int) -> None:
    """Give a run's group the signal its client got (ansible-runner stopping it), or the child alone."""
    try:
        os.killpg(pid, number) if os.getpgid(pid) == pid else os.kill(pid, number)
    except OSError:
        pass


def take_lock(path: Path) -> IO[str]:
    """One kept process per socket: the second to start leaves at once."""
    handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(0)
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")  # for warm.stop_servers
    handle.flush()
    return handle


def prepare_ansible() -> tuple[dict[str, Any], set[int]]:
    """Import what every run needs; start Mitogen's multiplexers when runs use Mitogen."""
    from fleet.warm import child

    # What the imports warn of (a deprecated dependency), a fresh ansible-playbook prints first on every run:
    # each run's child prints it again on the run's stderr.
    with warnings.catch_warnings(record=True) as said:
        # The imports every run would pay.
        import ansible.cli.playbook
        import ansible.executor.playbook_executor  # noqa: F401
    child.import_warnings[:] = said

    child.install_collection_loader()  # before the multiplexers fork: they serve collection code to hosts
    muxes: set[int] = set()
    if os.environ.get("ANSIBLE_STRATEGY", "").startswith("mitogen"):
        # Mitogen pins its processes to CPUs of its own choosing: on two cores every Ansible fork on the
        # second, whatever CPUs this process was given (taskset, systemd's CPUAffinity, a second worker).
        # Runs keep the CPUs they were given and the kernel spreads them (Policy pins nothing).
        no_pinning = ansible_compat.internal("ansible_mitogen.affinity:Policy")
        ansible_compat.patch("ansible_mitogen.affinity:policy", lambda _pinning: no_pinning())
        child.serve_hops_per_run()
        model = ansible_compat.internal("ansible_mitogen.process:get_classic_worker_model")()
        muxes = {mux.pid for mux in model._muxes}
    return child.imported_settings(), muxes


def peer_uid(conn: socket.socket) -> int:
    uid: int
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return uid


class Server:
    def __init__(self, path: Path, anchor: str, imported: dict[str, Any], muxes: set[int], lock: IO[str]) -> None:
        self.path = path
        self.lock = lock
        self.anchor = anchor
        self.imported = imported
        self.muxes = muxes
        self.runs: dict[int, Run] = {}
        self.started = time.monotonic()
        self.idle_until = self.started + int(os.environ.get(warm.IDLE_ENV) or DEFAULT_IDLE)
        self.retiring = ""
        self.program = str(Path(sys.executable).parent / "ansible-playbook")
        self.listener = self._listen()
        self.state = warm.KeptState(path, anchor, muxes)  # what fleet status and healthz list
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.path.unlink(missing_ok=True)  # a socket left by a killed predecessor (we hold the lock)
        listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        listener.listen(64)
        self.identity = os.stat(self.path).st_ino
        return listener

    def _on_term(self, *_args: object) -> None:
        # Retire, not kill: the runs going on may be other callers' (a `fleet check` in a shell while `fleet
        # serve` stops cleanly); each ends with its caller, who can stop it, and the kept process after them.
        self.retire("asked to stop")

    def serve(self) -> None:
        log.info("kept Ansible process %s started for %s", os.getpid(), self.anchor)
        while not (self.retiring and not self.runs):
            watched: list[int | socket.socket] = [
                self.wake_r,
                *(run.conn for run in self.runs.values() if not run.abandoned),
            ]
            if not self.retiring:
                watched.append(self.listener)
            try:
                readable, _, _ = select.select(watched, [], [], TICK)
            except InterruptedError:
                continue
            for ready in readable:
                if ready is self.listener:
                    self._accept()
                elif ready == self.wake_r:
                    os.read(self.wake_r, 512)
                else:
                    assert isinstance(ready, socket.socket)  # the wake pipe is the one descriptor watched as an int
                    self._from_client(ready)
            self._reap()
            self._look_around()
        self._close()
        log.info("kept Ansible process %s ended: %s", os.getpid(), self.retiring)

    def retire(self, why: str) -> None:
        """Take no more runs; end when the running ones have."""
        if not self.retiring:
            self.retiring = why
            self._unlink_socket()

    def _look_around(self) -> None:
        now = time.monotonic()
        if not self.runs and now >= self.idle_until:
            self.retire("idle")
        elif not os.path.isdir(self.anchor):
            self.retire("the data directory is gone")
        elif now - self.started >= MAX_AGE:
            self.retire("age")

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            if peer_uid(conn) != os.getuid():
                raise PermissionError("a client of another user")
            conn.settimeout(5)
            request, fds = warm.receive_request(conn)
            conn.settimeout(None)
            if request.get("protocol") != warm.PROTOCOL or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                raise ConnectionError("a request fleet-ansible-playbook did not send")
        except (OSError, ValueError, ConnectionError) as problem:
            log.warning("a request refused: %s", problem)
            conn.close()
            return
        self._start(conn, request, fds)

    def _start(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        from fleet.warm import child

        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            self.lock.close()  # a run that outlives this process must not keep the next one from starting
            os.close(self.wake_r)
            for run in self.runs.values():
                run.conn.close()
            child.run(request, fds, conn, self.imported, self.program)
        for fd in fds:
            os.close(fd)
        self.state.served(request)
        idle = int(request["env"].get(warm.IDLE_ENV) or DEFAULT_IDLE)
        self.runs[pid] = Run(pid, conn, idle)
        self._send(conn, f"P {pid}")

    def _from_client(self, conn: socket.socket) -> None:
        run = next((r for r in self.runs.values() if r.conn is conn), None)
        if run is None:
            return
        try:
            data = conn.recv(256)
        except OSError:
            data = b""
        if not data:  # the client is gone: nobody waits for this run any more
            run.abandoned = True
            processes.kill_leader_tree(run.pid)
            return
        for line in data.decode(errors="replace").splitlines():
            kind, _, value = line.partition(" ")
            if kind == "S" and value.isdigit():
                signal_run(run.pid, int(value))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.muxes:
                self.retire(f"Mitogen's multiplexer {pid} ended")
            run = self.runs.pop(pid, None)
            if run is not None:
                self._send(run.conn, f"X {status}")
                run.conn.close()
                self.idle_until = max(self.idle_until, time.monotonic() + run.idle)

    def _send(self, conn: socket.socket, line: str) -> None:
        try:
            conn.sendall(f"{line}\n".encode())
        except OSError:
            pass

    def _unlink_socket(self) -> None:
        try:
            if os.stat(self.path).st_ino == self.identity:
                self.path.unlink()
        except OSError:
            pass

    def _close(self) -> None:
        self.listener.close()
        self.state.remove()
        self._unlink_socket()


def main() -> None:
    path, anchor = Path(sys.argv[1]), sys.argv[2]
    logging.basicConfig(level=logging.INFO, handlers=[warm.LogHandler(anchor)])  # size-bounded, rotated
    lock = take_lock(path)
    imported, muxes = prepare_ansible()
    os.chdir("/")  # hold no revision's directory open
    Server(path, anchor, imported, muxes, lock).serve()
    lock.close()


if __name__ == "__main__":
    main()
