"""Notifications' memory in a real SQLite store (fleet.store.notices): per-target rate limit, held messages,
outcomes, and what was told of each host, so none of it starts over after a restart."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from fleet.notify import Noted, RATE_SPAN, target_key
from fleet.store import notices
from fleet.store.models import NotifiedHost, NotifyTarget
from tests.unit.store_fixtures import temporary_store

URL = "slack://T000/B000/XXXXSECRET"
KEY = target_key(URL)
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def test_nothing_noted_of_hosts_never_notified(store):
    assert notices.noted_hosts([]) == {}
    assert notices.noted_hosts(["web1"]) == {}


def test_what_is_noted_of_a_host_is_kept_and_replaced(store):
    notices.remember_hosts({"web1": Noted("drift", frozenset({"motd", "ntp"})), "db1": Noted("unreachable")})
    assert notices.noted_hosts(["web1", "db1", "web2"]) == {
        "web1": Noted("drift", frozenset({"motd", "ntp"})), "db1": Noted("unreachable", frozenset())}
    notices.remember_hosts({"web1": Noted("failed")})
    assert notices.noted_hosts(["web1"]) == {"web1": Noted("failed", frozenset())}
    assert len(store.scalars(select(NotifiedHost)).all()) == 2  # replaced, not added


def test_a_host_with_nothing_open_loses_its_row(store):
    notices.remember_hosts({"web1": Noted("drift", frozenset({"motd"})), "db1": Noted("failed")})
    notices.remember_hosts({"web1": Noted()})  # in sync again: the next drift is news
    assert set(notices.noted_hosts(["web1", "db1"])) == {"db1"}


def test_a_target_takes_at_most_limit_messages_per_window_then_a_new_window_opens(store):
    taken = [notices.take_slot(KEY, "slack://****", NOW + timedelta(seconds=i), 3) for i in range(5)]
    assert taken == [True, True, True, False, False]
    assert notices.take_slot(KEY, "slack://****", NOW + RATE_SPAN, 3) is True  # the window is over
    row = store.scalar(select(NotifyTarget))
    assert row.sent_in_window == 1 and row.key == KEY


def test_only_the_masked_url_is_stored(store):
    notices.take_slot(KEY, "slack://****/****", NOW, 5)
    stored = store.scalar(select(NotifyTarget))
    assert stored.display == "slack://****/****" and "SECRET" not in stored.display + stored.key


def test_held_messages_are_counted_and_a_summary_that_went_out_takes_them_off(store):
    notices.take_slot(KEY, "masked", NOW, 5)
    for _ in range(3):
        notices.note_held(KEY)
    notices.record_outcome(KEY, NOW, "", folded=2)
    [target] = notices.targets()
    assert (target.sent_total, target.folded, target.last_sent_at) == (1, 1, NOW)
    notices.record_outcome(KEY, NOW, "", folded=10)
    assert notices.targets()[0].folded == 0  # never below zero


def test_a_failed_delivery_keeps_its_error_and_does_not_count_as_sent(store):
    notices.take_slot(KEY, "masked", NOW, 5)
    later = NOW + timedelta(minutes=3)
    notices.record_outcome(KEY, later, "HTTP 500 " + "x" * 5000)
    [target] = notices.targets()
    assert target.sent_total == 0 and target.last_sent_at is None
    assert target.last_error.startswith("HTTP 500") and len(target.last_error) == 2000
    assert target.last_error_at == later and target.last_error_at.tzinfo is not None


def test_outcomes_of_an_unknown_target_change_nothing(store):
    notices.note_held("no-such-key")
    notices.record_outcome("no-such-key", NOW, "boom")
    assert notices.targets() == []


def test_targets_are_listed_in_the_order_first_seen(store):
    for name in ("b", "a", "c"):
        notices.take_slot(target_key(name), f"masked-{name}", NOW, 5)
    assert [t.display for t in notices.targets()] == ["masked-b", "masked-a", "masked-c"]
