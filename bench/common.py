"""Shared pieces of the benchmarks: lab hosts, a git source, timing a command."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLEET = str(BIN / "fleet")


@dataclass
class Timing:
    wall: float
    cpu: float  # user + system of the command and all its children
    code: int


def timed(command: list[str], env: dict, cwd: Path) -> Timing:
    """Run a command; wall time and the CPU time of its whole process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 2):
        sys.stderr.write(f"warning: {' '.join(command[:3])} exited {proc.returncode}: {proc.stderr[-500:]}\n")
    return Timing(wall, cpu, proc.returncode)


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def fleet(*args: str, data_dir: Path, repo: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "FLEET_DATA_DIR": str(data_dir), "FLEET_REPO": str(repo), **(env or {})}
    return subprocess.run([FLEET, *args], env=full_env, capture_output=True, text=True)


def lab_up(data_dir: Path, hosts: int, subnet: int) -> Path:
    """Start fresh lab hosts; return the inventory file the lab wrote."""
    proc = fleet("lab", "up", "--hosts", str(hosts), "--subnet", str(subnet), data_dir=data_dir, repo=data_dir)
    if proc.returncode != 0:
        raise SystemExit(f"lab up failed: {proc.stderr}")
    return data_dir / "lab" / "hosts.yml"


def lab_down(data_dir: Path) -> None:
    fleet("lab", "down", data_dir=data_dir, repo=data_dir)


def make_source(repo: Path, inventory: Path) -> Path:
    """The example playbooks and group vars, with the lab's inventory, as a git repository."""
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    shutil.copytree(PROJECT / "playbooks", repo / "playbooks")
    shutil.copytree(PROJECT / "inventory", repo / "inventory")
    shutil.copyfile(inventory, repo / "inventory" / "hosts.yml")
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
               "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "bench source"]):
        subprocess.run(["git", *args], cwd=repo, env=git_env, check=True)
    return repo


def machine_description() -> str:
    cpus = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {cpus} cores, {memory:.0f} GiB, {platform.platform()}, Python {platform.python_version()}"


def package_versions() -> str:
    from importlib.metadata import version

    names = ["ansible-core", "ansible-runner", "mitogen", "ara", "Flask", "SQLAlchemy"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except Exception:
            found.append(f"{name} (not installed)")
    return ", ".join(found)
