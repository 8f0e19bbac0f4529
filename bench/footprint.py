"""Resident memory of `fleet serve`: idle, and at its peak during a check of many hosts."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from bench.common import FLEET, lab_down, lab_up, make_source


def rss_mib(pid: int) -> float:
    return _kib_field(Path(f"/proc/{pid}/status"), "VmRSS:") / 1024


def tree_pss_mib(pid: int) -> float:
    """Proportional set size of pid and all its descendants.

    RSS would count the pages Ansible's forks share with their parent once per
    fork; PSS splits each shared page among its sharers, so the sum is real memory.
    """
    from fleet.processes import descendants

    return sum(_kib_field(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in [pid, *descendants(pid)]) / 1024


def _kib_field(path: Path, name: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:  # the process ended between listing and reading
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(name)), 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(work: Path, hosts: int, subnet: int) -> dict:
    data_dir = work / f"serve-{hosts}"
    inventory = lab_up(data_dir, hosts, subnet)
    repo = make_source(work / f"serve-source-{hosts}", inventory)
    port = free_port()
    env = {**os.environ, "FLEET_DATA_DIR": str(data_dir), "FLEET_REPO": str(repo), "FLEET_FORKS": str(hosts),
           "FLEET_BIND": f"127.0.0.1:{port}", "FLEET_POLL_INTERVAL": "3600"}
    proc = subprocess.Popen([FLEET, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = {"serve": 0.0, "tree": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak["serve"] = max(peak["serve"], rss_mib(proc.pid))
                peak["tree"] = max(peak["tree"], tree_pss_mib(proc.pid))
            except OSError:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _wait_for_commit_check(data_dir, repo)
        time.sleep(3)
        idle = rss_mib(proc.pid)
        masters = ssh_masters(data_dir)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=60)
        lab_down(data_dir)
    return {"hosts": hosts, "idle_mib": idle, "peak_serve_mib": peak["serve"], "peak_tree_mib": peak["tree"],
            "ssh_masters": len(masters), "ssh_masters_mib": sum(masters.values()) / 1024}


def ssh_masters(data_dir: Path) -> dict[int, int]:
    """pid -> PSS in KiB of the SSH masters kept open for the next run (they live outside serve's tree)."""
    marker = f"ssh: {data_dir / 'cp'}/".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(marker):
                    found[int(entry.name)] = _kib_field(entry / "smaps_rollup", "Pss:")
            except OSError:
                continue
    return found


def _wait_for_commit_check(data_dir: Path, repo: Path, timeout: float = 900) -> None:
    import json

    deadline = time.monotonic() + timeout
    env = {**os.environ, "FLEET_DATA_DIR": str(data_dir), "FLEET_REPO": str(repo)}
    while time.monotonic() < deadline:
        out = subprocess.run([FLEET, "runs", "--json"], env=env, capture_output=True, text=True).stdout
        runs = json.loads(out or '{"runs": []}')["runs"] if out.startswith("{") else []
        if any(r["trigger"] == "commit" and r["status"] not in ("queued", "running") for r in runs):
            return
        time.sleep(1)
    raise SystemExit("the commit check of the footprint benchmark did not finish")
