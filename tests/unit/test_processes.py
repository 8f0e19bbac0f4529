"""Stopping a whole process tree, including children that started sessions of their own."""

import os
import subprocess
import time

from fleet.processes import descendants, kill_tree, parent_map

PARENTS = {10: 1, 11: 10, 12: 10, 13: 11, 14: 13, 20: 1, 21: 20}


def test_descendants_breadth_first():
    assert descendants(10, PARENTS) == [11, 12, 13, 14]


def test_a_leaf_has_no_descendants():
    assert descendants(14, PARENTS) == []


def test_parent_map_knows_this_process():
    assert parent_map()[os.getpid()] == os.getppid()


def test_kill_tree_of_nothing_does_nothing():
    assert kill_tree(None) == []


def gone(pid: int) -> bool:
    """Dead or a zombie (a zombie's parent has not reaped it yet; it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_kill_tree_reaches_a_child_in_a_session_of_its_own():
    # Like Mitogen's multiplexer: setsid takes one child out of the process group ansible-runner kills.
    parent = subprocess.Popen(["sh", "-c", "setsid sleep 60 & sleep 60"], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(descendants(parent.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    children = descendants(parent.pid)
    assert len(children) == 2
    killed = kill_tree(parent.pid)
    parent.wait(timeout=5)
    assert set(children) <= set(killed)
    deadline = time.monotonic() + 5
    while not all(gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(gone(pid) for pid in children)
