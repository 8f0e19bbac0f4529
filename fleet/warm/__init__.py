"""A kept Ansible: one long-lived process per data directory and Ansible environment that forks each run.

A fresh ansible-playbook pays, every run, for importing Ansible and, with Mitogen, for starting an
interpreter on every host and sending it Mitogen and Ansible's module code. The kept process
(`fleet.warm.server`) imports Ansible once and keeps Mitogen's multiplexers, so the interpreters on the
hosts live from one run to the next, like SSH masters under ControlPersist, and for as long
(FLEET_SSH_PERSIST, or until the next scheduled check).

ansible-runner still starts each run, but it starts `fleet-ansible-playbook` (`fleet.warm.client`) in
place of ansible-playbook. The client hands its terminal, arguments, environment and working
directory to the kept process, which forks a child that runs ansible-playbook's own entry point in
them. The child first checks that every Ansible setting it would compute equals the one the kept
process imported; if any differs the client runs the real ansible-playbook instead (so a kept
process can never run with another run's settings). Nothing about the run changes: same playbook,
same events through ansible-runner, same exit code.

This module holds what both sides share and nothing heavy: the client imports it on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path

ANCHOR_ENV = "FLEET_WARM_ANCHOR"  # the data directory: the kept process ends when it is gone
IDLE_ENV = "FLEET_WARM_IDLE"  # seconds the kept process waits for the next run after one ends
CLIENT_SCRIPT = "fleet-ansible-playbook"
PROTOCOL = 1
# Set per run by ansible-runner (the run's artifact directory) or by fleet (the revision's requirements);
# Ansible reads them while the run goes on, not at import, so the child takes them from the run.
PER_RUN_ENV = frozenset({
    "AWX_ISOLATED_DATA_DIR", "ANSIBLE_CACHE_PLUGIN_CONNECTION", "ANSIBLE_ROLES_PATH",
    "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "PWD", "OLDPWD", "_", "SHLVL",
    ANCHOR_ENV, IDLE_ENV,
})
# What Ansible, Mitogen and Python read of the environment at import (Ansible's settings are all ANSIBLE_*);
# other variables (fleet's own, a test's) reach the run's child all the same but need no kept process of
# their own. The child proves the settings equal whatever the key.
KEYED_PREFIXES = ("ANSIBLE_", "MITOGEN_", "PYTHON", "LC_")
KEYED_NAMES = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "USER", "LOGNAME"})
_SOCKET_PATH_MAX = 107
_HEADER = struct.Struct("!I")


def enabled_by(environ) -> bool:
    return bool(environ.get(ANCHOR_ENV))


def runtime_dir() -> Path | None:
    """A directory only this user can enter, for the kept processes' sockets; None when it is not safe.

    Not the data directory: its path may be too long for a socket's name.
    """
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    path = base / f"fleet-warm-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        found = path.lstat()
    except OSError:
        return None
    if not path.is_dir() or path.is_symlink() or found.st_uid != os.getuid() or found.st_mode & 0o077:
        return None
    return path


def _stat_mark(path: Path) -> str:
    try:
        found = path.stat()
    except OSError:
        return f"{path}:-"
    return f"{path}:{found.st_mtime_ns}:{found.st_size}"


def _code_marks() -> list[str]:
    """What changes when fleet, Ansible or Mitogen is upgraded in place: a kept process must not outlive that."""
    marks = [sys.executable, _stat_mark(Path(__file__))]
    for name in ("ansible", "ansible_mitogen"):
        for entry in sys.path:
            candidate = Path(entry or ".") / name / "__init__.py"
            if candidate.exists():
                marks.append(_stat_mark(candidate))
                break
    return marks


def _config_marks(environ, cwd: str) -> list[str]:
    """Every ansible.cfg Ansible might read from here that exists, by path and change time.

    Only those that exist: the directory of each revision differs, and a revision without an ansible.cfg
    must find the kept process of the one before.
    """
    candidates = [environ.get("ANSIBLE_CONFIG", ""), os.path.join(cwd, "ansible.cfg"),
                  os.path.expanduser("~/.ansible.cfg"), "/etc/ansible/ansible.cfg"]
    return [_stat_mark(Path(c)) for c in candidates if c and os.path.exists(c)]


def server_key(environ, cwd: str) -> str:
    """Which kept process may run this: everything Ansible reads at import, and fleet's own code."""
    settled = sorted((k, v) for k, v in environ.items()
                     if k not in PER_RUN_ENV and (k in KEYED_NAMES or k.startswith(KEYED_PREFIXES)))
    blob = json.dumps([PROTOCOL, settled, _config_marks(environ, cwd), _code_marks()])
    return hashlib.sha256(blob.encode()).hexdigest()


def anchor_prefix(anchor: str) -> str:
    return hashlib.sha256(os.path.realpath(anchor).encode()).hexdigest()[:10]


def socket_path(anchor: str, key: str) -> Path | None:
    directory = runtime_dir()
    if directory is None:
        return None
    path = directory / f"{anchor_prefix(anchor)}-{key[:16]}.sock"
    return path if len(str(path)) <= _SOCKET_PATH_MAX else None


def server_pids(anchor: str) -> list[int]:
    """The kept processes of one data directory that are alive, from the pid each wrote in its lock file."""
    directory = runtime_dir()
    found = []
    for lock in sorted(directory.glob(f"{anchor_prefix(anchor)}-*.lock")) if directory else []:
        try:
            pid = int(lock.read_text().strip() or 0)
            command = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except (OSError, ValueError):
            continue
        if b"fleet.warm.server" in command:
            found.append(pid)
    return found


def stop_servers(anchor: str) -> int:
    """Ask every kept process of a data directory to end (a clean stop of the controller); return how many."""
    pids = server_pids(anchor)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    return len(pids)


def send_message(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(message).encode()
    data = _HEADER.pack(len(body)) + body
    sent = 0
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
    sock.sendall(data[sent:])


def receive_request(sock: socket.socket) -> tuple[dict, list[int]]:
    """One framed message and the descriptors that came with it (closed again if the message is not whole)."""
    fds: list[int] = []
    data, ancillary, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(8 * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += list(struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4]))
    try:
        return _whole_message(sock, data), fds
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise


def _whole_message(sock: socket.socket, data: bytes) -> dict:
    if len(data) < _HEADER.size:
        raise ConnectionError("no request")
    (length,) = _HEADER.unpack(data[: _HEADER.size])
    body = data[_HEADER.size:]
    while len(body) < length:
        more = sock.recv(length - len(body))
        if not more:
            raise ConnectionError("the request was cut short")
        body += more
    return json.loads(body[:length])
