"""Workers and shards in the web UI and the API, from rows written straight into the store: the /workers page,
the dashboard's card, a run's shards and a queued run's waiting reason, GET /api/v1/workers and a run's shards."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

import fleet
from fleet.store import accounts, db, workers
from fleet.store.models import Run, Shard, Worker
from fleet.vocabulary import utcnow
from tests.web.conftest import make_app
from tests.web.test_ui import login, text

XSS = "<script>alert(1)</script>"
API = "/api/v1"


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def viewer(app):
    return login(app, "vera")


def seed_workers(app) -> None:
    """Online alpha running one shard, beta of an older fleet, gamma killed two minutes ago, delta stopped."""
    with app.app_context():
        beat = workers.record_heartbeat
        beat("fleet@alpha", "alpha.example", 101, fleet.__version__, 4, ["fleet", "checks"], 1)
        beat("fleet@beta", "beta.example", 202, "0.0.1", 8, ["fleet"], 0, refusing=f"fleet 0.0.1 {XSS}")
        beat("fleet@gamma", "gamma.example", 303, fleet.__version__, 2, ["fleet"], 2)
        beat("fleet@delta", "delta.example", 404, fleet.__version__, 16, ["fleet"], 0)
        workers.record_stopped("fleet@delta")
        db.session.execute(update(Worker).where(Worker.name == "fleet@gamma")
                           .values(heartbeat_at=utcnow() - timedelta(minutes=2)))
        db.session.commit()


def sharded_run(app, status: str = "running", waiting_reason: str = "") -> int:
    """A check spread over two workers: shard 0 done on alpha, shard 1 lost on gamma and running again on alpha,
    shard 2 a converge part interrupted with its reason."""
    now = utcnow()
    with app.app_context():
        run = Run(kind="check", trigger="manual", status=status, waiting_reason=waiting_reason, created_at=now)
        db.session.add(run)
        db.session.flush()
        db.session.add_all([
            Shard(run_id=run.id, index=0, hosts=json.dumps(["web1", "web2"]), status="done", worker="fleet@alpha",
                  started_at=now - timedelta(seconds=30), finished_at=now - timedelta(seconds=21)),
            Shard(run_id=run.id, index=1, hosts=json.dumps(["db1", XSS]), status="running", attempt=2,
                  worker="fleet@alpha", started_at=now,
                  history="attempt 1 on fleet@gamma: lost (no heartbeat for 30 s), run again\n"),
            Shard(run_id=run.id, index=2, hosts=json.dumps(["db2"]), status="interrupted", worker="fleet@gamma",
                  reason="its worker was lost mid-converge: not repeated by itself"),
        ])
        db.session.commit()
        return run.id


def worker_rows(page: str) -> dict[str, str]:
    """The /workers table's rows by worker name."""
    rows = re.findall(r'<tr id="worker-\d+".*?</tr>', page, re.S)
    return {re.search(r'<span class="strong">([^<]+)</span>', row).group(1): row for row in rows}


# --- the /workers page ------------------------------------------------------------------------------------

def test_no_worker_yet_says_how_to_start_one_and_the_dashboard_shows_no_card(viewer):
    page = text(viewer.get("/workers"))
    assert "No worker has reported yet" in page and "<code>fleet worker</code>" in page
    assert 'id="workers"' not in page
    assert 'id="workers-card"' not in text(viewer.get("/")), "no worker was ever seen: no card"


def test_the_nav_links_the_workers_page_for_any_logged_in_user(viewer):
    page = text(viewer.get("/"))
    assert re.search(r'<a href="/workers"\s*>Workers</a>', page)
    assert 'href="/workers" aria-current="page"' in text(viewer.get("/workers"))


def test_the_page_lists_workers_as_the_cli_does(app, viewer):
    seed_workers(app)
    sharded_run(app)  # one shard running on alpha
    page = text(viewer.get("/workers"))
    rows = worker_rows(page)
    assert list(rows) == ["fleet@alpha", "fleet@beta", "fleet@gamma", "fleet@delta"], "online, lost, stopped"
    alpha = rows["fleet@alpha"]
    assert '<span class="word">online</span>' in alpha and fleet.__version__ in alpha
    assert re.search(r'<td class="num">4</td>\s*<td class="num">1</td>', alpha), "capacity 4, one running shard"
    assert '<span class="tag">checks</span>' in alpha
    assert "2 online, capacity <span class=\"strong\">4</span>" in re.sub(r"\s+", " ", page).replace(
        '<span class="strong">2</span>', "2"), "beta's older fleet is no capacity"


def test_a_worker_of_another_version_is_marked_and_its_reason_escaped(app, viewer):
    seed_workers(app)
    beta = worker_rows(text(viewer.get("/workers")))["fleet@beta"]
    assert 'class="pill tone-bad version-mismatch"' in beta and "0.0.1" in beta
    assert f"not {fleet.__version__}" in beta
    assert XSS not in beta and "&lt;script&gt;alert(1)&lt;/script&gt;" in beta


def test_a_killed_worker_shows_lost_and_a_stopped_one_stopped(app, viewer):
    seed_workers(app)
    rows = worker_rows(text(viewer.get("/workers")))
    assert '<span class="word">lost</span>' in rows["fleet@gamma"] and "2 min ago" in rows["fleet@gamma"]
    assert re.search(r'<td class="num">2</td>\s*<td class="num">0</td>', rows["fleet@gamma"]), \
        "what a lost worker said it ran is not counted: the shards table is"
    assert '<span class="word">stopped</span>' in rows["fleet@delta"] and "stopped just now" in rows["fleet@delta"]


def test_the_dashboard_card_counts_online_workers_and_capacity(app, viewer):
    seed_workers(app)
    card = re.search(r'<p class="card workers-card" id="workers-card">.*?</p>', text(viewer.get("/")), re.S).group(0)
    assert "2 online, capacity 4" in card
    assert "1 lost" in card and "1 of another version" in card


# --- a run's shards and why a queued run waits ------------------------------------------------------------

def test_the_run_page_shows_which_worker_ran_which_hosts(app, viewer):
    run_id = sharded_run(app)
    page = text(viewer.get(f"/runs/{run_id}"))
    assert 'id="h-shards"' in page and "3 parts of the hosts" in page
    rows = dict(re.findall(r'<tr id="shard-(\d+)">(.*?)</tr>', page, re.S))
    assert '<span class="tag">web1</span> <span class="tag">web2</span>' in rows["0"]
    assert '<span class="word">done</span>' in rows["0"] and "fleet@alpha" in rows["0"] and "9.0 s" in rows["0"]
    assert re.search(r'<td class="num">2</td>', rows["1"]), "the second attempt"
    assert "1 earlier attempt" in rows["1"] and "attempt 1 on fleet@gamma: lost" in rows["1"]
    assert "&lt;script&gt;" in rows["1"] and XSS not in page
    assert '<span class="word">interrupted</span>' in rows["2"] and "lost mid-converge" in rows["2"]


def test_a_local_run_has_no_shards_section(app, viewer):
    with app.app_context():
        run = Run(kind="check", trigger="manual", status="successful")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    assert 'id="h-shards"' not in text(viewer.get(f"/runs/{run_id}"))


def test_a_queued_run_says_why_it_waits(app, viewer):
    run_id = sharded_run(app, status="queued", waiting_reason=f"the broker redis://127.0.0.1:6390/0 is down {XSS}")
    page = text(viewer.get(f"/runs/{run_id}"))
    waiting = re.search(r'<p class="callout warn" id="run-waiting">.*?</p>', page, re.S).group(0)
    assert "Waiting: the broker redis://127.0.0.1:6390/0 is down &lt;script&gt;" in waiting


def test_a_run_that_no_longer_waits_shows_no_waiting_reason(app, viewer):
    run_id = sharded_run(app, status="running", waiting_reason="stale: the broker was down")
    assert 'id="run-waiting"' not in text(viewer.get(f"/runs/{run_id}"))


# --- the API ---------------------------------------------------------------------------------------------

@pytest.fixture
def token(app):
    with app.app_context():
        return accounts.create_token("reader", "viewer", "test")


def api_get(app, path: str, token: str):
    return app.test_client().get(API + path, headers={"Authorization": f"Bearer {token}"})


def test_api_workers_lists_them_with_their_state_for_a_viewer(app, token):
    seed_workers(app)
    sharded_run(app)  # one shard running on alpha
    answer = api_get(app, "/workers", token)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["version"] == fleet.__version__
    listed = {w["name"]: w for w in body["workers"]}
    assert [w["name"] for w in body["workers"]] == ["fleet@alpha", "fleet@beta", "fleet@gamma", "fleet@delta"]
    assert (listed["fleet@alpha"]["state"], listed["fleet@alpha"]["running"]) == ("online", 1)
    assert listed["fleet@beta"]["version_ok"] is False and listed["fleet@beta"]["refusing"].startswith("fleet 0.0.1")
    assert listed["fleet@gamma"]["state"] == "lost" and listed["fleet@gamma"]["heartbeat_age_seconds"] >= 119
    assert listed["fleet@delta"]["state"] == "stopped" and listed["fleet@delta"]["stopped_at"]


def test_api_workers_needs_a_token(app):
    assert app.test_client().get(API + "/workers").status_code == 401


def test_api_run_has_its_shards_and_a_local_run_none(app, token):
    run_id = sharded_run(app)
    shards = api_get(app, f"/runs/{run_id}", token).get_json()["shards"]
    assert [(s["index"], s["status"], s["worker"], s["attempt"]) for s in shards] == [
        (0, "done", "fleet@alpha", 1), (1, "running", "fleet@alpha", 2), (2, "interrupted", "fleet@gamma", 1)]
    assert shards[0]["hosts"] == ["web1", "web2"] and shards[0]["finished_at"]
    assert shards[1]["history"] == ["attempt 1 on fleet@gamma: lost (no heartbeat for 30 s), run again"]
    assert shards[2]["reason"].startswith("its worker was lost") and shards[0]["reason"] is None
    with app.app_context():
        local = Run(kind="check", trigger="manual", status="successful")
        db.session.add(local)
        db.session.commit()
        local_id = local.id
    assert api_get(app, f"/runs/{local_id}", token).get_json()["shards"] == []
