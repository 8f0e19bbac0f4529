"""The real thing for the browser: lab hosts, a git source, `fleet serve`, and Debian's chromium.

Playwright for Python drives /usr/bin/chromium (apt's build, never a downloaded
one). Screenshots go to test-artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PROJECT, FleetCli, ServeProcess, make_source, wait_for

SUBNET = 60  # other lab tests use 10 (demo), 20, 50
POLL_SECONDS = 2
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = PROJECT / "test-artifacts" / "screenshots"
OPERATOR, PASSWORD = "otto", "browser-test-password"


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
    server = ServeProcess(cli, POLL_SECONDS)
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
