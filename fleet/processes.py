"""Stopping a whole Ansible process tree.

ansible-runner stops a run by killing the process group of ansible-playbook,
but Mitogen's connection multiplexers start sessions of their own and would
outlive it, holding SSH connections and, after a crash, possibly still
working on hosts. So fleet collects every descendant first, then kills them
all; once a parent dies its children move to init and can no longer be found.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

# Set by `fleet worker` for the ansible-playbook it starts: Ansible dies with the worker that started it.
DIE_WITH_PARENT_ENV = "FLEET_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def parent_map() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int, parents: dict[int, int] | None = None) -> list[int]:
    """Every process below pid, breadth first."""
    parents = parent_map() if parents is None else parents
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, frontier = [], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        found += frontier
    return found


def kill_tree(pid: int | None) -> list[int]:
    """SIGKILL pid, its process group and every descendant; return the pids signalled."""
    if not pid:
        return []
    return _kill_tree(pid, group=_group_of(pid))


def kill_leader_tree(pid: int) -> list[int]:
    """SIGKILL pid and every descendant, and its process group only if pid leads it.

    For a process forked by another that is not to be touched (fleet.warm's kept process): until the
    child has made its own session, its group is its parent's.
    """
    return _kill_tree(pid, group=pid if _group_of(pid) == pid else None)


def freeze_tree(pid: int | None) -> list[int]:
    """SIGSTOP pid and every descendant (parents first), so none starts anything or closes a connection.

    For a run being stopped: its remote processes are found by their ancestry on the hosts
    (fleet.remote_stop), which holds only while the local ends of their SSH sessions stay open.
    SIGKILL (kill_tree) ends frozen processes as it ends running ones.
    """
    if not pid:
        return []
    frozen = []
    for victim in [pid, *descendants(pid)]:
        try:
            os.kill(victim, signal.SIGSTOP)
            frozen.append(victim)
        except OSError:
            pass
    return frozen


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _kill_tree(pid: int, group: int | None) -> list[int]:
    victims = [pid, *descendants(pid)]
    if group is not None:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    _sigkill_each(victims)
    return victims


def _sigkill_each(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def pid_alive(pid: int) -> bool:
    """Does a process of this pid run on this machine (someone else's too)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def die_with_parent_if_asked() -> None:
    """In ansible-playbook (fleet's callback calls this): with FLEET_DIE_WITH_PARENT=1, stop this process and
    every process it started when the fleet worker that started it dies, even by SIGKILL: a converge must
    not go on applying once its shard was given up. Linux sends SIGTERM at the parent's death
    (PR_SET_PDEATHSIG); the handler kills the whole tree (Ansible's forks and Mitogen's multiplexers would
    outlive their parent otherwise; ansible-runner starts Ansible ignoring SIGHUP). A parent already gone
    by now is noticed at once."""
    if os.environ.get(DIE_WITH_PARENT_ENV) != "1":
        return
    parent = os.getppid()
    try:
        signal.signal(signal.SIGTERM, _stop_this_tree)
    except ValueError:  # not the main thread: the service manager stops it
        return
    if not ask_for_signal_at_parent_death(signal.SIGTERM):
        return
    if os.getppid() != parent:
        _stop_this_tree()


def ask_for_signal_at_parent_death(number: int) -> bool:
    """PR_SET_PDEATHSIG: Linux sends this process `number` when its parent dies; False where it cannot."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        return False
    return True


def _stop_this_tree(*_signal_args: object) -> None:
    """SIGKILL every process below this one, then this one."""
    _sigkill_each(descendants(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
