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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_rss_mib(pid: int) -> float:
    from fleet.processes import descendants

    return sum(rss_mib(p) for p in [pid, *descendants(pid)] if Path(f"/proc/{p}").exists())


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
                peak["tree"] = max(peak["tree"], tree_rss_mib(proc.pid))
            except OSError:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _wait_for_commit_check(data_dir, repo, port)
        time.sleep(3)
        idle = rss_mib(proc.pid)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=60)
        lab_down(data_dir)
    return {"hosts": hosts, "idle_mib": idle, "peak_serve_mib": peak["serve"], "peak_tree_mib": peak["tree"]}


def _wait_for_commit_check(data_dir: Path, repo: Path, port: int, timeout: float = 900) -> None:
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
