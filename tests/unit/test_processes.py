"""Stopping a whole process tree, including children that started sessions of their own."""

import os
import subprocess
import sys
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


def start_grandchild(tmp_path, die_with_parent: bool) -> tuple[subprocess.Popen, int, int]:
    """A parent process whose child (in a session of its own, as ansible-runner starts Ansible) asks, or not,
    to die with it, and has a child of its own (as Ansible forks workers); returns the parent and the pids of
    the child and of its own child."""
    pidfile = tmp_path / f"child-{die_with_parent}.pid"
    child = ("import os, subprocess, sys, time; from fleet.processes import die_with_parent_if_asked; "
             "die_with_parent_if_asked(); "
             "fork = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
             f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{fork.pid}}'); time.sleep(60)")
    parent = ("import os, subprocess, sys, time; "
              f"env = dict(os.environ, FLEET_DIE_WITH_PARENT={'1' if die_with_parent else '0'!r}); "
              f"subprocess.Popen([sys.executable, '-c', {child!r}], env=env, start_new_session=True); time.sleep(60)")
    started = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid, fork_pid = map(int, pidfile.read_text().split())
    return started, child_pid, fork_pid


def test_ansible_asked_to_die_with_its_worker_dies_with_its_own_children_when_the_worker_is_killed(tmp_path):
    parent, child, fork = start_grandchild(tmp_path, die_with_parent=True)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not (gone(child) and gone(fork)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child) and gone(fork)


def test_without_being_asked_it_outlives_its_parent(tmp_path):
    """What the test above guards against: a session of its own and SIGHUP ignored keep it running."""
    parent, child, fork = start_grandchild(tmp_path, die_with_parent=False)
    parent.kill()
    parent.wait()
    time.sleep(1)
    try:
        assert not gone(child) and not gone(fork)
    finally:
        os.kill(fork, 9)
        os.kill(child, 9)
