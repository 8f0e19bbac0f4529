"""Shared helpers: run the real `fleet` command, build real git sources."""

from __future__ import annotations

import functools
import importlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
FLEET = str(Path(sys.executable).parent / "fleet")


@dataclass
class FleetResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


class FleetCli:
    """Runs `fleet` as a user would, with its own data directory and source; by default this venv's."""

    def __init__(self, data_dir: Path, repo: Path, cwd: Path, fleet: str = FLEET):
        self.data_dir, self.repo, self.cwd, self.fleet = data_dir, repo, cwd, fleet

    def __call__(self, *args: str, timeout: float = 600, input: str | None = None,
                 env: dict | None = None) -> FleetResult:
        env = {**os.environ, "FLEET_DATA_DIR": str(self.data_dir), "FLEET_REPO": str(self.repo), **(env or {})}
        proc = subprocess.run([self.fleet, *args], cwd=self.cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, input=input)
        return FleetResult(proc.returncode, proc.stdout, proc.stderr)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Tess Ter", "GIT_AUTHOR_EMAIL": "tess@example.com",
           "GIT_COMMITTER_NAME": "Tess Ter", "GIT_COMMITTER_EMAIL": "tess@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def lab_ssh(cli: FleetCli, address: str, command: str) -> str:
    """Run a command on a lab host over real SSH, with fleet's key and pinned host keys."""
    data = cli.data_dir / "ssh"
    return subprocess.run(
        ["ssh", "-i", str(data / "id_ed25519"), "-o", f"UserKnownHostsFile={data / 'known_hosts'}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{address}", command],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout


def add_sudo_user(cli: FleetCli, address: str, password: str) -> None:
    """User `deploy` on a lab host: logs in with fleet's key, becomes root through sudo with `password`."""
    lab_ssh(cli, address, (
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/bash deploy && "
        f"echo 'deploy:{password}' | chpasswd && "
        "install -d -m 700 -o deploy -g deploy /home/deploy/.ssh && "
        "install -m 600 -o deploy -g deploy /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys && "
        "echo 'deploy ALL=(ALL:ALL) ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy"))


# Fields of a run's JSON that differ from run to run by nature (ids, times): left out to compare two runs.
VOLATILE = ("id", "run_id", "created_at", "started_at", "finished_at", "checked_at", "duration", "seconds")


def settled(value):
    """A run's JSON (or part of it) without its VOLATILE fields, at any depth."""
    if isinstance(value, dict):
        return {k: settled(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [settled(v) for v in value]
    return value


def control_dir(data_dir: Path) -> Path:
    """Where fleet keeps the data directory's SSH sockets (`<data dir>/cp`, or a shorter private one when that
    path is too long for a socket, as under pytest-xdist's longer temporary paths)."""
    from fleet.settings import Settings

    return Settings(repo="", data_dir=data_dir).control_path_dir


def ssh_masters(data_dir: Path) -> dict[str, int]:
    """Control socket name -> pid of the SSH master behind it, as each master itself answers."""
    masters = {}
    sockets = control_dir(data_dir)
    for sock in sockets.iterdir() if sockets.is_dir() else ():
        answer = subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "check", "x"],
                                capture_output=True, text=True, timeout=10)
        if answer.returncode == 0:
            masters[sock.name] = int(answer.stderr.split("pid=")[1].split(")")[0])
    return masters


def make_source(repo: Path, inventory_yaml: str) -> Path:
    """A git repository holding the project's example playbooks and group vars, with a given hosts.yml."""
    repo.mkdir(parents=True)
    shutil.copytree(PROJECT / "playbooks", repo / "playbooks")
    shutil.copytree(PROJECT / "inventory", repo / "inventory")
    (repo / "inventory" / "hosts.yml").write_text(inventory_yaml)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "example source")
    return repo


def settings_for_source(tmp_path: Path, fleet_yml: str):
    """Settings for a local git source of the example playbooks, no hosts, and this fleet.yml committed."""
    from fleet.settings import load_settings

    repo = make_source(tmp_path / "source", "all:\n  hosts: {}\n")
    (repo / "fleet.yml").write_text(fleet_yml)
    git(repo, "add", "fleet.yml")
    git(repo, "commit", "-qm", "policy")
    return load_settings(flags={"repo": str(repo), "data_dir": str(tmp_path / "data")}, environ={}, cwd=tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll condition until it returns something true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ServeProcess:
    """One real `fleet serve` on a free loopback port; restartable; stopped with a signal."""

    def __init__(self, cli: FleetCli, poll_seconds: int = 2, env: dict | None = None):
        self.cli = cli
        self.port = free_port()
        self.env = {"FLEET_POLL_INTERVAL": str(poll_seconds), **(env or {})}
        self.log = cli.data_dir.parent / "serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "FLEET_DATA_DIR": str(self.cli.data_dir), "FLEET_REPO": str(self.cli.repo),
               "FLEET_BIND": f"127.0.0.1:{self.port}", **self.env}
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([self.cli.fleet, "serve"], cwd=self.cli.cwd, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: self.get("/api/v1/healthz")[0] == 200, 30, "fleet serve to answer")

    def stop(self, sig=signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, dict]:
        return self.request("GET", path)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
        """(status, JSON body); status 0 when nothing answers."""
        req = urllib.request.Request(self.url(path), data=body or None, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError:
            return 0, {}


class JsonReceiver:
    """A loopback HTTP server keeping every POST's JSON body (a notification target); `close()` stops it."""

    def __init__(self):
        self.posts: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def titles(self) -> list[str]:
        return [p["title"] for p in self.posts]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# Folders whose tests are marked by where they live, so `-m "not browser"` and the like select them.
FOLDER_MARKERS = {"integration": "integration", "molecule": "integration", "faults": "integration",
                  "compat": "integration", "browser": "browser"}


# `make test` spreads the tests over pytest-xdist workers, a file at a time: a file's tests stay on one worker,
# in order, with its module fixtures. Files that start lab hosts on the same loopback subnet form one unit, so
# they run one after the other; every other lab file has a subnet of its own (see the table in docs/testing.md).
SHARED_LAB_SUBNETS = {
    "lab 28": ("integration/test_bastion.py", "faults/test_bastion_faults.py"),
    "lab 32": ("faults/test_file_faults.py", "integration/test_cli_audit.py", "integration/test_files.py"),
    "lab 35": ("integration/test_requirements.py", "integration/test_dynamic_inventory.py"),
}
# The long lab suites start first, so no worker is left with one of them at the end while the others idle.
LONG_FIRST = ("compat", "integration", "faults", "scaleout", "browser", "molecule")


def work_unit(path: str) -> str:
    """The unit of work a test file belongs to: its lab subnet's group, or the file itself."""
    path = path.removeprefix("tests/")
    return next((unit for unit, files in SHARED_LAB_SUBNETS.items() if path in files), path)


def start_order(item) -> int:
    folder = Path(str(item.fspath)).relative_to(PROJECT / "tests").parts[0]
    return LONG_FIRST.index(folder) if folder in LONG_FIRST else len(LONG_FIRST)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's own `loadgroup` has no effect with pytest 9 (it renames the items, which pytest 9 ignores):
    units are made here, from the test's file, and handed out in collection order (long suites first)."""
    from xdist.scheduler import LoadScopeScheduling

    class LabUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False
    return LabUnitScheduling(config, log)


def pytest_collection_modifyitems(items):
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])
    items.sort(key=start_order)  # stable: each file's tests keep their order


# The store-touching suites run a second time on PostgreSQL when this names a database (`make test` in CI);
# unset, every test keeps its own SQLite file under tmp_path.
TEST_DATABASE_URL = os.environ.get("FLEET_TEST_DATABASE_URL", "")


def worker_database(url: str) -> str:
    """The test database of this pytest-xdist worker: `<name>_gw0`, `<name>_gw1`, ... beside the one named
    (created from it the first time; the role needs CREATEDB, which .ci/run grants), so workers never
    empty each other's; the database named itself when the tests run in one process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker:
        return url
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from fleet.store.db import engine_url

    base = make_url(engine_url(url))
    name = f"{base.database}_{worker}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            if connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}) is None:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql", 1)


def reset_test_database(url: str) -> None:
    """Empty the test database: its other sessions (left by earlier tests) ended, the public schema remade."""
    from sqlalchemy import create_engine, text

    from fleet.store.db import engine_url

    engine = create_engine(engine_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                                    "current_database() AND usename = current_user AND pid <> pg_backend_pid()"))
            for schema in connection.scalars(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'store_%'")):
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))  # gone if a reset was cut short
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def postgres_stores(url: str):
    """A stand-in for engine_url that gives each SQLite file a test opens a schema of its own in the test
    database: the first one `public` (where the `fleet` processes it starts work too), the next ones
    store_2, store_3, ... (a test comparing two stores keeps them apart, as two files would be)."""
    from sqlalchemy import create_engine, text

    from fleet.store.db import engine_url

    schemas: dict[str, str] = {}

    def schema_url(database_url: str) -> str:
        if not database_url.startswith("sqlite"):
            return engine_url(database_url)
        if database_url not in schemas:
            schemas[database_url] = "public" if not schemas else f"store_{len(schemas) + 1}"
            if schemas[database_url] != "public":
                engine = create_engine(engine_url(url), isolation_level="AUTOCOMMIT")
                with engine.connect() as connection:
                    connection.execute(text(f"CREATE SCHEMA {schemas[database_url]}"))
                engine.dispose()
        separator = "&" if "?" in url else "?"
        return engine_url(f"{url}{separator}options=-csearch_path%3D{schemas[database_url]}")

    return schema_url


@pytest.fixture(autouse=True)
def database_under_test(request, monkeypatch):
    """With FLEET_TEST_DATABASE_URL set, every store a test opens, in process or in a `fleet` it starts,
    is that database, emptied first (tests marked sqlite_only keep SQLite: they read its file)."""
    if not TEST_DATABASE_URL or request.node.get_closest_marker("sqlite_only"):
        yield None
        return
    store_db = importlib.import_module("fleet.store.db")  # the module; fleet.store.db is also the handle's name
    url = _worker_database_url()
    reset_test_database(url)
    monkeypatch.setenv("FLEET_DATABASE_URL", url)
    monkeypatch.setattr(store_db, "engine_url", postgres_stores(url))
    engines = _record_engines(monkeypatch, store_db)
    yield url
    for engine in engines:  # psycopg warns of connections left to the garbage collector; close them here
        engine.dispose()


@functools.lru_cache(maxsize=1)
def _worker_database_url() -> str:
    return worker_database(TEST_DATABASE_URL)


def _record_engines(monkeypatch, store_db) -> list:
    engines, make_engine = [], store_db.create_engine

    def recording(*args, **kwargs):
        engines.append(make_engine(*args, **kwargs))
        return engines[-1]

    monkeypatch.setattr(store_db, "create_engine", recording)
    return engines


@pytest.fixture
def tmp_source(tmp_path):
    """A small local source with no reachable hosts, for tests that need no lab."""
    inventory = "all:\n  children:\n    web:\n      hosts:\n        web1: {ansible_host: 127.0.99.1}\n"
    return make_source(tmp_path / "source", inventory)


def pytest_sessionfinish(session, exitstatus):
    """Retire the kept Ansible processes this session's tests started: each waits for its next run as long as its
    SSH connections persist, up to an hour, long after the data directory it serves was a test's."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    base = str(factory.getbasetemp())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "fleet.warm.server" in argv and any(arg.startswith(base) for arg in argv):
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except OSError:
                pass
