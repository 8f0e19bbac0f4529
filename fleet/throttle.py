"""How long to refuse credentials after repeated failures (pure: no clock, no store, no Flask).

A limit allows `most` failures within a sliding `window`; at `most`, every
further attempt is refused without checking the credentials, until enough
of the failures have aged out of the window. Refused attempts are not
failures (nothing was checked), so the refusal ends a fixed time after the
last real failure and Retry-After can say exactly when.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

ACCOUNT = "account"  # failed logins for one account name, from anywhere
ADDRESS = "address"  # failed logins from one remote address, for any account
TOKEN = "token"  # failed bearer tokens from one remote address


@dataclass(frozen=True)
class Limit:
    scope: str
    most: int  # failures allowed within the window before refusing
    window: timedelta


def login_limits(window: timedelta) -> tuple[Limit, Limit]:
    """A guess at one password every few minutes per account; a spray across accounts per address."""
    return Limit(ACCOUNT, 5, window), Limit(ADDRESS, 20, window)


def token_limit(window: timedelta) -> Limit:
    return Limit(TOKEN, 20, window)


def retry_after(failures: Iterable[datetime], limit: Limit, now: datetime) -> int:
    """Whole seconds until fewer than `limit.most` failures lie inside the window; 0: go ahead."""
    recent = sorted(at for at in failures if at > now - limit.window)
    if len(recent) < limit.most:
        return 0
    # Once this one ages out, only most - 1 are left inside the window.
    freeing = recent[len(recent) - limit.most]
    return max(1, math.ceil((freeing + limit.window - now).total_seconds()))


def wait_words(seconds: int) -> str:
    """'42 seconds', '15 minutes', '2 hours': how long, for a message."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    if seconds < 90 * 60:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"
