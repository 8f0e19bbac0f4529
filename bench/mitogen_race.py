"""`fleet check` against raw ansible-playbook with Mitogen, on the same lab hosts, and where the time goes.

Four contenders, interleaved in rounds in one session:

- raw: `ansible-playbook --check --diff` with Mitogen's strategy (its plugin directory found as
  fleet.runner finds it), no callback, nothing recorded, run again and again (warm);
- repeated: `fleet check --json`, again at the commit it checked before;
- commit: `fleet check --json` right after a trivial commit to the source, so it pays validation;
- cold: `fleet check --json` repeated with FLEET_WARM_ANSIBLE=false, so every run is a new
  ansible-playbook (fleet before the kept Ansible process): the "before" of the same session.

Each timing splits into the controller's CPU (the command's whole process tree, plus what fleet keeps
between runs: SSH masters, and the kept Ansible process with its runs and Mitogen's multiplexers), the
lab hosts' CPU (every process in each host's PID namespace, read from /proc before and after) and
waiting (wall minus both CPUs spread over the machine's cores).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BIN, FLEET, Timing, lab_down, lab_up, make_source, median, timed

RAW = "raw ansible-playbook + Mitogen, warm, no recording"
REPEATED = "fleet check --json, repeated at one commit"
COMMIT = "fleet check --json, first check of a new commit"
COLD = "fleet check --json, repeated, no kept Ansible process (FLEET_WARM_ANSIBLE=false: before)"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


@dataclass
class Sample:
    """One timed command: its wall time and where the CPU went."""

    wall: float
    controller_cpu: float  # the command's process tree and fleet's kept SSH masters
    host_cpu: float  # every process of every lab host
    code: int

    @property
    def waiting(self) -> float:
        return max(0.0, self.wall - (self.controller_cpu + self.host_cpu) / (os.cpu_count() or 1))


@dataclass
class Contender:
    name: str
    command: list[str]
    env: dict
    before: object = None  # called before each timed run (the commit contender commits)
    samples: list[Sample] = field(default_factory=list)

    def median_of(self, attribute: str) -> float:
        return median([getattr(s, attribute) for s in self.samples])

    def shown(self) -> str:
        return " ".join(self.command)


def mitogen_strategy_dir() -> str:
    """Mitogen's strategy plugin directory, found as fleet finds it; SystemExit when it cannot be used."""
    from fleet.runner import choose_strategy

    strategy = choose_strategy("auto")
    if strategy.plugin_dir is None:
        raise SystemExit(f"the mitogen section needs Mitogen: {strategy.reason}")
    return strategy.plugin_dir


def contenders(data_dir: Path, repo: Path, hosts: int) -> list[Contender]:
    ssh = data_dir / "ssh"
    base_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    raw = [str(BIN / "ansible-playbook"), "--check", "--diff", "-f", str(hosts), "-i", "inventory/",
           "--private-key", str(ssh / "id_ed25519"),
           "-e", f"ansible_ssh_common_args='-o UserKnownHostsFile={ssh / 'known_hosts'} "
                 "-o StrictHostKeyChecking=yes'",
           "playbooks/site.yml"]
    # A long connect timeout for both: on a loaded machine Mitogen's bootstrap can outlast the default 10 s, and
    # a host given up on would make a run look faster than it is.
    base_env["ANSIBLE_TIMEOUT"] = "60"
    raw_env = {**base_env, "ANSIBLE_STRATEGY": "mitogen_linear", "ANSIBLE_STRATEGY_PLUGINS": mitogen_strategy_dir()}
    fleet_env = {**base_env, "FLEET_DATA_DIR": str(data_dir), "FLEET_REPO": str(repo), "FLEET_FORKS": str(hosts),
                 "FLEET_SSH_PERSIST": "3600"}
    fleet = [FLEET, "check", "--json"]
    return [Contender(COMMIT, fleet, fleet_env, before=lambda: trivial_commit(repo)),
            Contender(REPEATED, fleet, fleet_env),
            Contender(COLD, fleet, {**fleet_env, "FLEET_WARM_ANSIBLE": "false"}),
            Contender(RAW, raw, raw_env)]


def trivial_commit(repo: Path) -> None:
    """A commit that changes nothing Ansible reads: the next check is the first of a new revision."""
    marker = repo / "BENCH-ROUND"
    marker.write_text(f"{int(marker.read_text()) + 1 if marker.exists() else 1}\n")
    env = {**os.environ, **GIT_ENV}
    for args in (["add", "BENCH-ROUND"], ["commit", "-qm", "bench: a new revision"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)


def measure(work: Path, hosts: int = 20, subnet: int = 71, rounds: int = 3) -> list[Contender]:
    """Start `hosts` fresh lab hosts and time each contender `rounds` times, interleaved, after a warm-up."""
    data_dir = work / f"mitogen-{hosts}"
    inventory = lab_up(data_dir, hosts, subnet)
    try:
        repo = make_source(work / f"mitogen-source-{hosts}", inventory)
        runners = contenders(data_dir, repo, hosts)
        for contender in runners:  # warm-up: the first fetch and validation, SSH masters, page caches
            sample(contender, data_dir, repo)
        for contender in runners:
            contender.samples.clear()
        for _ in range(rounds):
            for contender in runners:
                contender.samples.append(sample(contender, data_dir, repo))
        return runners
    finally:
        lab_down(data_dir)


def sample(contender: Contender, data_dir: Path, repo: Path) -> Sample:
    if contender.before:
        contender.before()
    hosts_before, kept_before = lab_cpu(data_dir), kept_cpu(data_dir)
    timing: Timing = timed(contender.command, contender.env, repo)
    hosts_after, kept_after = lab_cpu(data_dir), kept_cpu(data_dir)
    kept = sum(cpu - kept_before.get(pid, 0.0) for pid, cpu in kept_after.items())
    return Sample(timing.wall, timing.cpu + kept, hosts_after - hosts_before, timing.code)


def lab_cpu(data_dir: Path) -> float:
    """CPU seconds used so far by every lab host's processes, those ended and reaped included."""
    total = 0.0
    for pid_file in (data_dir / "lab" / "hosts").glob("*/pid"):
        try:
            root = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        total += sum(process_cpu(pid, with_children=True) for pid in process_tree(root))
    return total


def process_tree(root: int) -> list[int]:
    """root and every process below it, from /proc's children lists."""
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def process_cpu(pid: int, with_children: bool = False) -> float:
    """utime+stime of a process (with its reaped children's cutime+cstime); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 (state) is fields[0]
    used = fields[11:15] if with_children else fields[11:13]  # utime stime cutime cstime
    return sum(int(value) for value in used) / CLOCK_TICKS


def kept_cpu(data_dir: Path) -> dict[int, float]:
    """CPU so far of what fleet keeps between runs, detached from the command, so not its child: each SSH
    master, and each kept Ansible process (with the runs it forked and reaped) and everything below it
    (Mitogen's multiplexers and their SSH connections)."""
    data = str(data_dir).encode()
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes()
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if words.startswith(b"ssh") and b"[mux]" in words and data in words:
            found[pid] = process_cpu(pid)
        elif b"fleet.warm.server" in words and data in words:
            found[pid] = process_cpu(pid, with_children=True)
            for below in process_tree(pid)[1:]:
                found[below] = process_cpu(below, with_children=True)
    return found


def report(runners: list[Contender], rounds: int, hosts: int) -> list[str]:
    named = {runner.name: runner for runner in runners}
    raw, repeated, commit, cold = named[RAW], named[REPEATED], named[COMMIT], named[COLD]
    lines = [f"## fleet check against raw ansible-playbook with Mitogen: {hosts} lab hosts, the example playbook",
             "",
             f"Median of {rounds} interleaved rounds after one warm-up round. Controller CPU: user+system of the "
             "command and all its children, plus what fleet keeps between runs (SSH masters; the kept Ansible "
             "process, the runs it forked, Mitogen's multiplexers and their connections). Host CPU: "
             "every process in the lab hosts' PID namespaces (sshd, Mitogen's interpreters, modules), from "
             f"/proc before and after. Waiting: wall minus both CPUs spread over {os.cpu_count()} cores.", "",
             "| contender | wall s | controller CPU s | host CPU s | waiting s | wall / raw Mitogen |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for runner in runners:
        lines.append(f"| {runner.name} | {runner.median_of('wall'):.1f} | {runner.median_of('controller_cpu'):.1f} "
                     f"| {runner.median_of('host_cpu'):.1f} | {runner.median_of('waiting'):.1f} "
                     f"| {runner.median_of('wall') / raw.median_of('wall'):.2f} |")
    repeat_ratio = repeated.median_of("wall") / raw.median_of("wall")
    commit_ratio = commit.median_of("wall") / repeated.median_of("wall")
    cold_ratio = cold.median_of("wall") / raw.median_of("wall")
    lines += ["", f"Goals: repeated fleet check at most 0.5 of raw Mitogen, issue 19 (measured **{repeat_ratio:.2f}**; "
              f"{cold_ratio:.2f} without the kept Ansible process); "
              f"the first check of a new commit at most 1.1 of a repeated one (measured **{commit_ratio:.2f}**).",
              "", "Exit codes (0 in sync, 2 drift): " + "; ".join(
                  f"{r.name}: {sorted({s.code for s in r.samples})}" for r in runners),
              "", "Walls per round (s): " + "; ".join(
                  f"{r.name}: {', '.join(f'{s.wall:.1f}' for s in r.samples)}" for r in runners),
              "", "Commands (run in the source checkout; the commit contender commits a one-line file first):", ""]
    lines += [f"- {r.name}: `{r.shown()}`" + _env_note(r) for r in runners]
    return lines + [""]


def _env_note(contender: Contender) -> str:
    names = ("ANSIBLE_STRATEGY", "ANSIBLE_STRATEGY_PLUGINS", "ANSIBLE_TIMEOUT", "FLEET_SSH_PERSIST", "FLEET_FORKS",
             "FLEET_WARM_ANSIBLE", "PYTHONPATH")
    return "".join(f" with {name}={contender.env[name]}" for name in names if name in contender.env)
