"""Scale-out on Celery workers: what a check costs the controller, and what a second worker core buys.

One session, 20 lab hosts, the example playbook, one PostgreSQL store (fleet_bench) and a redis-server child:

1. Controller CPU per host. A long-lived `fleet controller` runs the checks that `fleet request check` queues
   (a separate process, not counted). Its CPU is utime+stime of the process with cutime+cstime of its reaped
   children (Ansible with the local executor), plus the SSH masters kept under its data dir, read from /proc
   before and after each check at the same commit. Once with FLEET_EXECUTOR=local, once with =celery.
2. Throughput. The celery controller's checks run on one `fleet worker` pinned to core 0 (`taskset -c 0`),
   then on two pinned to cores 0 and 1, in interleaved rounds; a check's wall is its run's started_at to
   finished_at in the store. The lab hosts (sshd, the remote Python) run unpinned on the same cores.
3. Sizing, from those: hosts per worker core per 30-minute cycle, and worker cores for 10,000 hosts.

Every process started here is stopped at the end, the lab hosts included.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.common import BIN, FLEET, lab_down, lab_up, make_source, median
from bench.mitogen_race import GIT_ENV, kept_cpu, lab_cpu, process_cpu
from fleet.executor.dispatch import POLL_SECONDS

HOSTS = 20
SUBNET = 73
DATABASE_URL = "postgresql://fleet:fleet@127.0.0.1/fleet_bench"
CYCLE_MINUTES = 30
FLEET_SIZE = 10_000
RUN_TIMEOUT_SECONDS = 600
LOGS = Path("/tmp/fleet-bench-scaleout-logs")  # the processes' logs, kept after the bench's temporary dir is gone
IDLE_SECONDS = 5.0  # no run queued or running this long after its start: the controller's start-up work is over
# A yearly schedule: the controller starts no check of its own during the measurements.
FLEET_YML = 'schedule: "0 0 1 1 *"\n'
# Other helpers share these 2 cores: a loaded machine must not turn a slow handshake into an unreachable host.
SLOW_MACHINE_ENV = {"FLEET_CONNECT_TIMEOUT": "30", "ANSIBLE_TIMEOUT": "60"}
LOCAL, CELERY_TWO = "local executor (Ansible in the controller)", "celery executor, two workers"
ONE_WORKER, TWO_WORKERS = "one worker, core 0", "two workers, cores 0 and 1"


@dataclass
class Check:
    """One check the controller ran: its wall in the store, and CPU seconds from /proc around it."""

    wall: float  # the run's started_at to finished_at
    controller_cpu: float
    worker_cpu: float  # every worker with its reaped Ansible children and kept SSH masters (0 with local)
    host_cpu: float  # every process of every lab host (sshd, the remote Python), on the same cores
    verdicts: int  # hosts in sync or drifted: a real verdict each
    status: str


@dataclass
class Series:
    name: str
    checks: list[Check] = field(default_factory=list)

    def median_of(self, attribute: str) -> float:
        return median([getattr(c, attribute) for c in self.checks])

    @property
    def hosts_per_minute(self) -> float:
        return HOSTS * 60 / self.median_of("wall")


@dataclass
class Session:
    """The three series, and the machine's load average (1 minute) when the section began and ended."""

    local: Series
    one: Series
    two: Series
    load_before: float
    load_after: float


# --- the store -----------------------------------------------------------------------------------------

class BenchDb:
    """Plain SQL on the shared store, one short connection per call (other processes write it)."""

    def __init__(self, url: str):
        self.url = url

    def one(self, sql: str, *params):
        with psycopg.connect(self.url, autocommit=True) as connection:
            return connection.execute(sql, params).fetchone()

    def reset(self) -> None:
        """Empty the database: its other sessions ended, the public schema remade (fleet migrates it)."""
        self.one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND usename = current_user AND pid <> pg_backend_pid()")
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
            connection.execute("CREATE SCHEMA public")

    def busy(self) -> bool:
        return self.one("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")[0] > 0

    def leader_pid(self) -> int | None:
        row = self.one("SELECT leader_pid FROM controller_state WHERE id = 1 AND leader_id <> ''")
        return row[0] if row else None

    def worker_ready(self, name: str, pid: int) -> bool:
        return self.one("SELECT count(*) FROM workers WHERE name = %s AND pid = %s AND stopped_at IS NULL "
                        "AND heartbeat_at > now() - interval '10 seconds'", name, pid)[0] == 1

    def run(self, run_id: int) -> tuple:
        """status, wall seconds (started to finished), hosts with a verdict (in sync or drifted)."""
        return self.one("SELECT status, extract(epoch FROM finished_at - started_at), "
                        "hosts_in_sync + hosts_drifted FROM runs WHERE id = %s", run_id)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise SystemExit(f"scaleout bench: gave up waiting for {what} after {timeout:.0f}s")


def ensure_postgres() -> None:
    if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
        raise SystemExit("the scaleout section needs PostgreSQL on 127.0.0.1 with database fleet_bench "
                         "(pg_ctlcluster 15 main start)")


# --- processes -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen | None, timeout: float = 60) -> None:
    """SIGTERM (a worker's warm shutdown, the controller's clean stop), SIGKILL if it does not end."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Redis:
    """A redis-server child on a free loopback port, no persistence."""

    def __init__(self, workdir: Path):
        self.workdir, self.port, self.proc = workdir, free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("the scaleout section needs a broker: apt-get install redis-server (make system does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(LOGS / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save",
                                          "", "--appendonly", "no", "--dir", str(self.workdir)],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, 20, f"redis-server on port {self.port}", interval=0.1)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@dataclass
class Lab:
    """What every process of the session shares: the source, the store, the broker, the controller's data dir."""

    root: Path
    data_dir: Path
    repo: Path
    db: BenchDb
    broker_url: str

    def env(self, data_dir: Path, **extra: str) -> dict:
        return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
                "FLEET_DATA_DIR": str(data_dir), "FLEET_REPO": str(self.repo), "FLEET_DATABASE_URL": self.db.url,
                "FLEET_BROKER_URL": self.broker_url, "FLEET_FORKS": str(HOSTS), "FLEET_SSH_PERSIST": "3600",
                **SLOW_MACHINE_ENV, **extra}


class Worker:
    """`fleet worker --concurrency 1`, pinned to one core, with its own data dir (the controller's SSH key)."""

    def __init__(self, lab: Lab, name: str, core: int):
        self.lab, self.name, self.core = lab, name, core
        self.data_dir = lab.root / "workers" / name.split("@")[0]
        self.log = LOGS / f"worker-{name.split('@')[0]}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return ["taskset", "-c", str(self.core), FLEET, "worker", "--concurrency", "1", "--name", self.name]

    def start(self) -> None:
        self._copy_identity()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=self.data_dir, env=self.lab.env(self.data_dir),
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 90, f"a heartbeat of worker {self.name}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"worker {self.name} exited {self.proc.returncode}; see {self.log}")
        return self.lab.db.worker_ready(self.name, self.proc.pid)

    def _copy_identity(self) -> None:
        ssh = self.data_dir / "ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.chmod(0o700)
        for name in ("id_ed25519", "id_ed25519.pub"):
            shutil.copy2(self.lab.data_dir / "ssh" / name, ssh / name)

    def cpu(self) -> float:
        """CPU so far: the worker (taskset execs it), its reaped children, what it keeps (SSH masters, kept Ansible)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return process_cpu(self.proc.pid, with_children=True) + sum(kept_cpu(self.data_dir).values())

    def stop(self) -> None:
        stop(self.proc)


class Controller:
    """A long-lived `fleet controller` with the given executor; checks are queued by `fleet request check`."""

    def __init__(self, lab: Lab, executor: str):
        self.lab, self.executor, self.proc = lab, executor, None
        self.log = LOGS / f"controller-{executor}.log"

    def start(self) -> None:
        env = self.lab.env(self.lab.data_dir, FLEET_EXECUTOR=self.executor)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([FLEET, "controller"], cwd=self.lab.root, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for(lambda: self._alive() and self.lab.db.leader_pid() == self.proc.pid, 120,
                 f"the {self.executor} controller to lead")
        wait_until_idle(self.lab.db, IDLE_SECONDS)

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"fleet controller exited {self.proc.returncode}; see {self.log}")
        return True

    def cpu(self) -> float:
        """CPU so far: the controller, its reaped children, what it keeps (SSH masters, the kept Ansible process)."""
        return process_cpu(self.proc.pid, with_children=True) + sum(kept_cpu(self.lab.data_dir).values())

    def stop(self) -> None:
        stop(self.proc)


def wait_until_idle(db: BenchDb, seconds: float = 1.0) -> None:
    """No run queued or running for `seconds` in a row."""
    quiet_since = time.monotonic()
    deadline = quiet_since + RUN_TIMEOUT_SECONDS
    while time.monotonic() - quiet_since < seconds:
        if time.monotonic() > deadline:
            raise SystemExit("scaleout bench: runs still queued or running after 10 minutes")
        if db.busy():
            quiet_since = time.monotonic()
        time.sleep(0.25)


# --- measuring -----------------------------------------------------------------------------------------

def request_check(lab: Lab) -> int:
    """Queue a check as an operator would (`fleet request check`, its own process, not counted); its run id."""
    proc = subprocess.run([FLEET, "request", "check"], cwd=lab.root, env=lab.env(lab.data_dir), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fleet request check failed: {proc.stderr}")
    return int(proc.stdout.split()[1])  # "run 7 queued"


def checked(lab: Lab, controller: Controller, workers: list[Worker]) -> Check:
    """One check at the commit checked before, the controller idle around it."""
    wait_until_idle(lab.db)
    controller_before, workers_before = controller.cpu(), sum(w.cpu() for w in workers)
    hosts_before = lab_cpu(lab.data_dir)
    run_id = request_check(lab)
    wait_for(lambda: _ended(lab.db, run_id), RUN_TIMEOUT_SECONDS, f"run {run_id} to end")
    time.sleep(1.5)  # the controller reaps the run's last children and writes its end
    status, wall, verdicts = lab.db.run(run_id)
    return Check(float(wall), controller.cpu() - controller_before, sum(w.cpu() for w in workers) - workers_before,
                 lab_cpu(lab.data_dir) - hosts_before, verdicts, status)


def _ended(db: BenchDb, run_id: int) -> str:
    status = db.run(run_id)[0]
    return "" if status in ("queued", "running") else status


def measure_local(lab: Lab, rounds: int) -> Series:
    """Controller CPU per check with Ansible inside the controller: one warm-up check, then `rounds`."""
    series = Series(LOCAL)
    controller = Controller(lab, "local")
    try:
        controller.start()
        checked(lab, controller, [])  # warm-up: SSH masters, page caches
        series.checks = [checked(lab, controller, []) for _ in range(rounds)]
    finally:
        controller.stop()
    return series


def measure_celery(lab: Lab, rounds: int) -> tuple[Series, Series]:
    """One worker on core 0 against two on cores 0 and 1, interleaved, each configuration warmed up first."""
    one, two = Series(ONE_WORKER), Series(TWO_WORKERS)
    first, second = Worker(lab, "w1@bench", core=0), Worker(lab, "w2@bench", core=1)
    controller = Controller(lab, "celery")
    try:
        first.start()
        controller.start()
        checked(lab, controller, [first])  # warm-up of w1 on all hosts
        for _ in range(rounds):
            one.checks.append(checked(lab, controller, [first]))
            second.start()
            checked(lab, controller, [first, second])  # warm-up of the new w2 process (its SSH masters stay up)
            two.checks.append(checked(lab, controller, [first, second]))
            second.stop()
    finally:
        controller.stop()
        second.stop()
        first.stop()
    return one, two


def measure(work: Path, rounds: int = 3, hosts: int = HOSTS, subnet: int = SUBNET) -> Session:
    """Start the lab, the store, the broker; measure the local controller, then the celery one with workers."""
    assert hosts == HOSTS, "the report speaks of 20 hosts"
    ensure_postgres()
    load_before = os.getloadavg()[0]
    db = BenchDb(DATABASE_URL)
    db.reset()
    root = Path(work) / "so"  # short: SSH control sockets are named inside the data dirs
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    redis = Redis(root / "redis")
    data_dir = root / "controller"
    inventory = lab_up(data_dir, hosts, subnet)
    # A SIGTERM to the bench (a timeout) still runs the finally clauses: no worker, broker or host left behind.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        redis.start()
        lab = Lab(root, data_dir, bench_source(root / "source", inventory), db, redis.url)
        upgrade_schema(lab)
        local = measure_local(lab, rounds)
        one, two = measure_celery(lab, rounds)
        return Session(local, one, two, load_before, os.getloadavg()[0])
    finally:
        stop(redis.proc, timeout=20)
        lab_down(data_dir)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"scaleout bench: stopped by signal {signum}")


def upgrade_schema(lab: Lab) -> None:
    """The emptied database brought to fleet's schema before any process reads it."""
    proc = subprocess.run([FLEET, "db", "upgrade"], cwd=lab.root, env=lab.env(lab.data_dir), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fleet db upgrade failed: {proc.stderr}")


def bench_source(repo: Path, inventory: Path) -> Path:
    """The example source (as the check bench makes it) with a fleet.yml whose schedule starts no check here."""
    make_source(repo, inventory)
    (repo / "fleet.yml").write_text(FLEET_YML)
    env = {**os.environ, **GIT_ENV}
    for args in (["add", "fleet.yml"], ["commit", "-qm", "bench: no scheduled checks"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


# --- the report ----------------------------------------------------------------------------------------

def report(session: Session, rounds: int) -> list[str]:
    local, one, two = session.local, session.one, session.two
    lines = [f"## Scale-out on Celery workers: {HOSTS} lab hosts, the example playbook", "",
             f"One session, one PostgreSQL store, a redis-server broker; medians of {rounds} round(s), every check "
             "at the commit checked before, queued with `fleet request check` (its own process, not counted) for a "
             "long-lived `fleet controller`. The local controller gets one warm-up check, then its rounds; the "
             "celery one runs one-worker and two-worker checks interleaved: w1 runs throughout, w2 is started "
             "before each two-worker check (an unmeasured check warms it) and stopped after it. Load average "
             f"(1 min) of the machine, shared with other work: {session.load_before:.1f} at the start, "
             f"{session.load_after:.1f} at the end.", ""]
    lines += _cpu_lines(local, two)
    lines += _throughput_lines(one, two)
    lines += _sizing_lines(one, two)
    lines += _raw_lines([local, one, two])
    return lines + [""]


def _cpu_lines(local: Series, celery: Series) -> list[str]:
    lines = ["### Controller CPU per host", "",
             "utime+stime of the `fleet controller` process, with cutime+cstime of its reaped children (Ansible, "
             "with the local executor) and the SSH masters it keeps, from /proc/PID/stat before and after each "
             f"check, divided by {HOSTS} hosts. Worker CPU: the same for every `fleet worker`.", "",
             "| executor | controller CPU s per check | controller CPU s per host | worker CPU s per host |",
             "| --- | ---: | ---: | ---: |"]
    for name, found, workers in ((LOCAL, local, "-"), (CELERY_TWO, celery, None)):
        lines.append(f"| {name} | {found.median_of('controller_cpu'):.2f} | "
                     f"{found.median_of('controller_cpu') / HOSTS:.3f} | "
                     f"{workers or format(found.median_of('worker_cpu') / HOSTS, '.3f')} |")
    per_host = celery.median_of("controller_cpu") / HOSTS
    per_wall = median([c.controller_cpu / c.wall for c in celery.checks])
    return lines + ["", f"Goal: at most 0.1 s per host with the celery executor (measured **{per_host:.3f} s**, "
                    f"against {local.median_of('controller_cpu') / HOSTS:.2f} s with the local executor).", "",
                    f"The celery controller's CPU follows the check's wall more than its hosts: it polls the store "
                    f"every {POLL_SECONDS} s while shards run ({per_wall:.3f} CPU-s per second of wall here), so "
                    "per host it shrinks as a run's hosts grow and its wall does not.", ""]


def _throughput_lines(one: Series, two: Series) -> list[str]:
    speedup = two.hosts_per_minute / one.hosts_per_minute
    lines = ["### Throughput: one worker core against two", "",
             "Each `fleet worker --concurrency 1` pinned with `taskset` (its Ansible inherits the pin); a check's "
             "wall is its run's started_at to finished_at in the store. The lab hosts (sshd, the remote Python) "
             "run on the same two cores, unpinned: with one worker they take the idle core, with two they compete "
             "with the workers, so the speed-up measured here is lower than with the hosts elsewhere.", "",
             "| workers | wall s per check | hosts per minute | workers' CPU s per check | "
             "lab hosts' CPU s per check |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for found in (one, two):
        lines.append(f"| {found.name} | {found.median_of('wall'):.1f} | {found.hosts_per_minute:.1f} | "
                     f"{found.median_of('worker_cpu'):.1f} | {found.median_of('host_cpu'):.1f} |")
    bound = cpu_bound_speedup(one, two)
    return lines + ["", f"Goal: two workers at least 1.7x one (measured **{speedup:.2f}x**).", "",
                    "What this machine allows: the checks' CPU (workers plus lab hosts) has to fit on "
                    f"{os.cpu_count()} cores. One worker's check takes at least the larger of its worker CPU and "
                    "the hosts' CPU (they run on different cores); two workers' at least all of it spread over both "
                    "cores. From the "
                    f"medians above that bounds the speed-up at **{bound:.2f}x** here, and {speedup:.2f}x is "
                    f"{speedup / bound:.0%} of it: the goal needs the hosts' CPU off the workers' cores, as on a "
                    "real fleet.", ""]


def cpu_bound_speedup(one: Series, two: Series) -> float:
    """The best two workers can do against one when the lab hosts share the machine's cores with them."""
    one_floor = max(one.median_of("worker_cpu"), one.median_of("host_cpu"))
    two_floor = (two.median_of("worker_cpu") + two.median_of("host_cpu")) / (os.cpu_count() or 1)
    return one_floor / two_floor


def _sizing_lines(one: Series, two: Series) -> list[str]:
    per_core = one.hosts_per_minute * CYCLE_MINUTES
    per_core_two = two.hosts_per_minute / 2 * CYCLE_MINUTES
    by_cpu = CYCLE_MINUTES * 60 / (two.median_of("worker_cpu") / HOSTS)
    return ["### Sizing: worker cores for a 30-minute schedule", "",
            f"- hosts per worker core per {CYCLE_MINUTES}-minute cycle: {one.hosts_per_minute:.1f} hosts/min x "
            f"{CYCLE_MINUTES} min = **{per_core:,.0f}** (one worker alone); {two.hosts_per_minute / 2:.1f} x "
            f"{CYCLE_MINUTES} = {per_core_two:,.0f} per core with two",
            f"- a {FLEET_SIZE:,}-host fleet: {FLEET_SIZE:,} / {per_core:,.0f} = **{math.ceil(FLEET_SIZE / per_core)} "
            f"worker cores** ({math.ceil(FLEET_SIZE / per_core_two)} at the two-worker rate here, where the lab hosts "
            "take CPU from the workers)",
            f"- by CPU instead of wall: {two.median_of('worker_cpu') / HOSTS:.3f} worker CPU-seconds per host, so "
            f"one core checks {by_cpu:,.0f} hosts in {CYCLE_MINUTES} minutes if kept busy: "
            f"{math.ceil(FLEET_SIZE / by_cpu)} cores",
            "- assumptions: the same playbook (the example: a fact subset, the baseline role on every host, then "
            "the app or db role); the hosts' own CPU (sshd, the remote Python) on the hosts, not on the workers; "
            "the checks spread evenly over the cycle; no converges; round up and leave headroom for a slower "
            "network than loopback.", ""]


def _raw_lines(series: list[Series]) -> list[str]:
    lines = ["Per check (wall s / controller CPU s / worker CPU s / lab hosts' CPU s / hosts with a verdict / "
             "status):", ""]
    for found in series:
        shown = "; ".join(f"{c.wall:.1f} / {c.controller_cpu:.2f} / {c.worker_cpu:.2f} / {c.host_cpu:.1f} / "
                          f"{c.verdicts} / {c.status}" for c in found.checks)
        lines.append(f"- {found.name}: {shown}")
    return lines + ["", "Commands: `fleet controller` with FLEET_EXECUTOR=local, then =celery "
                    "(FLEET_BROKER_URL=redis://127.0.0.1:PORT/0, FLEET_DATABASE_URL=" + DATABASE_URL + ", "
                    f"FLEET_FORKS={HOSTS}, FLEET_SSH_PERSIST=3600, FLEET_CONNECT_TIMEOUT=30, ANSIBLE_TIMEOUT=60); "
                    "workers `taskset -c N fleet worker --concurrency 1 --name wN@bench`, each with its own data dir; "
                    "checks queued by `fleet request check`."]
