"""executor.celery_app: the broker boundary, against a real redis-server."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import redis

from fleet.executor import celery_app
from tests.conftest import free_port, wait_for


def test_the_broker_password_is_never_shown():
    shown = celery_app.display_broker("redis://:s3cret@127.0.0.1:6379/0")
    assert "s3cret" not in shown and "127.0.0.1:6379" in shown
    assert "pw" not in celery_app.display_broker("amqp://fleet:pw@mq:5672//")


@pytest.fixture
def redis_port():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: `make system` (or apt-get install redis-server) installs it")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: not celery_app.broker_problem(f"redis://127.0.0.1:{port}/0"), 10, "redis-server")
        yield port
    finally:
        server.kill()
        server.wait()


def test_a_broker_that_answers_takes_a_shard_and_a_stopped_one_is_named(redis_port):
    url = f"redis://127.0.0.1:{redis_port}/0"
    celery_app.send_shard(url, 7, 1, queue="fleet-test")
    message = json.loads(redis.Redis(port=redis_port).lpop("fleet-test"))
    assert message["headers"]["task"] == celery_app.SHARD_TASK
    down = f"redis://127.0.0.1:{free_port()}/0"
    assert "does not answer" in celery_app.broker_problem(down) and "127.0.0.1" in celery_app.broker_problem(down)
    with pytest.raises(celery_app.BrokerUnavailable, match="did not take the shard"):
        celery_app.send_shard(down, 7, 1)
