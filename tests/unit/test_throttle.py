"""fleet.throttle: when repeated failures refuse credentials, and for how long (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet.throttle import Limit, login_limits, retry_after, token_limit, wait_words

NOW = datetime(2026, 11, 28, 6, 0, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=15)
FIVE = Limit("account", 5, WINDOW)


def ago(*seconds: int) -> list[datetime]:
    return [NOW - timedelta(seconds=s) for s in seconds]


@pytest.mark.parametrize("failures, expected", [
    pytest.param([], 0, id="no failure"),
    pytest.param(ago(10, 20, 30, 40), 0, id="one under the limit"),
    pytest.param(ago(10, 20, 30, 40, 50), 900 - 50, id="at the limit: until the oldest ages out"),
    pytest.param(ago(10, 20, 30, 40, 50, 60, 70), 900 - 50, id="over the limit: until enough age out"),
    pytest.param(ago(10, 20, 30, 40, 900, 1000), 0, id="old failures do not count"),
    pytest.param(ago(1, 2, 3, 4, 899.5), 1, id="a fraction of a second is rounded up to one"),
])
def test_retry_after(failures, expected):
    assert retry_after(failures, FIVE, NOW) == expected


def test_order_of_failures_does_not_matter():
    failures = ago(50, 10, 40, 20, 30, 60)
    assert retry_after(failures, FIVE, NOW) == retry_after(sorted(failures), FIVE, NOW) == 900 - 50


def test_the_limits_fleet_applies():
    account, address = login_limits(WINDOW)
    assert (account.scope, account.most, account.window) == ("account", 5, WINDOW)
    assert (address.scope, address.most) == ("address", 20)
    assert (token_limit(WINDOW).scope, token_limit(WINDOW).most) == ("token", 20)


@pytest.mark.parametrize("seconds, words", [
    (1, "1 second"), (42, "42 seconds"), (89, "89 seconds"), (90, "2 minutes"), (900, "15 minutes"),
    (5400, "2 hours"),
])
def test_wait_words(seconds, words):
    assert wait_words(seconds) == words
