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

import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

ANCHOR_ENV = "FLEET_WARM_ANCHOR"  # the data directory: the kept process ends when it is gone
IDLE_ENV = "FLEET_WARM_IDLE"  # seconds the kept process waits for the next run after one ends
CLIENT_SCRIPT = "fleet-ansible-playbook"
PROTOCOL = 1
# Set per run by ansible-runner (the run's artifact directory) or by fleet (the revision's roles);
# Ansible reads them while the run goes on, not at import, so the child takes them from the run.
# Not the collections path: Mitogen's multiplexers, forked once by the kept process, serve collection code
# to the hosts from the collection loader they were forked with, so a kept process serves one set of
# collections (keyed below by path and by each collection's files).
PER_RUN_ENV = frozenset(
    {
        "AWX_ISOLATED_DATA_DIR",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION",
        "ANSIBLE_ROLES_PATH",
        "PWD",
        "OLDPWD",
        "_",
        "SHLVL",
        ANCHOR_ENV,
        IDLE_ENV,
    }
)
# What Ansible, Mitogen and Python read of the environment at import (Ansible's settings are all ANSIBLE_*),
# and what the multiplexers' ssh keeps from the environment of the run that started them (agent, Kerberos
# ticket, proxies): a run with another value must not use that ssh. Other variables (fleet's own, a test's)
# reach the run's child all the same but need no kept process of their own. The child proves the settings
# equal whatever the key.
KEYED_PREFIXES = ("ANSIBLE_", "MITOGEN_", "PYTHON", "LC_")
KEYED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "USER",
        "LOGNAME",
        "SSH_AUTH_SOCK",
        "KRB5CCNAME",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    }
)
DEFAULT_COLLECTIONS_PATHS = ("~/.ansible/collections", "/usr/share/ansible/collections")  # Ansible's default
_SOCKET_PATH_MAX = 107
_HEADER = struct.Struct("!I")


def enabled_by(environ: Mapping[str, str]) -> bool:
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
    """What changes when fleet, Ansible, Mitogen or Jinja2 is upgraded in place: a kept process must not outlive
    that (an upgrade rewrites the package's __init__.py)."""
    marks = [sys.executable, _stat_mark(Path(__file__))]
    for name in ("ansible", "ansible_mitogen", "mitogen", "jinja2"):
        for entry in sys.path:
            candidate = Path(entry or ".") / name / "__init__.py"
            if candidate.exists():
                marks.append(_stat_mark(candidate))
                break
    return marks


def collection_roots(environ: Mapping[str, str]) -> list[str]:
    """Where the kept process's collection loader looks for collections (each holds ansible_collections/): its
    collections path and Python's path (collections_scan_sys_path, on by default, finds the `ansible`
    package's collections). Not a playbook's directory: a run with collections there goes cold (fleet.warm.child)."""
    configured = environ.get("ANSIBLE_COLLECTIONS_PATH") or environ.get("ANSIBLE_COLLECTIONS_PATHS")
    paths = configured.split(os.pathsep) if configured else list(DEFAULT_COLLECTIONS_PATHS)
    return [os.path.expanduser(p) for p in paths if p] + [entry for entry in sys.path if entry]


def _collection_marks(environ: Mapping[str, str]) -> list[str]:
    """Every installed collection by path and its MANIFEST's change time: one installed, removed or upgraded
    (ansible-galaxy writes each collection's files anew) needs a kept process whose multiplexers see it."""
    marks = []
    for root in collection_roots(environ):
        base = Path(root) / "ansible_collections"
        try:
            namespaces = sorted(base.iterdir())
        except OSError:
            continue
        for namespace in namespaces:
            try:
                found = sorted(namespace.iterdir()) if namespace.is_dir() else []
            except OSError:
                continue
            marks += [_stat_mark(c / "MANIFEST.json") + "|" + _stat_mark(c) for c in found if c.is_dir()]
    return marks


def _config_marks(environ: Mapping[str, str], cwd: str) -> list[str]:
    """Every ansible.cfg Ansible might read from here that exists, by path and change time.

    Only those that exist: the directory of each revision differs, and a revision without an ansible.cfg
    must find the kept process of the one before.
    """
    candidates = [
        environ.get("ANSIBLE_CONFIG", ""),
        os.path.join(cwd, "ansible.cfg"),
        os.path.expanduser("~/.ansible.cfg"),
        "/etc/ansible/ansible.cfg",
    ]
    return [_stat_mark(Path(c)) for c in candidates if c and os.path.exists(c)]


def server_key(environ: Mapping[str, str], cwd: str) -> str:
    """Which kept process may run this: everything Ansible reads at import, and fleet's own code."""
    settled = sorted(
        (k, v)
        for k, v in environ.items()
        if k not in PER_RUN_ENV and (k in KEYED_NAMES or k.startswith(KEYED_PREFIXES))
    )
    blob = json.dumps([PROTOCOL, settled, _config_marks(environ, cwd), _code_marks(), _collection_marks(environ)])
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
    return [pid for _lock, pid in _live_locks(anchor)]


def _live_locks(anchor: str) -> list[tuple[Path, int]]:
    directory = runtime_dir()
    found = []
    for lock in sorted(directory.glob(f"{anchor_prefix(anchor)}-*.lock")) if directory else []:
        try:
            pid = int(lock.read_text().strip() or 0)
            command = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except (OSError, ValueError):
            continue
        if b"fleet.warm.server" in command:
            found.append((lock, pid))
    return found


def stop_servers(anchor: str) -> int:
    """Ask every kept process of a data directory to retire (a clean stop of the controller): take no more runs,
    end when the running ones have (they may be other callers'); return how many were asked."""
    pids = server_pids(anchor)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    return len(pids)


def send_message(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    body = json.dumps(message).encode()
    data = _HEADER.pack(len(body)) + body
    sent = 0
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
    if sent < len(data):  # sendall(b"") still sends: on a peer that answered and hung up, a false broken pipe
        sock.sendall(data[sent:])


def receive_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
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


def _whole_message(sock: socket.socket, data: bytes) -> dict[str, Any]:
    if len(data) < _HEADER.size:
        raise ConnectionError("no request")
    (length,) = _HEADER.unpack(data[: _HEADER.size])
    body = data[_HEADER.size :]
    while len(body) < length:
        more = sock.recv(length - len(body))
        if not more:
            raise ConnectionError("the request was cut short")
        body += more
    message: dict[str, Any] = json.loads(body[:length])
    return message


# --- the log of cold fallbacks and kept processes: bounded, written by the clients and the kept processes ---

LOG_NAME = "warm-ansible.log"
LOG_MAX_BYTES = 1024 * 1024  # past this the log is rotated: LOG_NAME.1 .. LOG_NAME.<LOG_KEEP>
LOG_KEEP = 3


def log_path(anchor: str) -> Path:
    return Path(anchor) / LOG_NAME


def log_line(anchor: str, text: str) -> None:
    """Append one line to the data directory's warm-ansible.log, rotating it first when it is full.

    Under a lock on the file, so no line lands between another writer's copy and its emptying of the log.
    Never raises: a log that cannot be written must not stop a run.
    """
    path = log_path(anchor)
    try:
        with open(path, "ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file closes
            _rotate_if_full(path, handle.fileno())
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n".encode(errors="replace"))
    except OSError:
        pass


def _rotate_if_full(path: Path, fd: int) -> None:
    """Copy a full log to LOG_NAME.1 (older ones shift up, the oldest goes) and empty it in place.

    In place (copy, then truncate), not renamed: the kept processes' stderr is this same file, opened once
    in append mode, and must go on landing in it. The caller holds the file's lock.
    """
    if os.fstat(fd).st_size < LOG_MAX_BYTES:
        return
    for number in range(LOG_KEEP - 1, 0, -1):
        older = path.with_name(f"{LOG_NAME}.{number}")
        if older.exists():
            os.replace(older, path.with_name(f"{LOG_NAME}.{number + 1}"))
    shutil.copyfile(path, path.with_name(f"{LOG_NAME}.1"))
    os.truncate(fd, 0)


class LogHandler(logging.Handler):
    """logging's handler for the kept process: each record one line of the rotated warm-ansible.log.

    When its stderr is not that log (started by hand or by a test), records go to stderr as they are.
    """

    def __init__(self, anchor: str):
        super().__init__()
        self.anchor = anchor
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.to_log = _same_file(2, log_path(anchor))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.to_log:
                log_line(self.anchor, self.format(record))
            else:
                sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.format(record)}\n")
                sys.stderr.flush()
        except Exception:  # noqa: BLE001  logging must never end the kept process
            self.handleError(record)


def _same_file(fd: int, path: Path) -> bool:
    try:
        opened, named = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


# --- which path a run took: the client's word, written where the runner reads it after the run ---

REPORT_ENV = "FLEET_WARM_REPORT"  # a file in the run's private directory (fleet.runner sets it)
DISABLED_REASON = "FLEET_WARM_ANSIBLE=false"


def write_report(environ: Mapping[str, str], warm: bool, reason: str = "") -> None:
    """Say which path this run took (warm: forked from a kept process; cold: the real ansible-playbook, and
    why) to the file the runner named; a cold fallback is logged too. Never raises."""
    if not warm and environ.get(ANCHOR_ENV):
        log_line(environ[ANCHOR_ENV], f"fleet.warm a run goes cold (pid {os.getpid()}): {reason}")
    target = environ.get(REPORT_ENV)
    if not target:
        return
    try:
        _write_atomically(Path(target), {"warm": warm, "reason": "" if warm else reason})
    except OSError:
        pass


def read_report(path: Path) -> tuple[bool, str] | None:
    """What the client said of the run (warm, reason); None when it said nothing (it never started)."""
    try:
        said = json.loads(path.read_text())
        return bool(said["warm"]), str(said.get("reason") or "")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def path_text(warm: bool, reason: str = "") -> str:
    """How the store keeps a run's path: 'warm', or 'cold: <why>' (fleet.shapes.ansible_path_json reads it)."""
    return "warm" if warm else f"cold: {reason or 'unknown'}"


def _write_atomically(path: Path, data: Mapping[str, object]) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- what each kept process holds: a state file beside its lock, and the listing of fleet status / healthz ---

MAX_LISTED_HOSTS = 500  # a state file names at most this many hosts (the newest runs' first)


def state_path(socket_file: Path) -> Path:
    return socket_file.with_suffix(".json")


def hosts_of_argv(argv: list[str], cwd: str) -> list[str]:
    """The hosts a run names by its --limit (ansible-runner writes them to a file, `@path`); ['all'] without;
    none for a syntax check (it reaches no host)."""
    if "--syntax-check" in argv:
        return []
    value = None
    for index, arg in enumerate(argv):
        if arg in ("-l", "--limit") and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--limit="):
            value = arg.partition("=")[2]
    if value is None:
        return ["all"]
    if value.startswith("@"):
        try:
            return [line.strip() for line in Path(cwd, value[1:]).read_text().splitlines() if line.strip()]
        except OSError:
            return [value]
    return [name for name in value.replace(":", ",").split(",") if name]


class KeptData(TypedDict):
    """What a kept process's state file says (kept_processes reads it back)."""

    pid: int
    anchor: str
    started_at: float
    strategy: str
    multiplexers: list[int]
    runs: int
    hosts: list[str]
    last_run_at: float | None


class KeptState:
    """The state file of one kept process: pid, start, multiplexers, runs served and the hosts they named.

    With Mitogen those hosts are the ones it keeps interpreters on (until they idle out); written atomically
    on each run, removed when the process ends.
    """

    def __init__(self, socket_file: Path, anchor: str, muxes: set[int]) -> None:
        self.path = state_path(socket_file)
        self.data: KeptData = {
            "pid": os.getpid(),
            "anchor": anchor,
            "started_at": time.time(),
            "strategy": os.environ.get("ANSIBLE_STRATEGY", ""),
            "multiplexers": sorted(muxes),
            "runs": 0,
            "hosts": [],
            "last_run_at": None,
        }
        self._write()

    def served(self, request: dict[str, Any]) -> None:
        try:
            hosts = hosts_of_argv(list(request.get("argv") or []), str(request.get("cwd") or "/"))
        except (TypeError, ValueError):
            hosts = []
        known = [h for h in self.data["hosts"] if h not in hosts]
        self.data["hosts"] = (sorted(set(hosts)) + known)[:MAX_LISTED_HOSTS]
        self.data["runs"] += 1
        self.data["last_run_at"] = time.time()
        self._write()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        try:
            _write_atomically(self.path, self.data)
        except OSError:
            pass  # the listing shows the process without its hosts


def kept_processes(anchor: str) -> list[dict[str, Any]]:
    """The live kept processes of a data directory: pid, age, memory (from /proc) and the hosts of their runs."""
    return [kept_process_json(pid, _state_of(lock, pid), time.time()) for lock, pid in _live_locks(anchor)]


def _state_of(lock: Path, pid: int) -> dict[str, Any]:
    try:
        state = json.loads(lock.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("pid") == pid else {}


def kept_process_json(pid: int, state: dict[str, Any], now: float) -> dict[str, Any]:
    muxes = [m for m in state.get("multiplexers", []) if isinstance(m, int)]
    own = process_memory(pid)
    mux_memory = [process_memory(m) for m in muxes]
    started = state.get("started_at")
    return {
        "pid": pid,
        "age_seconds": round(now - started, 1) if isinstance(started, (int, float)) else None,
        "rss_kib": own.get("Rss"),
        # the kept process and its Mitogen multiplexers, shared pages counted once (proportional set size)
        "pss_kib": sum(m["Pss"] for m in [own, *mux_memory] if "Pss" in m) if "Pss" in own else None,
        "strategy": state.get("strategy") or None,
        "multiplexers": muxes,
        "runs": state.get("runs", 0),
        "last_run_at": state.get("last_run_at"),
        "hosts": list(state.get("hosts", [])),
    }


def process_memory(pid: int) -> dict[str, int]:
    """Rss and Pss of a process in KiB from /proc/PID/smaps_rollup; {} when it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss") and rest.split():
            found[name] = int(rest.split()[0])
    return found
