"""The real thing for the browser: lab hosts, a git source, `fleet serve`, and Debian's chromium.

Playwright for Python drives /usr/bin/chromium (apt's build, never a downloaded
one). Screenshots go to test-artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FLEET, PROJECT, FleetCli, make_source

SUBNET = 60  # other lab tests use 10 (demo), 20, 50
POLL_SECONDS = 2
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = PROJECT / "test-artifacts" / "screenshots"
OPERATOR, PASSWORD = "otto", "browser-test-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Server:
    """One `fleet serve` process on a free port; stopped with SIGTERM."""

    def __init__(self, cli: FleetCli):
        self.cli = cli
        self.port = free_port()
        self.log = cli.data_dir.parent / "serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "FLEET_DATA_DIR": str(self.cli.data_dir), "FLEET_REPO": str(self.cli.repo),
               "FLEET_POLL_INTERVAL": str(POLL_SECONDS), "FLEET_BIND": f"127.0.0.1:{self.port}"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([FLEET, "serve"], cwd=self.cli.cwd, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: self.healthy(), 30, "fleet serve to answer")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/api/v1/healthz"), timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def runs(cli: FleetCli) -> list[dict]:
    result = cli("runs", "--json", "--count", "50")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["runs"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two lab hosts, a source for them, an operator account, and `fleet serve` after its first check."""
    root = tmp_path_factory.mktemp("browser")
    cli = FleetCli(root / "data", root / "source", root)
    up = cli("lab", "up", "--hosts", "2", "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    server = Server(cli)
    try:
        make_source(root / "source", (root / "data" / "lab" / "hosts.yml").read_text())
        added = cli("user", "add", OPERATOR, "--role", "operator", "--password-stdin", input=PASSWORD + "\n")
        assert added.code == 0, added.stderr
        server.start()
        wait_for(lambda: any(r["kind"] == "check" and r["trigger"] == "commit" and r["status"] not in
                             ("queued", "running") for r in runs(cli)), 300, "the first commit check", 2)
        yield cli, server
    finally:
        server.stop()
        cli("lab", "down")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install chromium (make system does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
