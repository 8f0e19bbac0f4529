"""The shared words: status sets, coverage, time helpers, host patterns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet import vocabulary as v


def test_a_status_member_is_the_string_the_store_keeps():
    assert v.HostStatus.IN_SYNC == "in_sync"
    assert f"{v.RunStatus.TIMEOUT}" == "timeout"
    assert v.RunStatus("canceled") is v.RunStatus.CANCELED


def test_every_status_is_listed_once_in_its_display_order():
    assert sorted(v.HOST_STATUSES) == sorted(v.HostStatus)
    assert len(set(v.HOST_STATUSES)) == len(v.HOST_STATUSES)
    assert v.HOST_STATUSES[0] == "in_sync"
    assert v.RUN_STATUSES == ("queued", "running", "successful", "failed", "canceled", "interrupted", "timeout")


def test_a_run_status_is_active_or_final_never_both():
    assert set(v.RUN_ACTIVE_STATUSES) | set(v.RUN_FINAL_STATUSES) == set(v.RunStatus)
    assert not set(v.RUN_ACTIVE_STATUSES) & set(v.RUN_FINAL_STATUSES)
    assert v.is_active("queued") and v.is_active("running") and not v.is_active("timeout")
    assert v.is_final("interrupted") and not v.is_final("running")


def test_the_runs_own_counters_cover_every_verdict_but_unknown_and_incomplete():
    assert set(v.COUNTED_VERDICTS) == set(v.HostStatus) - {"unknown", "incomplete"}


@pytest.mark.parametrize("verified,unverified,expected,unchecked", [
    pytest.param(3, 1, "3/4", 1, id="one unverified task"),
    pytest.param(5, 0, "5/5", 0, id="every task verified"),
    pytest.param(None, None, "0/0", 0, id="never checked"),
])
def test_coverage_is_verified_of_verified_plus_unverified(verified, unverified, expected, unchecked):
    coverage = v.Coverage.of(verified, unverified)
    assert str(coverage) == expected
    assert coverage.unchecked == unchecked
    assert coverage.as_json() == {"verified": coverage.verified, "total": coverage.total}
    assert v.coverage_total(verified, unverified) == coverage.total


NAIVE = datetime(2026, 11, 1, 12, 0)
AWARE = NAIVE.replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("moment,expected", [
    pytest.param(NAIVE, AWARE, id="naive from SQLite is UTC"),
    pytest.param(AWARE, AWARE, id="aware stays"),
    pytest.param(AWARE.astimezone(timezone(timedelta(hours=2))), AWARE, id="another zone stays the same moment"),
    pytest.param(None, None, id="never"),
])
def test_aware(moment, expected):
    assert v.aware(moment) == expected


def test_iso_and_epoch_seconds_read_naive_moments_as_utc():
    assert v.iso(NAIVE) == "2026-11-01T12:00:00+00:00"
    assert v.iso(None) is None
    assert v.epoch_seconds(NAIVE) == AWARE.timestamp()
    assert v.epoch_seconds(None) == 0.0
    assert v.utcnow().tzinfo is timezone.utc


@pytest.mark.parametrize("limit,host,groups,expected", [
    pytest.param("", "web1", [], True, id="no limit is every host"),
    pytest.param("web1", "web1", [], True, id="the host by name"),
    pytest.param("web*", "web1", [], True, id="a glob"),
    pytest.param("web", "web1", ["web"], True, id="one of its groups"),
    pytest.param("db1, db2", "web1", ["web"], False, id="other hosts"),
    pytest.param("db1:web1", "web1", [], True, id="colon-separated"),
    pytest.param("all", "web1", [], True, id="all"),
    pytest.param("!db1", "web1", [], True, id="an exclusion errs on yes"),
])
def test_covers(limit, host, groups, expected):
    assert v.covers(limit, host, groups) is expected


KNOWN = [("web1", ["web"]), ("web2", ["web"]), ("db1", ["db"])]


@pytest.mark.parametrize("first,second,known,expected", [
    pytest.param("web1", "web1", [], True, id="the same pattern"),
    pytest.param("", "db1", [], True, id="every host overlaps anything"),
    pytest.param("web*", "web1", KNOWN, True, id="a glob covers a known host"),
    pytest.param("web", "web2", KNOWN, True, id="a group covers a known host"),
    pytest.param("web*", "db1", KNOWN, False, id="disjoint known hosts"),
    pytest.param("web*", "web", [], False, id="an unknown pattern is not guessed at"),
])
def test_limits_overlap(first, second, known, expected):
    assert v.limits_overlap(first, second, known) is expected
    assert v.limits_overlap(second, first, known) is expected


def test_hosts_named_by_a_limit_are_its_names_and_the_known_hosts_it_covers():
    assert v.hosts_named_by("db9, web*", KNOWN) == {"db9", "web*", "web1", "web2"}
    assert v.hosts_named_by("!web1", KNOWN) == {"web2", "db1", "web1"}


def test_task_statuses_are_the_words_ansible_results_carry():
    assert sorted(v.TaskStatus) == ["changed", "failed", "ok", "skipped", "unreachable"]
