"""The Celery app of fleet's controller and workers, built from the settings.

Messages carry only ids (shard id, attempt) and the controller's fleet version: the
store holds everything else, so a lost message loses nothing (the controller sends
it again) and a duplicate finds nothing to claim. Messages are acknowledged when a
worker receives them, never redelivered by the broker: what a lost worker means
is the controller's decision (fleet.executor.dispatch), not the broker's.
"""

from __future__ import annotations

import functools

import fleet
from fleet.errors import ConfigError, FleetError

try:
    from celery import Celery
except ImportError:  # the `celery` extra is not installed: said when the executor is first used
    Celery = None

QUEUE = "fleet"
SHARD_TASK = "fleet.run_shard"
BROKER_TIMEOUT = 4  # seconds to connect to or hear from the broker before it counts as down


class BrokerUnavailable(FleetError):
    """The broker did not take a message (down, unreachable, refusing)."""


@functools.lru_cache(maxsize=4)
def celery_app(broker_url: str) -> Celery:
    """One Celery app per broker URL and process."""
    if Celery is None:
        raise ConfigError("FLEET_EXECUTOR=celery and `fleet worker` need Celery: pip install 'fleet[celery]'")
    app = Celery("fleet", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=BROKER_TIMEOUT,
        broker_transport_options={
            "socket_timeout": BROKER_TIMEOUT,
            "socket_connect_timeout": BROKER_TIMEOUT,
            "max_retries": 0,
        },
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
    )
    return app


def send_shard(broker_url: str, shard_id: int, attempt: int, queue: str = QUEUE) -> None:
    """Put one shard's message on the queue; BrokerUnavailable (with the broker's words) if it cannot."""
    app = celery_app(broker_url)
    try:
        app.send_task(SHARD_TASK, args=[shard_id, attempt, fleet.__version__], queue=queue, retry=False)
    except Exception as exc:  # kombu, redis and amqp each raise their own; all mean the same here
        raise BrokerUnavailable(
            f"the broker at {display_broker(broker_url)} did not take the shard: {_words(exc)}"
        ) from exc


def display_broker(broker_url: str) -> str:
    """The broker URL without its password, for messages and the UI."""
    scheme, sep, rest = broker_url.partition("://")
    if "@" in rest:
        credentials, _, where = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}:****@{where}" if user else f"****@{where}"
    return f"{scheme}{sep}{rest}"


def _words(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def broker_problem(broker_url: str) -> str:
    """Why the broker cannot take messages now ('' when it answers), asked with a short timeout."""
    app = celery_app(broker_url)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # noqa: BLE001  each transport raises its own; all mean the broker is not there
        return f"the broker at {display_broker(broker_url)} does not answer: {_words(exc)}"
    return ""
