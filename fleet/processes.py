"""Stopping a whole Ansible process tree.

ansible-runner stops a run by killing the process group of ansible-playbook,
but Mitogen's connection multiplexers start sessions of their own and would
outlive it, holding SSH connections and, after a crash, possibly still
working on hosts. So fleet collects every descendant first, then kills them
all; once a parent dies its children move to init and can no longer be found.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


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
        fields = stat[stat.rindex(")") + 2:].split()
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
    victims = [pid, *descendants(pid)]
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except OSError:
        pass
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except OSError:
            pass
    return victims
