"""The web's view of the kept Ansible processes and of each run's path: healthz lists the data directory's
kept processes (a real one here, with a run handed to it), the run page and the run's JSON say warm or cold
and why, each shard's too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import warm
from fleet.store.db import db
from fleet.store.models import Run, Shard
from fleet.vocabulary import utcnow
from tests.conftest import wait_for
from tests.web.test_api import API, add_run, bearer
from tests.web.conftest import make_app
from tests.web.test_ui import login, text

BIN = Path(sys.executable).parent
CONVERSATION = ("import os, sys; from pathlib import Path; from fleet.warm.client import Conversation, connect; "
                "Conversation(connect(Path(sys.argv[1])), sys.argv[2:], dict(os.environ)).follow()")


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def kept(app):
    """A real kept process of the app's data directory, on the socket a run of it would find."""
    anchor = str(app.config["FLEET_SETTINGS"].data_dir)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", warm.ANCHOR_ENV: anchor,
           warm.IDLE_ENV: "60"}
    path = warm.socket_path(anchor, warm.server_key(env, anchor))
    process = subprocess.Popen([sys.executable, "-m", "fleet.warm.server", str(path), anchor], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(path.exists, 60, "the kept process's socket")
    yield process, path, env
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def test_healthz_lists_the_kept_processes_with_pid_age_memory_and_counts_the_hosts_of_their_runs(app, kept):
    process, path, env = kept
    client = app.test_client()
    [listed] = client.get(API + "/healthz").get_json()["kept_processes"]
    assert listed["pid"] == process.pid and listed["host_count"] == 0 and listed["runs"] == 0
    assert listed["age_seconds"] >= 0 and listed["rss_kib"] > 10_000 and listed["pss_kib"] > 0

    run = subprocess.run([sys.executable, "-c", CONVERSATION, str(path), "-l", "web2,web1", "--version"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ansible-playbook [core" in run.stdout, run.stderr
    [listed] = client.get(API + "/healthz").get_json()["kept_processes"]
    assert listed["host_count"] == 2 and listed["runs"] == 1 and listed["last_run_at"]
    assert "web1" not in json.dumps(listed), "healthz answers anyone: it names no host"

    process.terminate()
    process.wait(30)
    assert client.get(API + "/healthz").get_json()["kept_processes"] == []


def test_the_run_page_and_json_say_how_ansible_ran(app, tmp_path):
    warm_id = add_run(app, strategy="mitogen_linear", ansible_path="warm", started_at=utcnow())
    cold_id = add_run(app, strategy="mitogen_linear", started_at=utcnow(),
                      ansible_path="cold: Ansible setting DEFAULT_TIMEOUT differs from the kept process's")
    old_id = add_run(app, strategy="linear", started_at=utcnow())
    viewer = login(app, "vera")

    assert "warm (forked from the kept Ansible process)" in text(viewer.get(f"/runs/{warm_id}"))
    page = text(viewer.get(f"/runs/{cold_id}"))
    assert "cold: Ansible setting DEFAULT_TIMEOUT differs from the kept process&#39;s" in page
    assert 'id="run-ansible-path"' not in text(viewer.get(f"/runs/{old_id}")), "an older run says nothing"

    from fleet.store import accounts

    with app.app_context():
        token = accounts.create_token("v", "viewer", "test")
    shown = {run_id: app.test_client().get(f"{API}/runs/{run_id}", headers=bearer(token)).get_json()["run"]
             for run_id in (warm_id, cold_id, old_id)}
    assert shown[warm_id]["ansible_path"] == {"warm": True, "reason": None}
    assert shown[cold_id]["ansible_path"] == {
        "warm": False, "reason": "Ansible setting DEFAULT_TIMEOUT differs from the kept process's"}
    assert shown[old_id]["ansible_path"] is None and shown[old_id]["strategy"] == "linear"


def test_a_run_of_shards_that_took_different_paths_says_so_and_each_shard_its_own(app):
    from fleet.store import accounts

    now = utcnow()
    with app.app_context():
        run = Run(kind="check", trigger="manual", status="successful", started_at=now,
                  strategy="mitogen_linear (workers)",
                  ansible_path="mixed: shard 0 warm; shard 1 cold: no kept process yet (starting one)")
        db.session.add(run)
        db.session.flush()
        db.session.add_all([
            Shard(run_id=run.id, index=0, hosts=json.dumps(["web1"]), status="done", worker="fleet@a",
                  ansible_path="warm"),
            Shard(run_id=run.id, index=1, hosts=json.dumps(["web2"]), status="done", worker="fleet@b",
                  ansible_path="cold: no kept process yet (starting one)"),
        ])
        db.session.commit()
        run_id = run.id
        token = accounts.create_token("v", "viewer", "test")
    data = app.test_client().get(f"{API}/runs/{run_id}", headers=bearer(token)).get_json()
    assert data["run"]["ansible_path"] == {
        "warm": None, "reason": "shard 0 warm; shard 1 cold: no kept process yet (starting one)"}
    assert [s["ansible_path"] for s in data["shards"]] == [
        {"warm": True, "reason": None}, {"warm": False, "reason": "no kept process yet (starting one)"}]
    page = text(login(app, "vera").get(f"/runs/{run_id}"))
    assert "mixed: shard 0 warm; shard 1 cold" in page
    assert page.count('class="small shard-ansible-path"') == 2
