"""fleet-ansible-playbook: what ansible-runner starts in place of ansible-playbook when a kept Ansible may run it.

It asks the kept process of its data directory and Ansible environment to run these arguments on this
terminal; it forwards the signals it gets (ansible-runner stops a run with them) and ends as the run
ended. With no kept process it starts one for the next run and runs the real ansible-playbook itself,
as it does whenever the kept process says it cannot run this one. Either way the run is the same.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
from pathlib import Path
from types import FrameType
from typing import NoReturn

from fleet import processes, warm

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def real_ansible_playbook() -> str:
    """The ansible-playbook installed beside this script (or this interpreter), else the first on PATH."""
    for directory in (Path(sys.argv[0]).resolve().parent, Path(sys.executable).parent):
        if (directory / "ansible-playbook").exists():
            return str(directory / "ansible-playbook")
    return "ansible-playbook"


def run_cold(args: list[str], reason: str) -> NoReturn:
    """Become the real ansible-playbook (never returns), saying why to the runner and the log."""
    warm.write_report(os.environ, False, reason)
    take_back_terminal()
    program = real_ansible_playbook()
    os.execvp(program, [program, *args])


def start_server(path: Path, environ: dict[str, str]) -> None:
    """Start the kept process for the next run, detached; it gives way at once if another started first."""
    anchor = environ[warm.ANCHOR_ENV]
    try:
        with open(os.path.join(anchor, "warm-ansible.log"), "ab") as log:
            subprocess.Popen(
                [sys.executable, "-m", "fleet.warm.server", str(path), anchor],
                env=environ,
                cwd=os.getcwd(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
    except OSError:
        pass  # this run goes cold either way; the next one tries again


def give_up_terminal() -> None:
    """Let the run's child make our terminal its controlling terminal, as a fresh ansible-playbook has it
    (pause asks it for its foreground group). We lead its session (ansible-runner started us on a pty);
    giving it up sends our group a SIGHUP, which is ignored meanwhile."""
    if not os.isatty(0) or os.getsid(0) != os.getpid():
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        if terminal_session(0) == os.getpid():
            fcntl.ioctl(0, termios.TIOCNOTTY)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGHUP, previous)


def terminal_session(fd: int) -> int:
    """The session whose controlling terminal fd is (tcgetsid(3); Python's os has no tcgetsid)."""
    found = fcntl.ioctl(fd, getattr(termios, "TIOCGSID", 0x5429), bytes(4))  # 0x5429: Linux's TIOCGSID
    session: int = struct.unpack("i", found)[0]
    return session


def take_back_terminal() -> None:
    """The run goes cold after all: the real ansible-playbook gets the terminal as its controlling one."""
    if os.isatty(0) and os.getsid(0) == os.getpid():
        try:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        except OSError:
            pass


def die_with_parent() -> None:
    """A killed fleet worker must not leave its runs going: ask for SIGKILL when the parent dies."""
    if os.environ.get(processes.DIE_WITH_PARENT_ENV) == "1":
        processes.ask_for_signal_at_parent_death(signal.SIGKILL)


def unusable_socket_reason() -> str:
    if warm.runtime_dir() is None:
        return "socket directory unsafe (fleet-warm-<uid> not a directory of this user alone)"
    return "socket path too long (set XDG_RUNTIME_DIR or TMPDIR to a shorter directory)"


def connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def main() -> None:
    args = sys.argv[1:]
    die_with_parent()
    environ = dict(os.environ)
    if not warm.enabled_by(environ):
        run_cold(args, f"no data directory named ({warm.ANCHOR_ENV} unset)")
    path = warm.socket_path(environ[warm.ANCHOR_ENV], warm.server_key(environ, os.getcwd()))
    if path is None:
        run_cold(args, unusable_socket_reason())
    sock = connect(path)
    if sock is None:
        start_server(path, environ)
        run_cold(args, "no kept process yet (starting one)")
    Conversation(sock, args, environ).follow()


class Conversation:
    """One run handed to the kept process, from the request to the run's end."""

    def __init__(self, sock: socket.socket, args: list[str], environ: dict[str, str]):
        self.sock = sock
        self.args = args
        self.environ = environ
        self.child_pid: int | None = None
        self.lines = b""

    def follow(self) -> None:
        for number in FORWARDED:
            signal.signal(number, self._forward)
        give_up_terminal()
        try:
            warm.send_message(
                self.sock,
                {
                    "protocol": warm.PROTOCOL,
                    "argv": self.args,
                    "env": self.environ,
                    "cwd": os.getcwd(),
                    "client_pid": os.getpid(),
                },
                fds=[0, 1, 2],
            )
        except OSError as error:
            self.sock.close()
            run_cold(self.args, f"the kept process did not take the run ({error})")
        while True:
            line = self._next_line()
            if line is None and self.child_pid is None:  # it ended before starting this run: run it here
                self.sock.close()
                self._restore_signals()
                run_cold(self.args, "the kept process ended before starting this run")
            if line is None:
                self._server_lost()
            kind, _, value = line.partition(" ")
            if kind == "P":
                self.child_pid = int(value)
                warm.write_report(self.environ, True)
            elif kind == "F":  # this run's settings differ from the kept process's: run it as before
                self.sock.close()
                self._restore_signals()
                run_cold(self.args, value or "the kept process cannot run it")
            elif kind == "X":
                self._end_as(int(value))

    def _next_line(self) -> str | None:
        while b"\n" not in self.lines:
            try:
                data = self.sock.recv(4096)
            except OSError:  # reset: the kept process is gone
                data = b""
            if not data:
                return None
            self.lines += data
        line, _, self.lines = self.lines.partition(b"\n")
        return line.decode()

    def _forward(self, number: int, _frame: FrameType | None) -> None:
        try:
            self.sock.sendall(f"S {number}\n".encode())
        except OSError:
            pass

    def _restore_signals(self) -> None:
        for number in FORWARDED:
            signal.signal(number, signal.SIG_DFL)

    def _server_lost(self) -> NoReturn:
        """The kept process ended under this run: stop what it started, and fail the run saying so."""
        if self.child_pid:
            processes.kill_leader_tree(self.child_pid)
        sys.stderr.write("fleet: the kept Ansible process ended during this run; the run stopped with it\n")
        sys.stderr.flush()
        os._exit(1)

    def _end_as(self, status: int) -> NoReturn:
        """Exit as the run's ansible-playbook did: its code, or killed by its signal."""
        self._restore_signals()
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main()
