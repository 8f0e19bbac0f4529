"""Which Ansible processes are running for a data directory: tests that stop runs prove they are gone."""

from __future__ import annotations

from pathlib import Path

from fleet import processes

# The kernel keeps 15 characters of a process's name: ansible-playbook, its forks, and a run forked from
# the kept Ansible process (fleet.warm), which names itself so; the kept process and its Mitogen
# multiplexers are not runs and keep other names.
ANSIBLE_NAME = b"ansible-playboo"


def ansible_processes(data_dir: Path) -> list[int]:
    """Pids of ansible-playbook processes (and their forks) of this data directory, cold or forked from the
    kept process; SSH masters, the kept process and Mitogen's multiplexers are not counted."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_bytes().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if name != ANSIBLE_NAME and b"ansible-playbook" not in cmdline:
            continue
        if str(data_dir).encode() in cmdline or str(Path(data_dir).resolve()).encode() in cmdline:
            found.append(int(entry.name))
    return found


def host_interpreters(data_dir: Path) -> dict[str, dict[int, int]]:
    """Per lab host: Mitogen's interpreters on it, pid -> the controller-side multiplexer pid it names."""
    found = {}
    for pid_file in (data_dir / "lab" / "hosts").glob("*/pid"):
        found[pid_file.parent.name] = {}
        for pid in processes.descendants(int(pid_file.read_text())):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "(mitogen:" in command:
                found[pid_file.parent.name][pid] = int(command.rsplit(":", 1)[1].split(")")[0])
    return found


def login_interpreters(data_dir: Path) -> dict[str, set[int]]:
    """Per lab host: the interpreters Mitogen started over SSH, not those forked (or started through sudo) by
    another interpreter: a warm run's own contexts are those, and they end with the run's successor."""
    parents = processes.parent_map()
    found = {}
    for host, by_pid in host_interpreters(data_dir).items():
        found[host] = {pid for pid in by_pid if not _below_an_interpreter(pid, set(by_pid), parents)}
    return found


def _below_an_interpreter(pid: int, interpreters: set[int], parents: dict[int, int]) -> bool:
    ancestor = parents.get(pid, 0)
    while ancestor > 1:
        if ancestor in interpreters:
            return True
        ancestor = parents.get(ancestor, 0)
    return False
