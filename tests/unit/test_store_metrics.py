"""The store's side of the metrics against a real SQLite file: drift episodes, time to fix, run durations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from fleet import policy
from fleet.drift import HostVerdict
from fleet.store import queries, records, retention
from fleet.store.db import db, open_store
from fleet.store.models import DriftResolution, Run
from fleet.vocabulary import aware, utcnow
from tests.conftest import settings_for_source
from tests.unit.store_fixtures import inventory_entry, temporary_store


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def finish(store, kind: str, status: str, host: str = "web1") -> Run:
    run = records.create_run(kind, "manual", "a" * 40, "", "test", 123)
    records.finish_run(run.id, "successful", [HostVerdict(host, status)])
    return store.get(Run, run.id)


def test_a_drift_episode_starts_at_the_first_drifted_check_and_ends_only_in_sync(store):
    records.sync_hosts([inventory_entry("web1")])
    first = finish(store, "check", "drifted")
    assert queries.get_host("web1").drift_since == aware(first.finished_at)
    finish(store, "check", "drifted")  # still the same episode: its start does not move
    finish(store, "check", "unreachable")  # proves nothing: the drift is not over
    finish(store, "check", "unverified")
    assert store.scalars(select(DriftResolution)).all() == []
    assert queries.get_host("web1").drift_since == aware(first.finished_at)
    fixed = finish(store, "converge", "in_sync")
    assert queries.get_host("web1").drift_since is None
    [resolution] = store.scalars(select(DriftResolution)).all()
    assert (resolution.host, resolution.run_id) == ("web1", fixed.id)
    assert resolution.seconds == pytest.approx((fixed.finished_at - first.finished_at).total_seconds())
    finish(store, "check", "in_sync")  # the verifying check after the converge: no second observation
    assert len(store.scalars(select(DriftResolution)).all()) == 1


def test_a_host_in_sync_from_the_start_has_no_drift_episode(store):
    records.sync_hosts([inventory_entry("web1")])
    finish(store, "check", "in_sync")
    assert queries.get_host("web1").drift_since is None
    assert store.scalars(select(DriftResolution)).all() == []


def test_only_a_check_that_judged_the_host_counts_as_its_last_successful_check(store):
    records.sync_hosts([inventory_entry("web1")])
    judged = finish(store, "check", "drifted")
    finish(store, "check", "unreachable")
    finish(store, "check", "failed")
    finish(store, "converge", "in_sync")  # a converge is not a check
    host = queries.get_host("web1")
    assert host.last_ok_check_at == aware(judged.finished_at)
    assert host.last_check_at > host.last_ok_check_at  # the unreachable check moved last_check_at only
    later = finish(store, "check", "unverified")
    assert queries.get_host("web1").last_ok_check_at == aware(later.finished_at)


def ended_run(kind: str, ended_days_ago: float, seconds: float | None, status: str = "successful") -> Run:
    end = utcnow() - timedelta(days=ended_days_ago)
    start = end - timedelta(seconds=seconds) if seconds is not None else None  # None: canceled while queued
    return Run(kind=kind, trigger="schedule", status=status, started_at=start, finished_at=end)


def test_runs_retention_deletes_stay_counted_in_run_totals_and_durations(tmp_path):
    settings = settings_for_source(tmp_path, "retention:\n  days: 90\n")
    with open_store(settings):
        db.session.add_all([ended_run("check", 200, 3), ended_run("check", 150, 40, "failed"),
                            ended_run("converge", 120, 400), ended_run("converge", 130, None, "canceled"),
                            ended_run("check", 1, 2)])
        db.session.commit()
        counts_before, before = queries.run_totals()
        assert (before["check"].count, before["check"].counts[:3], before["converge"].count) == (3, (0, 2, 2), 1)
        assert counts_before[("converge", "canceled")] == 1

        for _ in range(2):  # a second prune finds nothing more to fold
            retention.prune(settings, policy.Retention(days=90), utcnow())
            assert db.session.scalar(select(func.count()).select_from(Run)) == 1  # the recent check
            counts, after = queries.run_totals()
            assert counts == counts_before
            for kind in ("check", "converge"):
                assert (after[kind].counts, after[kind].count) == (before[kind].counts, before[kind].count)
                assert after[kind].total == pytest.approx(before[kind].total, abs=0.01)

        db.session.add(ended_run("check", 0, 1000))  # new runs add to what was folded
        db.session.commit()
        counts, durations = queries.run_totals()
        assert counts[("check", "successful")] == 3
        check = durations["check"]
        assert (check.counts[-4:], check.count) == ((3, 4, 4, 4), 4)  # <= 600 s: 2, 3 and 40 s; then 1000 s
