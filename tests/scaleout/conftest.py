"""Real parts for the scale-out tests: PostgreSQL, a redis broker, 20 lab hosts, `fleet worker` processes.

Everything here is a real process started by the test session and always stopped at the end. The
controller is either the CLI (`fleet check`) or `fleet serve`, both with FLEET_EXECUTOR=celery; the
workers and the controller share one PostgreSQL database (`fleet_scaleout`, emptied per module) and
one redis-server on a free loopback port. Tests read the shared store with plain SQL (`ScaleoutDb`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.ansible_processes import ansible_processes
from tests.conftest import (FLEET, FleetCli, ServeProcess, free_port, git, lab_ssh, reset_test_database,
                            wait_for)

SUBNET = 44  # web hosts 127.0.44.x, db hosts 127.0.45.x
LAB_HOSTS = 20
LEASE_SECONDS = 6
# Other test sessions share these 2 cores (load 15 seen): with Ansible's default 10 s connection timeout,
# and fleet's 5 s probe, some of 20 hosts came out unreachable. Given to the controller and every worker.
SLOW_MACHINE_ENV = {"FLEET_CONNECT_TIMEOUT": "30", "ANSIBLE_TIMEOUT": "60"}
SLOW_SECONDS = 4  # the slow task, after the apply: a kill lands while a shard's Ansible is still at work
APPLIED_FILE = "var/tmp/fleet-applied"  # one line per real apply, counted per host
DATABASE = "fleet_scaleout"
DATABASE_URL = f"postgresql://fleet:fleet@127.0.0.1/{DATABASE}"

PLAYBOOK = f"""---
- name: Scale-out test fleet
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the banner
      ansible.builtin.copy:
        dest: /etc/fleet-banner
        content: "managed by fleet for {{{{ inventory_hostname }}}}\\n"
        mode: "0644"
    - name: Write the role file
      ansible.builtin.template:
        src: templates/role.conf.j2
        dest: /etc/fleet-role.conf
        mode: "0644"
    - name: Create the state directory
      ansible.builtin.file:
        path: /var/lib/fleet-scaleout
        state: directory
        mode: "0755"
    # The shell module does not run in check mode (Ansible skips it), so only a converge appends.
    - name: Record an apply
      ansible.builtin.shell: echo applied >> /{APPLIED_FILE}
    # Runs in check mode too (wait_for has no check mode of its own) and changes nothing: every shard
    # spends a few seconds in Ansible after its applies, so a kill lands mid-shard with them done.
    - name: Take a moment
      ansible.builtin.wait_for:
        timeout: {SLOW_SECONDS}
      check_mode: false
"""

TEMPLATE = "role={{ group_names | join(',') }}\nhost={{ inventory_hostname }}\n"

# The apply record cannot be checked, by design; accepting it keeps the check verdicts in_sync/drifted.
# A yearly schedule: `fleet serve` starts no checks of its own beyond the first.
FLEET_YML = 'schedule: "0 0 1 1 *"\naccept_unverified:\n  - Record an apply\n'


# --- PostgreSQL --------------------------------------------------------------------------------------

def _as_postgres(sql: str) -> str:
    return subprocess.run(["su", "postgres", "-c", f"psql -qtAc \"{sql}\""], check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


def ensure_postgres() -> None:
    """The local cluster running, with role fleet/fleet and database fleet_scaleout (we are root)."""
    if shutil.which("pg_ctlcluster") is None:
        pytest.fail("the scale-out tests need PostgreSQL: apt-get install postgresql (make system does)")
    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], timeout=30).returncode != 0:
        version = sorted(os.listdir("/etc/postgresql"), key=float)[-1]
        subprocess.run(["pg_ctlcluster", version, "main", "start"], capture_output=True, timeout=120)
        wait_for(lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0, 60,
                 "PostgreSQL to accept connections")
    if _as_postgres("SELECT 1 FROM pg_roles WHERE rolname = 'fleet'") != "1":
        _as_postgres("CREATE ROLE fleet LOGIN PASSWORD 'fleet'")
    if _as_postgres(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
        subprocess.run(["su", "postgres", "-c", f"createdb -O fleet {DATABASE}"], check=True, timeout=60)


class ScaleoutDb:
    """Plain SQL on the shared store, one short connection per call (the store is written by other processes)."""

    def __init__(self, url: str):
        self.url = url

    def rows(self, sql: str, *params) -> list[dict]:
        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as connection:
            return connection.execute(sql, params).fetchall()

    def one(self, sql: str, *params) -> dict | None:
        found = self.rows(sql, *params)
        return found[0] if found else None

    def shards(self, run_id: int) -> list[dict]:
        return self.rows('SELECT * FROM shards WHERE run_id = %s ORDER BY "index"', run_id)

    def run(self, run_id: int) -> dict:
        return self.one("SELECT * FROM runs WHERE id = %s", run_id)

    def run_hosts(self, run_id: int) -> list[dict]:
        return self.rows("SELECT * FROM run_hosts WHERE run_id = %s ORDER BY host", run_id)

    def latest_run_id(self) -> int:
        row = self.one("SELECT max(id) AS id FROM runs")
        return row["id"] or 0


@pytest.fixture(scope="module")
def scaleout_db() -> ScaleoutDb:
    """fleet_scaleout on the local PostgreSQL, emptied for this module."""
    ensure_postgres()
    reset_test_database(DATABASE_URL)
    return ScaleoutDb(DATABASE_URL)


@pytest.fixture(autouse=True)
def database_under_test(monkeypatch):
    """Overrides tests/conftest.py's: scale-out tests use fleet_scaleout whatever FLEET_TEST_DATABASE_URL
    says (its fixture would empty and patch another database under processes that share this one)."""
    monkeypatch.setenv("FLEET_DATABASE_URL", DATABASE_URL)
    yield DATABASE_URL


# --- redis -------------------------------------------------------------------------------------------

class RedisServer:
    """A redis-server child on 127.0.0.1 and a free port, no persistence; killable and restartable on that port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("the scale-out tests need a broker: apt-get install redis-server (make system does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.answers, 20, f"redis-server on port {self.port} (log: {self.log})", interval=0.1)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a crash, with whatever it held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


# --- the lab and the source --------------------------------------------------------------------------

def make_scaleout_source(repo: Path, inventory_yaml: str) -> Path:
    """A git source: the small playbook above, its template, fleet.yml and the lab's inventory."""
    (repo / "playbooks" / "templates").mkdir(parents=True)
    (repo / "inventory").mkdir()
    (repo / "playbooks" / "site.yml").write_text(PLAYBOOK)
    (repo / "playbooks" / "templates" / "role.conf.j2").write_text(TEMPLATE)
    (repo / "inventory" / "hosts.yml").write_text(inventory_yaml)
    (repo / "fleet.yml").write_text(FLEET_YML)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "scale-out source")
    return repo


class ScaleoutCli(FleetCli):
    """`fleet` as the controller: the controller's data dir, the shared store, the broker, celery executor."""

    def __init__(self, data_dir: Path, repo: Path, cwd: Path, env: dict):
        super().__init__(data_dir, repo, cwd)
        self.env = env
        self.started: list[subprocess.Popen] = []  # background runs, stopped after each test if still going

    def __call__(self, *args: str, env: dict | None = None, **kwargs):
        return super().__call__(*args, env={**self.env, **(env or {})}, **kwargs)

    def full_env(self, env: dict | None = None) -> dict:
        return {**os.environ, "FLEET_DATA_DIR": str(self.data_dir), "FLEET_REPO": str(self.repo),
                **self.env, **(env or {})}

    def start(self, *args: str, out: Path, env: dict | None = None) -> subprocess.Popen:
        """`fleet ARGS` in the background (a run to kill a worker under): stdout in `out`, stderr beside it."""
        with open(out, "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
            self.started.append(subprocess.Popen([self.fleet, *args], cwd=self.cwd, env=self.full_env(env),
                                                 stdout=stdout, stderr=stderr))
        return self.started[-1]

    def stop_started(self) -> None:
        """SIGTERM (then SIGKILL) what a failed test left running, so the next test starts with no run of it."""
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.started.clear()


@dataclass
class Scaleout:
    root: Path
    cli: ScaleoutCli
    db: ScaleoutDb
    redis: RedisServer
    addresses: dict[str, str] = field(default_factory=dict)  # lab host name -> its loopback address

    @property
    def hosts(self) -> list[str]:
        return sorted(self.addresses)

    def applied_lines(self, hosts: list[str]) -> dict[str, int]:
        """Per host, the lines the converge's apply task left there, read over SSH, all hosts at once (a
        host's overlay lives in its own mount namespace)."""
        def count(host: str) -> int:
            return int(lab_ssh(self.cli, self.addresses[host], f"cat /{APPLIED_FILE} 2>/dev/null | wc -l"))
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            return dict(zip(hosts, pool.map(count, hosts)))

    def idle(self) -> bool:
        return not self.db.rows("SELECT id FROM runs WHERE status IN ('queued', 'running')")


@pytest.fixture(scope="module")
def scaleout(scaleout_db, redis_server):
    """20 fresh lab hosts on subnets 44/45, a source for them, and the controller's `fleet` (celery executor).

    A short root under /tmp: SSH control sockets are named inside the data dirs, and pytest's tmp paths
    are too long for them (fleet would warn and Mitogen reconnect every run). Kept afterwards: the
    workers' and the controller's logs are there."""
    root = Path(tempfile.mkdtemp(prefix="fso-", dir="/tmp"))
    env = {"FLEET_DATABASE_URL": DATABASE_URL, "FLEET_EXECUTOR": "celery", "FLEET_BROKER_URL": redis_server.url,
           "FLEET_LEASE_SECONDS": str(LEASE_SECONDS), **SLOW_MACHINE_ENV}
    cli = ScaleoutCli(root / "controller", root / "source", root, env)
    up = cli("lab", "up", "--hosts", str(LAB_HOSTS), "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        make_scaleout_source(cli.repo, (cli.data_dir / "lab" / "hosts.yml").read_text())
        lab = json.loads((cli.data_dir / "lab" / "lab.json").read_text())
        assert len(lab) == LAB_HOSTS, lab
        yield Scaleout(root, cli, scaleout_db, redis_server, {h["name"]: h["address"] for h in lab})
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


@pytest.fixture(autouse=True)
def stop_background_runs(request):
    yield
    if "scaleout" in request.fixturenames:
        request.getfixturevalue("scaleout").cli.stop_started()


# --- workers -----------------------------------------------------------------------------------------

# `fleet worker` as a different fleet version would run it (the brief's way of faking an old worker).
ODD_VERSION = "0.0.0-test"
ODD_WORKER = [sys.executable, "-c", "import sys, fleet; fleet.__version__ = '0.0.0-test'; "
              "from fleet.cli import main; sys.argv[0] = 'fleet'; main()"]


class WorkerProcess:
    """One `fleet worker --concurrency 1` with its own data dir (a copy of the controller's SSH key)."""

    def __init__(self, scaleout: Scaleout, name: str, command: list[str] | None = None):
        self.scaleout, self.name = scaleout, name
        self.command = command or [FLEET]
        self.data_dir = scaleout.root / "workers" / name.split("@")[0]
        self.log = scaleout.root / "workers" / f"{name.split('@')[0]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._copy_identity()
        env = {**os.environ, "FLEET_DATA_DIR": str(self.data_dir), "FLEET_REPO": str(self.scaleout.cli.repo),
               "FLEET_DATABASE_URL": DATABASE_URL, "FLEET_BROKER_URL": self.scaleout.redis.url,
               "FLEET_LEASE_SECONDS": str(LEASE_SECONDS), **SLOW_MACHINE_ENV}
        with open(self.log, "ab") as log:  # start_new_session: a kill -9 of it alone, as a lost machine
            self.proc = subprocess.Popen(
                [*self.command, "worker", "--concurrency", "1", "--queues", "fleet", "--name", self.name],
                cwd=self.data_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _copy_identity(self) -> None:
        ssh = self.data_dir / "ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)
        for name in ("id_ed25519", "id_ed25519.pub"):
            shutil.copy2(self.scaleout.cli.data_dir / "ssh" / name, ssh / name)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 90) -> dict:
        """Its row in `workers` written by this very process, with a heartbeat of the last lease period."""
        def fresh():
            assert self.alive(), f"worker {self.name} exited with {self.proc.returncode}; log: {self.tail()}"
            return self.scaleout.db.one(
                "SELECT * FROM workers WHERE name = %s AND pid = %s AND heartbeat_at > now() - %s * interval '1 s'",
                self.name, self.pid, LEASE_SECONDS)
        return wait_for(fresh, timeout, f"a fresh heartbeat of worker {self.name}")

    def kill(self) -> tuple[float, float]:
        """kill -9, as a machine lost. The Ansible it started must die with it (fleet asks Linux for that:
        PR_SET_PDEATHSIG), so nothing goes on changing hosts whose shard the controller gives up: asserted
        here. Returns the monotonic time of the kill and how long its Ansible took to be gone."""
        self.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        self.proc.wait(timeout=10)
        wait_for(lambda: not ansible_processes(self.data_dir), ORPHAN_GOAL_SECONDS,
                 f"the ansible-playbook of killed worker {self.name} to die with it")
        gone_after = time.monotonic() - killed_at
        kill_leftovers(self.data_dir)  # its idle SSH masters (ControlPersist) outlive it by design
        return killed_at, gone_after

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def processes_under(path: Path, command_word: str) -> list[int]:
    """Pids of processes whose command line holds `command_word` and that belong to `path` (their command
    line, working directory or FLEET_DATA_DIR names it): a worker's Ansible processes, by its data dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if command_word not in cmdline:
                continue
            where = cmdline + " " + os.readlink(entry / "cwd") + " " + (entry / "environ").read_bytes().decode(
                errors="replace")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if str(path) in where:
            found.append(int(entry.name))
    return found


def kill_leftovers(path: Path) -> int:
    """SIGKILL every process still working under `path`; how many there were."""
    killed = 0
    for pid in processes_under(path, ""):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


ORPHAN_GOAL_SECONDS = 15  # a killed worker's Ansible is gone within this


class WorkerPool:
    """The module's workers: w1 and w2 kept running between tests (restarted after a test kills one)."""

    def __init__(self, scaleout: Scaleout):
        self.scaleout = scaleout
        self.workers = {name: WorkerProcess(scaleout, name) for name in ("w1@scaleout", "w2@scaleout")}
        self.extra: list[WorkerProcess] = []

    def ensure_running(self) -> list[WorkerProcess]:
        for worker in self.workers.values():
            if not worker.alive():
                worker.start()
        for worker in self.workers.values():
            worker.wait_ready()
        return list(self.workers.values())

    def assert_alive(self) -> None:
        """Both workers still running: one stopped from outside (not by the test) fails with its log."""
        for worker in self.workers.values():
            assert worker.alive(), (f"worker {worker.name} exited ({worker.proc.returncode}) without the test "
                                    f"stopping it; its log ends:\n{worker.tail()}")

    def by_name(self, name: str) -> WorkerProcess:
        return self.workers[name]

    def start_extra(self, name: str, command: list[str]) -> WorkerProcess:
        worker = WorkerProcess(self.scaleout, name, command)
        self.extra.append(worker)
        worker.start()
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.name} ---\n{w.tail()}" for w in [*self.workers.values(), *self.extra])

    def stop_all(self) -> None:
        for worker in [*self.workers.values(), *self.extra]:
            worker.stop()
        kill_leftovers(self.scaleout.root / "workers")


@pytest.fixture(scope="module")
def workers(scaleout):
    pool = WorkerPool(scaleout)
    try:
        pool.ensure_running()
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="module")
def serve(scaleout, workers):
    """`fleet serve` as the celery controller (short poll), its start-up check over before the tests use it."""
    before = scaleout.db.latest_run_id()
    process = ServeProcess(scaleout.cli, poll_seconds=2, env=scaleout.cli.env)
    process.start()
    try:
        wait_for(lambda: scaleout.db.latest_run_id() > before, 120, "fleet serve's start-up check")
        wait_for(scaleout.idle, 240, "fleet serve's start-up runs to end")
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def bearer(scaleout) -> dict:
    created = scaleout.cli("token", "create", "scaleout", "--role", "operator")
    assert created.code == 0, created.stderr
    return {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
