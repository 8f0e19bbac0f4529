"""What `pip install .` gives a user: the freshly built wheel in a fresh venv, away from the source tree.

The other tests run the editable install, which reads templates, static files
and the callback plugin straight from the checkout; only a real wheel shows
whether they were packaged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fleet import warm
from tests.conftest import PROJECT, FleetCli, ServeProcess, make_source, wait_for

pytestmark = pytest.mark.lab

SUBNET = 40  # loopback 127.0.40.x and .41.x belong to this test
PASSWORD = "a wheel-test password"


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, bin/ of a fresh venv that installed it and its dependencies)."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools reuses a build/ folder it finds in the project,
    # and a file left there by an earlier build could hide one the wheel misses.
    source = root / "project"
    shutil.copytree(PROJECT, source, ignore=shutil.ignore_patterns(
        ".*", "build", "*.egg-info", "__pycache__", "test-artifacts"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", root / "dist", source, cwd=root)
    [wheel] = (root / "dist").glob("fleet-*.whl")
    run(sys.executable, "-m", "venv", root / "venv", cwd=root)
    run(root / "venv" / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=root)
    return wheel, root / "venv" / "bin"


def test_the_wheel_holds_the_whole_product_and_only_the_fleet_package(installed):
    wheel, bin_dir = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"fleet"}
    # Every module of fleet/ and every file of web/ (templates and static files too), by its installed name.
    expected = {f"fleet/{p.relative_to(PROJECT / 'fleet')}" for p in (PROJECT / "fleet").rglob("*.py")}
    expected |= {f"fleet/web/{p.relative_to(PROJECT / 'web')}" for p in (PROJECT / "web").rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    assert "fleet/ansible_plugins/callback/awx_display.py" in expected
    assert "fleet/web/templates/dashboard/index.html" in expected and "fleet/web/static/fleet.css" in expected
    assert sorted(expected - names) == []

    # Run from outside the project, so the checkout cannot be what gets imported.
    where = run(bin_dir / "python", "-c", "import fleet, fleet.web, fleet.runner; "
                "print(fleet.__file__, fleet.runner.CALLBACK_DIR)", cwd=wheel.parent).stdout.split()
    site_packages = bin_dir.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    assert all(Path(p).is_relative_to(site_packages) and Path(p).exists() for p in where), where
    assert subprocess.run([bin_dir / "python", "-c", "import web"], cwd=wheel.parent,
                          capture_output=True).returncode != 0, "a top-level `web` package was installed"


def log_in(serve: ServeProcess, name: str, password: str) -> tuple[urllib.request.OpenerDirector, str]:
    """A browser's way in: the login form, its CSRF token, the session cookie; (opener, dashboard HTML)."""
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = browser.open(serve.url("/login"), timeout=10).read().decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    body = urlencode({"csrf_token": csrf, "name": name, "password": password}).encode()
    with browser.open(serve.url("/login"), data=body, timeout=10) as landed:  # redirected to the dashboard
        assert landed.status == 200 and landed.url == serve.url("/"), landed.url
        return browser, landed.read().decode()


@pytest.fixture
def lab(installed, tmp_path):
    """Two lab hosts and a git source for them, driven by the installed `fleet`, run outside the project."""
    _wheel, bin_dir = installed
    assert not tmp_path.is_relative_to(PROJECT)
    cli = FleetCli(tmp_path / "data", tmp_path / "source", tmp_path, fleet=str(bin_dir / "fleet"))
    try:
        up = cli("lab", "up", "--hosts", "2", "--subnet", str(SUBNET))
        assert up.code == 0, up.stderr
        make_source(cli.repo, (cli.data_dir / "lab" / "hosts.yml").read_text())
        yield cli
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def test_the_installed_fleet_checks_lab_hosts_and_serves_its_pages(lab):
    check = lab("check", "--json")
    assert check.code == 2, check.stderr
    hosts = {h["name"]: h for h in check.json()["hosts"]}
    assert len(hosts) == 2 and all(h["status"] == "drifted" for h in hosts.values())
    # Only fleet's callback plugin reports a task's `check_mode: false`; without
    # it this read-only probe would not be listed as run for real in the check.
    for host in hosts.values():
        assert [t["task"] for t in host["executed_in_check"]] == ["Test the full sshd configuration"], host

    # The first check started the kept Ansible process from this venv; the next one is forked from it.
    # (One for runs, one for the syntax check of each new revision: their environments differ.)
    kept = wait_for(lambda: warm.server_pids(str(lab.data_dir)), 30, "the installed kept Ansible processes")
    interpreters = {Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()) for pid in kept}
    assert {path.parent for path in interpreters} == {Path(lab.fleet).parent}, interpreters
    again = lab("check", "--json")
    assert again.code == 2, again.stderr
    assert {h["name"]: [t["task"] for t in h["changed_tasks"]] for h in again.json()["hosts"]} == \
        {name: [t["task"] for t in h["changed_tasks"]] for name, h in hosts.items()}

    added = lab("user", "add", "tess", "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
    assert added.code == 0, added.stderr
    serve = ServeProcess(lab, poll_seconds=3600)  # the controller stays idle; the pages are what is tested
    serve.start()
    try:
        browser, dashboard = log_in(serve, "tess", PASSWORD)
        assert "Hosts per status" in dashboard and 'href="/static/fleet.css"' in dashboard
        host_list = browser.open(serve.url("/hosts"), timeout=10).read().decode()
        assert all(f'href="/hosts/{name}"' in host_list for name in hosts), host_list
        with browser.open(serve.url("/static/fleet.css"), timeout=10) as css:
            assert css.status == 200 and css.read() == (PROJECT / "web" / "static" / "fleet.css").read_bytes()
    finally:
        serve.stop()
