"""`fleet worker`: a Celery worker that executes shards, and says it is alive.

It consumes the broker's queue (`fleet` unless told otherwise) with a pool of
threads, one shard per thread: Ansible does the work in processes of its own.
Its settings are its own (data dir with its SSH key, vault password file and
exports; the shared store; the same source as the controller). A heartbeat row
in the store (`fleet workers`, the UI) tells its version, capacity and running
shards; a worker of another fleet version than the controller refuses shards.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import TYPE_CHECKING

import fleet
from fleet import processes, warm
from fleet.errors import ConfigError
from fleet.executor.celery_app import QUEUE, SHARD_TASK, celery_app, display_broker
from fleet.executor.shard import execute_shard, version_refusal
from fleet.settings import Settings, replace
from fleet.store import shards, workers
from fleet.store.db import Store, open_store
from fleet.vocabulary import utcnow

if TYPE_CHECKING:
    from celery import Celery

HEARTBEAT_SECONDS = 5.0
log = logging.getLogger("fleet.worker")


class WorkerState:
    """What the heartbeat reports: shards running now, and why this worker refuses shards, if it does."""

    def __init__(self, name: str, concurrency: int, queues: list[str]):
        self.name, self.concurrency, self.queues = name, concurrency, queues
        self.running = 0
        self.refusing = ""
        self.lock = threading.Lock()

    def started(self) -> None:
        with self.lock:
            self.running += 1

    def ended(self) -> None:
        with self.lock:
            self.running -= 1


def default_name() -> str:
    return f"fleet@{socket.gethostname()}"


def start_worker(
    settings: Settings, name: str = "", concurrency: int = 1, queues: tuple[str, ...] = (QUEUE,), loglevel: str = "INFO"
) -> None:
    """Run the worker in the foreground until SIGTERM (Celery's warm shutdown lets running shards end)."""
    if not settings.broker_url:
        raise ConfigError("fleet worker needs FLEET_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    settings = replace(settings, executor="local")  # a shard runs here; it is never sharded again
    os.environ[processes.DIE_WITH_PARENT_ENV] = "1"  # Ansible started here dies with this worker, even by -9
    state = WorkerState(name or default_name(), concurrency, list(queues))
    app = celery_app(settings.broker_url)
    with open_store(settings) as store:
        _refuse_duplicate_name(state.name)
        _register_task(app, store, settings, state)
        beat = _Heartbeat(store, state)
        beat.start()
        log.info(
            "worker %s (fleet %s): broker %s, queues %s, %d at once",
            state.name,
            fleet.__version__,
            display_broker(settings.broker_url),
            ",".join(queues),
            concurrency,
        )
        try:
            app.worker_main(
                [
                    "worker",
                    "--pool=threads",
                    f"--concurrency={concurrency}",
                    f"--queues={','.join(queues)}",
                    f"--hostname={state.name}",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    f"--loglevel={loglevel}",
                ]
            )
        finally:
            beat.stop()
            workers.record_stopped(state.name)
            stop_kept_processes(settings)


def stop_kept_processes(settings: Settings) -> int:
    """A worker that stops ends the kept Ansible processes of its data directory, as `fleet serve` does: nothing
    of it stays behind holding Mitogen's interpreters on the hosts (its shards have ended: Celery's warm
    shutdown waited for them)."""
    stopped = warm.stop_servers(str(settings.data_dir.resolve()))
    log.info("stopped %d kept Ansible processes", stopped)
    return stopped


def _refuse_duplicate_name(name: str) -> None:
    """Two live workers under one name would report as one: the second one is refused at start. A row left
    by a killed worker of this machine (its pid gone) is taken over at once, so a restart needs no wait."""
    now = utcnow()
    for seen in workers.list_workers(now, fleet.__version__):
        if seen.name != name or seen.state != workers.ONLINE or seen.pid == os.getpid():
            continue
        if seen.host == socket.gethostname() and not (seen.pid and processes.pid_alive(seen.pid)):
            continue
        raise ConfigError(
            f"a worker named {name} is running already (pid {seen.pid} on {seen.host}, heartbeat "
            f"{seen.heartbeat_age(now):.0f}s ago); give this one another --name"
        )


def _register_task(app: Celery, store: Store, settings: Settings, state: WorkerState) -> None:
    @app.task(name=SHARD_TASK, ignore_result=True)  # type: ignore[untyped-decorator]  # Celery has no type information
    def run_shard(shard_id: int, attempt: int, controller_version: str) -> str:
        with store.bound():
            refusal = version_refusal(state.name, controller_version)
            if refusal:
                state.refusing = refusal
                shards.refuse(shard_id, attempt, refusal)
                log.error("%s", refusal)
                return "refused"
            state.started()
            try:
                return execute_shard(settings, shard_id, attempt, state.name)
            finally:
                state.ended()


class _Heartbeat:
    """Writes the worker's row every few seconds from a thread of its own (shards never delay it)."""

    def __init__(self, store: Store, state: WorkerState) -> None:
        self.store, self.state = store, state
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="fleet-worker-heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=HEARTBEAT_SECONDS * 2)

    def _loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                self._beat()
            except Exception:  # a store blip: the next beat tries again; the row's age tells the controller
                log.exception("worker heartbeat failed")

    def _beat(self) -> None:
        with self.store.bound():
            state = self.state
            workers.record_heartbeat(
                state.name,
                socket.gethostname(),
                os.getpid(),
                fleet.__version__,
                state.concurrency,
                state.queues,
                state.running,
                state.refusing,
            )
