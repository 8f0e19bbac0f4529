"""Stopping a run's work on its hosts: what a cancel or a timeout must do before the host locks go.

Killing Ansible on this machine does not stop what it started on a host: a
module's `sleep 45; touch /root/x` runs on once its SSH channel closes (sshd
sends no signal to a session without a terminal), under Mitogen (whose host
interpreters may be the kept process's, fleet.warm) and under plain SSH alike.

How the run's remote processes are told apart from everything else:
Ansible's ssh and Mitogen reach a host through one SSH master per (host, port,
user), named by fleet's ControlPath (runner.control_path). Every process a
session of that connection starts carries the connection in its environment
(`SSH_CONNECTION=client-ip client-port server-ip server-port`), and a reaper
sent through the same master sees the very same value. An operator's own
login, even as the same user from this machine, is another TCP connection, so
another value; another project's work is another connection too (and host
locks keep two fleet runs off one host). sudo's env_reset drops the variable,
so the reaper follows descendants by parent pid from the processes that carry
it; to keep that ancestry whole, the run's local Ansible is frozen (SIGSTOP)
while the reaper works, and killed after (the masters live outside its tree).

A host the run touched whose master is gone (the host or the network went
away) cannot be told about: nothing else identifies the old connection's
processes, so the answer is "not confirmed" and the host keeps its lock.
"""

from __future__ import annotations

import base64
import logging
import re
import shlex
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fleet import runner
from fleet.store.leases import KEPT_LOCK_MESSAGE

log = logging.getLogger("fleet.remote_stop")

REMOTE_MAY_RUN = KEPT_LOCK_MESSAGE  # what a host whose end could not be confirmed reads, before the reason
REAP_TIMEOUT = 15.0  # seconds one pass of the reaper may take (the run's lease must outlast it); past it, not confirmed
MASTER_TIMEOUT = 5.0  # seconds the local SSH master may take to say whether it is up
MAX_PARALLEL = 16
NO_ROOT = "(no root)"  # how the reaper says it was not allowed to signal what is left

# Runs on the host (python3, 3.5 or later), as the login user or as root through sudo. argv[2] is the
# SSH_CONNECTION of the reaper's own session (expanded by the login shell, before sudo drops it).
# Prints one last line: "fleet-stopped N" (every matching process gone) or "fleet-left N: why".
REAPER = r"""
import os, signal, sys, time
conn = sys.argv[2].encode()
if not conn.strip():
    print("fleet-left 0: the reaper's session has no SSH_CONNECTION"); sys.exit(3)
needle = b"SSH_CONNECTION=" + conn
me = os.getpid()

def table():
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except (OSError, IOError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        procs[int(name)] = (int(fields[1]), fields[0])
    return procs

def carries(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return needle in f.read().split(b"\0")
    except (OSError, IOError):
        return False

def victims():
    procs = table()
    mine, pid = set(), me
    while pid > 1 and pid not in mine:
        mine.add(pid)
        pid = procs.get(pid, (0, ""))[0]
    children = {}
    for child, (parent, _) in procs.items():
        children.setdefault(parent, []).append(child)
    found = set()
    frontier = [p for p in procs if p not in mine and p > 1 and carries(p)]
    while frontier:
        found.update(frontier)
        frontier = [c for p in frontier for c in children.get(p, []) if c not in found and c not in mine]
    return sorted(p for p in found if procs.get(p, (0, "Z"))[1] != "Z")

def may_signal(pid):
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno != 1
    return True

stopped, denied = set(), set()
for _ in range(40):
    left = victims()
    if not left:
        print("fleet-stopped %d" % len(stopped)); sys.exit(0)
    barred = [pid for pid in left if not may_signal(pid)]
    if barred:
        # Killing what it may would orphan the rest (root's, under sudo): their ancestry, all that ties them to
        # this connection, would be lost to a reaper that comes back as root. Freeze what it may, and say so.
        for pid in left:
            if pid not in barred:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except OSError:
                    pass
        print("fleet-left %d: not allowed to signal them (no root)" % len(barred)); sys.exit(3)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
                stopped.add(pid)
            except OSError as exc:
                if exc.errno == 1:
                    denied.add(pid)
    if denied and set(left) <= denied:
        break
    time.sleep(0.1)
left = victims()
why = "not allowed to signal them (no root)" if denied else "they outlived SIGKILL"
print("fleet-left %d: %s" % (len(left), why)); sys.exit(3)
"""


@dataclass(frozen=True)
class HostStop:
    """How stopping one host's remote work ended: confirmed (nothing of the run runs there) or not, and why."""

    host: str
    confirmed: bool
    detail: str  # what was done ("stopped 3 processes"), or why the end is not confirmed
    needs_root: bool = False  # processes were left that only root may signal (sudo asked for a password)


@dataclass(frozen=True)
class Connection:
    """How Ansible reaches hosts for this run: fleet's SSH settings (runner.ansible_env) and its key."""

    known_hosts: Path
    control_path_dir: Path
    ssh_persist: int
    identity: Path | None = None


def stop_remote_work(
    hosts: list[runner.InventoryHost],
    touched: set[str],
    connection: Connection,
    timeout: float = REAP_TIMEOUT,
    become_passwords: Callable[[list[str]], dict[str, str]] | None = None,
    keep_alive: Callable[[], None] = lambda: None,
) -> dict[str, HostStop]:
    """Stop the run's processes on each host, in parallel; one HostStop per host, by name.

    `touched` names the hosts the run's events say a task started on; events lag behind Ansible on a busy
    machine, so every host is looked at: one where the run's SSH master is up is reaped whatever they say,
    one without it holds nothing of the run unless a task started there. Where processes only root may
    signal were left because sudo wants a password, `become_passwords` (asked only then, as it costs an
    Ansible start) gives the inventory's, and the reaper runs again through sudo with it. `keep_alive` is
    called between those steps (the run renews its lease: each step may take a while).
    """
    if not hosts:
        return {}
    stops = _stop_hosts(hosts, connection, timeout, {}, touched)
    short = [h.name for h in hosts if stops[h.name].needs_root]
    if not short or become_passwords is None:
        return stops
    keep_alive()
    passwords = become_passwords(short)
    keep_alive()
    if passwords:
        stops.update(_stop_hosts([h for h in hosts if h.name in passwords], connection, timeout, passwords, touched))
    return stops


def _stop_hosts(
    hosts: list[runner.InventoryHost],
    connection: Connection,
    timeout: float,
    passwords: dict[str, str],
    touched: set[str],
) -> dict[str, HostStop]:
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(hosts))) as pool:
        stops = pool.map(lambda h: stop_host(h, connection, timeout, passwords.get(h.name), h.name in touched), hosts)
        return {stop.host: stop for stop in stops}


def stop_host(
    host: runner.InventoryHost,
    connection: Connection,
    timeout: float = REAP_TIMEOUT,
    become_password: str | None = None,
    touched: bool = True,
) -> HostStop:
    """Kill, through the run's own SSH master to `host`, every process its connection started there; as root
    when the login is root or sudo lets it (without a password, or with `become_password` on sudo's stdin).
    Without that master: nothing to do where no task of the run started (`touched` False), else unconfirmed."""
    base = ssh_command(host, connection)
    try:
        before = master_pid(base)
    except subprocess.TimeoutExpired:
        return HostStop(host.name, False, f"its SSH master did not answer within {MASTER_TIMEOUT:g}s")
    if before is None and not touched:
        return HostStop(host.name, True, "no task of the run started there")
    if before is None:
        return HostStop(
            host.name,
            False,
            "the run's SSH connection to it is gone (host or network down?), so its processes there cannot be found",
        )
    # ControlMaster=no first (ssh keeps an option's first value): the reaper never becomes a master itself.
    try:
        reaper = reaper_command(with_password=bool(become_password))
        proc = subprocess.run(
            [base[0], "-o", "ControlMaster=no", *base[1:], reaper],
            input=f"{become_password}\n" if become_password else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        after = master_pid(base)
    except subprocess.TimeoutExpired:
        return HostStop(host.name, False, f"stopping its processes took over {timeout:g}s")
    if after != before:  # it went to the host some other way, where it sees another connection's processes
        return HostStop(host.name, False, "the run's SSH connection to it ended while its processes were stopped")
    return judge_reaper(host.name, proc.returncode, proc.stdout, proc.stderr)


def master_pid(base: list[str]) -> int | None:
    """The pid of the SSH master the ssh command `base` would use (None when there is none)."""
    answer = subprocess.run(
        [*base[:-1], "-O", "check", base[-1]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=MASTER_TIMEOUT,
    )
    found = re.search(r"\(pid=(\d+)\)", answer.stderr)
    return int(found[1]) if answer.returncode == 0 and found else None


def judge_reaper(name: str, returncode: int, stdout: str, stderr: str) -> HostStop:
    """What the reaper's exit and last line say about one host."""
    lines = [line for line in stdout.splitlines() if line.startswith("fleet-")]
    last = lines[-1] if lines else ""
    if returncode == 0 and last.startswith("fleet-stopped "):
        count = int(last.split()[1])
        return HostStop(name, True, f"stopped {count} process{'es' if count != 1 else ''}")
    if last.startswith("fleet-left "):
        return HostStop(
            name, False, f"processes of the run are left: {last[len('fleet-left ') :]}", needs_root=NO_ROOT in last
        )
    said = (stderr.strip().splitlines() or ["no output"])[-1]
    return HostStop(name, False, f"the reaper could not run (exit {returncode}: {said})")


def ssh_command(host: runner.InventoryHost, connection: Connection) -> list[str]:
    """ssh as Ansible's ssh and Mitogen run it for `host` (so %C names the same master), ending in the address.

    Strict host-key checking against fleet's known_hosts (and the pins of jump hosts through -F) come from
    runner.ansible_env; the host's own ssh arguments (ProxyJump, ...) follow, as Ansible places them.
    """
    env = runner.ansible_env(connection.known_hosts, connection.control_path_dir, connection.ssh_persist)
    own, common, extra = (tuple(host.ssh_args) + ("", "", ""))[:3]
    command = ["ssh", *shlex.split(own or env["ANSIBLE_SSH_ARGS"]), "-o", "BatchMode=yes"]
    if connection.identity:
        command += ["-i", str(connection.identity)]
    command += ["-p", str(host.port)] + (["-l", host.user] if host.user else [])
    command += [*shlex.split(common), *shlex.split(extra)]
    return [*command, host.address]


def reaper_command(with_password: bool = False) -> str:
    """The remote shell command: the reaper as root (through sudo when the login is not root), else as the user.

    Processes under become run as root: only root may signal them. sudo asks no password (-n), or reads the
    one on the reaper's stdin (-S, no prompt). Without sudo the reaper still stops what the user may, and
    says what is left (the host then keeps its lock)."""
    encoded = base64.b64encode(REAPER.encode()).decode()
    python = 'python3 -c "$P" "$B" "$SSH_CONNECTION"'
    setup = f"P='import base64,sys; exec(base64.b64decode(sys.argv[1]))' B={encoded}; "
    sudo = "sudo -S -p ''" if with_password else "sudo -n"
    return setup + f'if [ "$(id -u)" = 0 ]; then {python}; else {sudo} {python} 2>/dev/null || {python}; fi'
