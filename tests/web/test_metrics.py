"""GET /api/v1/metrics on a real SQLite store, read back with prometheus_client's own parser."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, insert, update

from fleet.drift import HostVerdict
from fleet.store import accounts, records
from fleet.store.db import db
from fleet.store.models import Host, Run, SourceState, Worker
from fleet.vocabulary import utcnow
from tests.alert_rules import load_alert_rules
from tests.web.conftest import make_app

API = "/api/v1"


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, users=())


@pytest.fixture
def token(app):
    with app.app_context():
        return accounts.create_token("prometheus", "viewer", "test")


def scrape(app, token) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape by (name, sorted labels), parsed as Prometheus would."""
    answer = app.test_client().get(API + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.get_data(as_text=True)) for s in family.samples}


def add(app, *rows) -> None:
    with app.app_context():
        db.session.add_all(rows)
        db.session.commit()


def host_sample(samples, name: str, host: str):
    return samples.get((name, (("host", host),)))


def test_each_host_shows_its_last_successful_check_and_how_long_ago(app, token):
    now = utcnow()
    add(app,
        Host(name="fresh", status="in_sync", last_check_at=now, last_ok_check_at=now - timedelta(seconds=60)),
        Host(name="silent", status="unreachable", last_check_at=now, last_ok_check_at=now - timedelta(hours=2)),
        Host(name="never", status="unknown"),
        Host(name="gone", status="in_sync", last_ok_check_at=now, in_inventory=False))
    samples = scrape(app, token)
    assert host_sample(samples, "fleet_host_last_check_timestamp_seconds", "fresh") == pytest.approx(
        (now - timedelta(seconds=60)).timestamp())
    assert host_sample(samples, "fleet_host_seconds_since_last_check", "fresh") == pytest.approx(60, abs=30)
    # The unreachable check moved last_check_at, not the age of the last check that judged the host.
    assert host_sample(samples, "fleet_host_seconds_since_last_check", "silent") == pytest.approx(7200, abs=30)
    assert host_sample(samples, "fleet_host_last_check_timestamp_seconds", "never") == 0
    assert host_sample(samples, "fleet_host_seconds_since_last_check", "never") == float("inf")
    assert host_sample(samples, "fleet_host_seconds_since_last_check", "gone") is None  # not in the inventory
    assert samples[("fleet_last_check_timestamp_seconds", ())] == pytest.approx(now.timestamp())


def test_hosts_are_counted_per_group_and_status_and_all_counts_each_host_once(app, token):
    add(app, Host(name="web1", groups="web prod", status="drifted"), Host(name="web2", groups="web", status="in_sync"),
        Host(name="db1", groups="db prod", status="drifted"), Host(name="lone", status="failed"))
    samples = scrape(app, token)

    def hosts(group, status):
        return samples[("fleet_hosts", (("group", group), ("status", status)))]

    assert (hosts("all", "drifted"), hosts("all", "in_sync"), hosts("all", "failed")) == (2, 1, 1)
    assert (hosts("prod", "drifted"), hosts("web", "drifted"), hosts("web", "in_sync")) == (2, 1, 1)
    assert hosts("ungrouped", "failed") == 1
    assert hosts("db", "unreachable") == 0  # every status of every group is there, so no series vanishes


def test_drift_age_is_shown_for_drifted_hosts_only(app, token):
    now = utcnow()
    add(app, Host(name="web1", status="drifted", drift_since=now - timedelta(hours=7), last_check_at=now),
        # drifted before fleet kept drift_since: its last check is the earliest sure sighting
        Host(name="web2", status="drifted", last_check_at=now - timedelta(hours=1)),
        Host(name="web3", status="unreachable", drift_since=now - timedelta(hours=9)))
    samples = scrape(app, token)
    assert host_sample(samples, "fleet_host_drift_age_seconds", "web1") == pytest.approx(7 * 3600, abs=30)
    assert host_sample(samples, "fleet_host_drift_age_seconds", "web2") == pytest.approx(3600, abs=30)
    assert host_sample(samples, "fleet_host_drift_age_seconds", "web3") is None


def fix_drift(app, host: str, hours: float) -> None:
    """A check finds the host drifted (backdated by `hours`), then a converge finds it in_sync."""
    with app.app_context():
        run = records.create_run("check", "manual", "a" * 40, "", "test", 1)
        records.finish_run(run.id, "successful", [HostVerdict(host, "drifted")])
        db.session.execute(update(Host).where(Host.name == host).values(
            drift_since=utcnow() - timedelta(hours=hours)))
        db.session.commit()
        run = records.create_run("converge", "manual", "a" * 40, "", "test", 1)
        records.finish_run(run.id, "successful", [HostVerdict(host, "in_sync")])


def test_time_from_drift_to_in_sync_is_a_histogram_that_survives_a_restart(app, token, tmp_path):
    fix_drift(app, "web1", hours=0.1)  # 6 minutes
    fix_drift(app, "web2", hours=3)
    fix_drift(app, "web1", hours=30)  # a second drift of the same host is a second observation

    def bucket(samples, le):
        return samples[("fleet_drift_to_in_sync_seconds_bucket", (("le", le),))]

    for samples in (scrape(app, token), scrape(make_app(tmp_path, users=()), token)):  # same store, new app
        assert (bucket(samples, "300.0"), bucket(samples, "900.0"), bucket(samples, "21600.0")) == (0, 1, 2)
        assert (bucket(samples, "86400.0"), bucket(samples, "259200.0"), bucket(samples, "+Inf")) == (2, 3, 3)
        assert samples[("fleet_drift_to_in_sync_seconds_count", ())] == 3
        assert samples[("fleet_drift_to_in_sync_seconds_sum", ())] == pytest.approx(33.1 * 3600, abs=30)


def test_run_durations_are_a_histogram_per_kind_of_finished_runs(app, token):
    start = utcnow() - timedelta(hours=1)

    def run(kind, status, seconds):
        finished = start + timedelta(seconds=seconds) if seconds is not None else None
        return Run(kind=kind, trigger="manual", status=status, started_at=start, finished_at=finished)

    add(app, run("check", "successful", 3), run("check", "failed", 100), run("converge", "successful", 400),
        run("check", "running", None), Run(kind="check", trigger="manual", status="queued"),
        Run(kind="converge", trigger="manual", status="canceled", finished_at=start))  # never started
    samples = scrape(app, token)

    def bucket(kind, le):
        return samples[("fleet_run_duration_seconds_bucket", (("kind", kind), ("le", le)))]

    assert (bucket("check", "1.0"), bucket("check", "5.0"), bucket("check", "120.0"), bucket("check", "+Inf")) \
        == (0, 1, 2, 2)
    assert samples[("fleet_run_duration_seconds_sum", (("kind", "check"),))] == pytest.approx(103, abs=0.01)
    assert (bucket("converge", "300.0"), bucket("converge", "600.0")) == (0, 1)
    assert samples[("fleet_run_duration_seconds_count", (("kind", "converge"),))] == 1
    assert samples[("fleet_queue_depth", ())] == 1
    assert samples[("fleet_runs_total", (("kind", "converge"), ("status", "canceled")))] == 1


def test_an_empty_store_shows_every_family_at_zero(app, token):
    samples = scrape(app, token)
    assert samples[("fleet_run_duration_seconds_count", (("kind", "check"),))] == 0
    assert samples[("fleet_drift_to_in_sync_seconds_count", ())] == 0
    assert samples[("fleet_source_last_fetch_timestamp_seconds", ())] == 0
    assert samples[("fleet_hosts", (("group", "all"), ("status", "drifted")))] == 0


def test_the_source_shows_its_last_fetch_and_staleness(app, token):
    fetched = utcnow() - timedelta(minutes=5)
    add(app, SourceState(id=1, stale=True, last_fetch_at=fetched, last_error="unreachable remote"))
    samples = scrape(app, token)
    assert samples[("fleet_source_stale", ())] == 1
    assert samples[("fleet_source_last_fetch_timestamp_seconds", ())] == pytest.approx(fetched.timestamp())


def test_metrics_need_a_viewer_token(app):
    assert app.test_client().get(API + "/metrics").status_code == 401


def count_scrape_queries(app, token) -> int:
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(_conn, _cursor, statement, *_):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        scrape(app, token)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(statements)


def seed(app, hosts: int, runs: int, drifts: int) -> None:
    start = utcnow() - timedelta(days=1)
    with app.app_context():
        db.session.execute(insert(Host), [{"name": f"h{i}", "groups": f"g{i % 7}", "status": "drifted",
                                           "drift_since": start, "last_ok_check_at": start} for i in range(hosts)])
        db.session.execute(insert(Run), [{"kind": ("check", "converge")[i % 2], "trigger": "schedule",
                                          "status": "successful", "limit": "", "started_at": start,
                                          "finished_at": start + timedelta(seconds=i)} for i in range(runs)])
        db.session.commit()
    for i in range(drifts):
        fix_drift(app, f"h{i}", hours=i + 1)


def test_a_scrape_costs_the_same_queries_for_a_small_or_a_long_history(tmp_path):
    counts = []
    for name, size in (("small", 2), ("large", 40)):
        app = make_app(tmp_path / name, users=())
        with app.app_context():
            token = accounts.create_token("prometheus", "viewer", "test")
        seed(app, hosts=size * 5, runs=size * 20, drifts=size)
        counts.append(count_scrape_queries(app, token))
    assert counts[0] == counts[1]
    assert counts[1] <= 10, counts  # token lookup and its last-used write, then the reads the view lists


def test_every_example_alert_rule_reads_a_metric_the_endpoint_serves_and_fires_when_it_should(app, token):
    now = utcnow()
    add(app, Host(name="silent", status="unreachable", last_ok_check_at=now - timedelta(hours=3)),
        Host(name="fresh", status="drifted", last_ok_check_at=now, drift_since=now - timedelta(hours=7)),
        Host(name="new", status="drifted", last_ok_check_at=now, drift_since=now - timedelta(hours=1)),
        SourceState(id=1, stale=True, last_fetch_at=now))
    answer = app.test_client().get(API + "/metrics", headers={"Authorization": f"Bearer {token}"})
    text = answer.get_data(as_text=True)
    rules = load_alert_rules()
    assert set(rules) == {"FleetHostNotChecked", "FleetDriftNotFixed", "FleetSourceStale", "FleetNoWorkers"}
    for rule in rules.values():
        assert f"# TYPE {rule.metric} " in text, f"{rule.name} reads {rule.metric}, which /metrics does not serve"
    assert [labels["host"] for labels in rules["FleetHostNotChecked"].firing(text)] == ["silent"]
    assert [labels["host"] for labels in rules["FleetDriftNotFixed"].firing(text)] == ["fresh"]
    assert rules["FleetSourceStale"].firing(text) == [{}]


def test_workers_are_counted_by_state_and_a_celery_controller_without_one_says_runs_wait(tmp_path):
    import fleet
    from fleet.settings import replace

    app = make_app(tmp_path, users=())
    app.config["FLEET_SETTINGS"] = replace(app.config["FLEET_SETTINGS"], executor="celery", broker_url="redis://x")
    with app.app_context():
        token = accounts.create_token("prometheus", "viewer", "test")
    now = utcnow()
    add(app, Worker(name="old@a", version="0.0.1", concurrency=4, heartbeat_at=now),
        Worker(name="gone@b", version=fleet.__version__, concurrency=2, heartbeat_at=now - timedelta(minutes=5)))
    samples = scrape(app, token)
    assert samples[("fleet_workers", (("state", "online"),))] == 1
    assert samples[("fleet_workers", (("state", "lost"),))] == 1
    assert samples[("fleet_worker_slots", ())] == 0  # the online one runs another version: it takes no shard
    answer = app.test_client().get(API + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert load_alert_rules()["FleetNoWorkers"].firing(answer.get_data(as_text=True)) == [{}]
    add(app, Worker(name="new@c", version=fleet.__version__, concurrency=2, heartbeat_at=utcnow()))
    samples = scrape(app, token)
    assert samples[("fleet_worker_slots", ())] == 2 and samples[("fleet_executor_workers_missing", ())] == 0


def test_a_local_executor_never_misses_workers(app, token):
    samples = scrape(app, token)
    assert samples[("fleet_executor_workers_missing", ())] == 0
    assert samples[("fleet_worker_slots", ())] == 0
