"""fleet.yml in, Policy out; windows, schedules and rollout batches as tables of cases."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.policy import (
    DEFAULT_POLICY,
    Policy,
    PolicyError,
    RemediationRule,
    Rollout,
    Window,
    batch_size,
    check_due,
    inventory_change_exceeds,
    is_cron,
    mode_for,
    next_scheduled_check,
    next_window_start,
    parse_duration,
    parse_policy,
    rollout_batches,
    seconds_until_next_check,
    should_stop,
    window_open,
)

UTC = timezone.utc


def at(text: str) -> datetime:
    """'2024-03-01 02:30' or '2024-03-01 02:30:05' as an aware UTC datetime."""
    layout = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.strptime(text, layout).replace(tzinfo=UTC)


def table(cases: dict) -> dict:
    """parametrize arguments for a {readable id: case tuple} table."""
    return {"argvalues": list(cases.values()), "ids": list(cases.keys())}


# --- parse_policy: valid documents ------------------------------------------

PRODUCT_EXAMPLE = """\
schedule: "*/30 * * * *"      # drift checks (cron); default every 30 minutes
remediation:                  # per inventory group; first match wins; default: report
  - group: web
    mode: auto                # auto | approve | report
  - group: db
    mode: approve
rollout:
  canary: 1                   # hosts converged first, alone
  batch: 25%                  # then batches of this size (number or percent)
  max_fail_percentage: 20     # stop the rollout above this
windows:                      # auto converge only inside an allow window
  - allow: "0 2 * * *"        # cron start
    duration: 2h
"""

VALID_CASES = {
    "no fleet.yml": (None, DEFAULT_POLICY),
    "empty file": ("", DEFAULT_POLICY),
    "only whitespace": ("  \n\n", DEFAULT_POLICY),
    "only comments": ("# nothing yet\n", DEFAULT_POLICY),
    "empty document marker": ("---\n", DEFAULT_POLICY),
    "the example from the product page": (PRODUCT_EXAMPLE, Policy(
        schedule="*/30 * * * *",
        remediation=(RemediationRule("web", "auto"), RemediationRule("db", "approve")),
        rollout=Rollout(canary=1, batch="25%", max_fail_percentage=20),
        windows=(Window("0 2 * * *", timedelta(hours=2)),),
    )),
    "only a schedule": ('schedule: "0 * * * *"\n', Policy(schedule="0 * * * *")),
    "cron macro schedule": ("schedule: '@hourly'\n", Policy(schedule="@hourly")),
    "schedule with names": ("schedule: '0 2 * * mon-fri'\n", Policy(schedule="0 2 * * mon-fri")),
    "key with nothing keeps the default": ("schedule:\nwindows:\nremediation:\n", DEFAULT_POLICY),
    "empty lists": ("remediation: []\nwindows: []\n", DEFAULT_POLICY),
    "partial rollout keeps other defaults": (
        "rollout:\n  canary: 0\n", Policy(rollout=Rollout(canary=0, batch="25%", max_fail_percentage=20))),
    "batch as a number is kept as text": ("rollout:\n  batch: 5\n", Policy(rollout=Rollout(batch="5"))),
    "batch as quoted number": ("rollout:\n  batch: '5'\n", Policy(rollout=Rollout(batch="5"))),
    "batch of 100%": ("rollout:\n  batch: 100%\n", Policy(rollout=Rollout(batch="100%"))),
    "max fail of 0 and 100 are bounds": (
        "rollout:\n  max_fail_percentage: 0\n", Policy(rollout=Rollout(max_fail_percentage=0))),
    "max fail of 100": (
        "rollout:\n  max_fail_percentage: 100\n", Policy(rollout=Rollout(max_fail_percentage=100))),
    "big canary is allowed": ("rollout:\n  canary: 50\n", Policy(rollout=Rollout(canary=50))),
    "two windows in order": (
        "windows:\n  - allow: '0 2 * * *'\n    duration: 1h30m\n"
        "  - allow: '0 23 * * sat'\n    duration: 1d\n",
        Policy(windows=(Window("0 2 * * *", timedelta(minutes=90)),
                        Window("0 23 * * sat", timedelta(days=1))))),
    "group all": ("remediation:\n  - {group: all, mode: auto}\n",
                  Policy(remediation=(RemediationRule("all", "auto"),))),
    "accepted unverified tasks": ("accept_unverified:\n  - Restart app\n  - 'baseline : Probe'\n",
                                  Policy(accept_unverified=frozenset({"Restart app", "baseline : Probe"}))),
    "flow style mapping": ("{rollout: {canary: 2, batch: 3}}\n", Policy(rollout=Rollout(canary=2, batch="3"))),
}


@pytest.mark.parametrize(("text", "expected"), **table(VALID_CASES))
def test_parse_policy_valid(text, expected):
    assert parse_policy(text) == expected


# --- parse_policy: every error says what is wrong and what to write ---------

ERROR_CASES = {
    # YAML itself
    "yaml syntax error names line and column": (
        "rollout:\n  canary: 1\n batch: 5\n",
        "fleet.yml is not valid YAML at line 3, column 2: expected <block end>, but found '<block mapping start>'; "
        "fix the syntax there"),
    "unquoted cron is a yaml alias": (
        "schedule: */30 * * * *\n",
        "quote cron expressions, like schedule: \"*/30 * * * *\""),
    "undefined alias": ("schedule: *daily\n", "found undefined alias 'daily'; quote cron expressions"),
    "two documents": (
        "schedule: '@daily'\n---\nschedule: '@hourly'\n", "fleet.yml is not valid YAML at line 2, column 1"),
    "python tags are refused": ("schedule: !!python/name:os.system\n", "fleet.yml is not valid YAML at line 1"),
    "accept_unverified must be a list": ("accept_unverified: Restart app\n", "accept_unverified must be a list"),
    "accept_unverified entries are names": ("accept_unverified:\n  - 5\n", "accept_unverified[0] must be text"),
    # shape of the document
    "top level is a list": ("- schedule\n", "fleet.yml line 1: the top level must be a mapping with the keys schedule, "
                                            "accept_unverified, remediation, rollout, windows"),  # more keys may follow
    "top level is text": ("hello\n", "fleet.yml line 1: the top level must be a mapping with the keys schedule, "
                                     "accept_unverified, remediation, rollout, windows"),
    "unknown top-level key": (
        "schedule: '@daily'\nwindow:\n  - allow: '0 2 * * *'\n",
        "fleet.yml line 2: window is not a known key; "
        "use one of schedule, accept_unverified, remediation, rollout, windows"),
    "key written twice": (
        "schedule: '@daily'\nschedule: '@hourly'\n",
        "fleet.yml line 2: schedule is written twice; keep only one of them"),
    # schedule
    "schedule not text": (
        "schedule: 30\n", "fleet.yml line 1: schedule must be text like schedule: \"*/30 * * * *\", got 30"),
    "schedule not cron": (
        "schedule: every hour\n",
        "fleet.yml line 1: schedule must be a cron expression with five fields (minute hour day month weekday), "
        "like schedule: \"*/30 * * * *\", got 'every hour'"),
    "schedule minute out of range": ("schedule: '61 * * * *'\n", "schedule must be a cron expression with five fields"),
    "schedule with a seconds field": ("schedule: '0 * * * * 30'\n", "got '0 * * * * 30'"),
    "schedule that never fires": (
        "schedule: '0 0 30 2 *'\n",
        "fleet.yml line 1: schedule never fires ('0 0 30 2 *'); pick a date that exists, like \"0 2 * * *\""),
    # remediation
    "remediation not a list": (
        "remediation:\n  web: auto\n",
        "fleet.yml line 1: remediation must be a list of entries like {group: web, mode: auto}, got a mapping"),
    "remediation entry not a mapping": (
        "remediation:\n  - web\n",
        "fleet.yml line 2: remediation[0] must be a mapping with the keys group, mode, got 'web'"),
    "remediation mode wrong": (
        "remediation:\n  - group: web\n    mode: auto\n  - group: db\n    mode: fix\n",
        "fleet.yml line 5: remediation[1].mode must be one of auto, approve, report, got 'fix'"),
    "remediation mode missing": (
        "remediation:\n  - group: web\n",
        "fleet.yml line 2: remediation[0].mode must be one of auto, approve, report, got nothing"),
    "remediation mode is yaml boolean": (
        "remediation:\n  - {group: web, mode: yes}\n", "remediation[0].mode must be one of auto, approve, report, got True"),
    "remediation group missing": (
        "remediation:\n  - mode: auto\n",
        "fleet.yml line 2: remediation[0].group is missing; write it like group: web"),
    "remediation group not text": (
        "remediation:\n  - {group: [web], mode: auto}\n",
        "fleet.yml line 2: remediation[0].group must be text like group: web, got a list"),
    "remediation group empty": (
        "remediation:\n  - {group: '', mode: auto}\n", "remediation[0].group must be text like group: web, got ''"),
    "remediation unknown key": (
        "remediation:\n  - {group: web, mode: auto, hosts: 3}\n",
        "fleet.yml line 2: remediation[0].hosts is not a known key; use one of group, mode"),
    "remediation group repeated": (
        "remediation:\n  - {group: web, mode: auto}\n  - {group: web, mode: report}\n",
        "fleet.yml line 3: remediation[1].group repeats group 'web' of remediation[0] and would never apply; "
        "keep one rule per group"),
    # rollout
    "rollout not a mapping": (
        "rollout: fast\n",
        "fleet.yml line 1: rollout must be a mapping with the keys canary, batch, max_fail_percentage, got 'fast'"),
    "rollout unknown key": (
        "rollout:\n  canaries: 2\n",
        "fleet.yml line 2: rollout.canaries is not a known key; use one of canary, batch, max_fail_percentage"),
    "negative canary": (
        "rollout:\n  canary: -1\n", "fleet.yml line 2: rollout.canary must be a whole number 0 or more, got -1"),
    "canary as text": ("rollout:\n  canary: one\n", "rollout.canary must be a whole number 0 or more, got 'one'"),
    "canary as boolean": ("rollout:\n  canary: true\n", "rollout.canary must be a whole number 0 or more, got True"),
    "canary as fraction": ("rollout:\n  canary: 1.5\n", "rollout.canary must be a whole number 0 or more, got 1.5"),
    "batch of zero": (
        "rollout:\n  batch: 0\n",
        "fleet.yml line 2: rollout.batch must be a number of hosts like 5 or a percent like 25% (1% to 100%), got 0"),
    "batch negative": ("rollout:\n  batch: -3\n", "rollout.batch must be a number of hosts like 5"),
    "batch of 0%": ("rollout:\n  batch: 0%\n", "got '0%'"),
    "batch over 100%": ("rollout:\n  batch: 150%\n", "got '150%'"),
    "batch fractional percent": ("rollout:\n  batch: 2.5%\n", "got '2.5%'"),
    "batch as word": ("rollout:\n  batch: half\n", "got 'half'"),
    "batch as boolean": ("rollout:\n  batch: yes\n", "got True"),
    "batch as fraction": ("rollout:\n  batch: 0.25\n", "got 0.25"),
    "max fail over 100": (
        "rollout:\n  max_fail_percentage: 101\n",
        "fleet.yml line 2: rollout.max_fail_percentage must be a whole number between 0 and 100, got 101"),
    "max fail negative": ("rollout:\n  max_fail_percentage: -5\n", "between 0 and 100, got -5"),
    "max fail with percent sign": ("rollout:\n  max_fail_percentage: 20%\n", "between 0 and 100, got '20%'"),
    # windows
    "windows not a list": (
        "windows:\n  allow: '0 2 * * *'\n  duration: 2h\n",
        "fleet.yml line 1: windows must be a list of entries like {allow: \"0 2 * * *\", duration: 2h}, got a mapping"),
    "window entry not a mapping": (
        "windows:\n  - '0 2 * * *'\n",
        "fleet.yml line 2: windows[0] must be a mapping with the keys allow, duration, got '0 2 * * *'"),
    "window unknown key": (
        "windows:\n  - {allow: '0 2 * * *', duration: 2h, timezone: CET}\n",
        "fleet.yml line 2: windows[0].timezone is not a known key; use one of allow, duration"),
    "window allow missing": (
        "windows:\n  - duration: 2h\n",
        "fleet.yml line 2: windows[0].allow is missing; write it like allow: \"0 2 * * *\""),
    "window allow not cron": (
        "windows:\n  - allow: '0 2 * * *'\n    duration: 2h\n  - allow: nightly\n    duration: 2h\n",
        "fleet.yml line 4: windows[1].allow must be a cron expression with five fields "
        "(minute hour day month weekday), like allow: \"0 2 * * *\", got 'nightly'"),
    "window duration missing": (
        "windows:\n  - allow: '0 2 * * *'\n",
        "fleet.yml line 2: windows[0].duration is missing; write it like duration: 2h"),
    "window duration without unit": (
        "windows:\n  - allow: '0 2 * * *'\n    duration: 90\n",
        "fleet.yml line 3: windows[0].duration must be text like duration: 2h, got 90"),
    "window duration unknown unit": (
        "windows:\n  - allow: '0 2 * * *'\n    duration: 2 hours\n",
        "fleet.yml line 3: windows[0].duration must be a positive duration like 2h, 30m, 90s, 1h30m or 1d, "
        "got '2 hours'"),
    "window duration of zero": (
        "windows:\n  - {allow: '0 2 * * *', duration: 0h}\n", "windows[0].duration must be a positive duration"),
    "window duration units out of order": (
        "windows:\n  - {allow: '0 2 * * *', duration: 30m1h}\n", "got '30m1h'"),
}


@pytest.mark.parametrize(("text", "message"), **table(ERROR_CASES))
def test_parse_policy_error(text, message):
    with pytest.raises(PolicyError) as raised:
        parse_policy(text)
    assert message in str(raised.value)


def test_policy_error_is_a_config_error():
    # The CLI turns every ConfigError into exit code 1 and a one-line message.
    with pytest.raises(ConfigError):
        parse_policy("rollout: fast\n")


def test_error_names_the_origin():
    with pytest.raises(PolicyError, match=r"^source/fleet\.yml line 2: rollout\.canary "):
        parse_policy("rollout:\n  canary: -2\n", origin="source/fleet.yml")


def test_yaml_error_keeps_the_cause():
    with pytest.raises(PolicyError) as raised:
        parse_policy("a: [1\n")
    assert raised.value.__cause__ is not None


def test_self_referencing_alias_does_not_hang():
    # An alias pointing at its own parent builds a cycle; the line map must not follow it forever.
    with pytest.raises(PolicyError, match=r"remediation\[0\] must be a mapping with the keys group, mode, got a list"):
        parse_policy("remediation: &loop\n  - *loop\n")


# --- parse_policy: every mistake at once, each with its line -------------------

THREE_MISTAKES = """\
schedule: every hour
remediation:
  - group: web
    mode: yolo
rollout:
  canary: 1
  batch: 0
"""


def test_every_mistake_is_named_with_its_line_in_the_order_of_the_file():
    with pytest.raises(PolicyError) as raised:
        parse_policy(THREE_MISTAKES)
    assert str(raised.value).splitlines() == [
        "fleet.yml has 3 mistakes:",
        "fleet.yml line 1: schedule must be a cron expression with five fields (minute hour day month weekday), "
        "like schedule: \"*/30 * * * *\", got 'every hour'",
        "fleet.yml line 4: remediation[0].mode must be one of auto, approve, report, got 'yolo'",
        "fleet.yml line 7: rollout.batch must be a number of hosts like 5 or a percent like 25% (1% to 100%), got 0",
    ]


def test_one_mistake_is_one_line():
    with pytest.raises(PolicyError) as raised:
        parse_policy("schedule: '@daily'\nremediation:\n  - {group: web, mode: yolo}\n")
    assert str(raised.value) == "fleet.yml line 3: remediation[0].mode must be one of auto, approve, report, got 'yolo'"


def test_the_same_file_without_its_mistakes_loads():
    fixed = THREE_MISTAKES.replace("every hour", '"0 * * * *"').replace("yolo", "auto").replace("batch: 0", "batch: 2")
    assert parse_policy(fixed) == Policy(
        schedule="0 * * * *", remediation=(RemediationRule("web", "auto"),), rollout=Rollout(canary=1, batch="2")
    )


SEVERAL_MISTAKES_CASES = {
    "unknown keys beside a wrong value": (
        "rollout:\n  canaries: 2\n  max_fail_percentage: 120\nwindow: []\n",
        ["line 2: rollout.canaries is not a known key", "line 3: rollout.max_fail_percentage must be",
         "line 4: window is not a known key"]),
    "one mistake in each of two list entries": (
        "windows:\n  - {allow: nightly, duration: 2h}\n  - {allow: '0 2 * * *', duration: 2 hours}\n",
        ["line 2: windows[0].allow must be a cron expression", "line 3: windows[1].duration must be a positive"]),
    "two mistakes in one entry": (
        "windows:\n  - allow: nightly\n    duration: 0h\n",
        ["line 2: windows[0].allow must be", "line 3: windows[0].duration must be"]),
    "a key missing is placed at its entry": (
        "remediation:\n  - {group: web, mode: auto}\n  - mode: report\n  - {group: db, mode: fix}\n",
        ["line 3: remediation[1].group is missing", "line 4: remediation[2].mode must be one of"]),
    "a key written twice beside another mistake": (
        "retention:\n  days: 0\nschedule: '@daily'\nschedule: '@hourly'\n",
        ["line 2: retention.days must be a whole number 1 or more, got 0", "line 4: schedule is written twice"]),
    "two unknown events of one target": (
        "notify:\n  - url: json://h/hook\n    on: [drift, dirft, stal]\n",
        ["line 3: notify[0].on[1] must be one of", "line 3: notify[0].on[2] must be one of"]),
    "a repeated group after a wrong rule": (
        "remediation:\n  - {group: web, mode: auto}\n  - {group: db, mode: fix}\n  - {group: web, mode: report}\n",
        ["line 3: remediation[1].mode must be", "line 4: remediation[2].group repeats group 'web' of remediation[0]"]),
}


@pytest.mark.parametrize(("text", "expected"), **table(SEVERAL_MISTAKES_CASES))
def test_several_mistakes_are_all_named(text, expected):
    with pytest.raises(PolicyError) as raised:
        parse_policy(text)
    lines = str(raised.value).splitlines()
    assert lines[0] == f"fleet.yml has {len(expected)} mistakes:"
    assert len(lines) == len(expected) + 1
    for line, start in zip(lines[1:], expected, strict=True):
        assert line.startswith(f"fleet.yml {start}"), line


# --- parse_duration ----------------------------------------------------------

DURATION_CASES = {
    "hours": ("2h", timedelta(hours=2)),
    "minutes": ("30m", timedelta(minutes=30)),
    "seconds": ("90s", timedelta(seconds=90)),
    "days": ("1d", timedelta(days=1)),
    "hours and minutes": ("1h30m", timedelta(minutes=90)),
    "every unit": ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    "surrounding spaces": (" 2h ", timedelta(hours=2)),
    "zero part beside a positive one": ("0h30m", timedelta(minutes=30)),
}


@pytest.mark.parametrize(("text", "expected"), **table(DURATION_CASES))
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


BAD_DURATIONS = {
    "empty": "",
    "bare number": "90",
    "zero": "0m",
    "all zero parts": "0d0h0m0s",
    "negative": "-2h",
    "units out of order": "30m1h",
    "upper case": "2H",
    "spelled out": "2 hours",
    "fraction": "1.5h",
    "weeks are not a unit": "1w",
    "unit twice": "1h1h",
}


@pytest.mark.parametrize("text", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# --- is_cron -----------------------------------------------------------------

CRON_CASES = {
    "every 30 minutes": ("*/30 * * * *", True),
    "weekday names": ("0 2 * * mon-fri", True),
    "macro": ("@daily", True),
    "unknown macro": ("@reboot", False),
    "four fields": ("0 2 * *", False),
    "six fields": ("0 2 * * * 0", False),
    "hour out of range": ("0 24 * * *", False),
    "words": ("every night", False),
}


@pytest.mark.parametrize(("expression", "valid"), **table(CRON_CASES))
def test_is_cron(expression, valid):
    assert is_cron(expression) is valid


# --- mode_for ----------------------------------------------------------------

RULES = Policy(remediation=(
    RemediationRule("web", "auto"),
    RemediationRule("db", "approve"),
    RemediationRule("eu", "report"),
))

MODE_CASES = {
    "no rules means report": (Policy(), ["web"], "report"),
    "no matching group means report": (RULES, ["cache"], "report"),
    "host in no group means report": (RULES, [], "report"),
    "matching group": (RULES, ["db"], "approve"),
    "first rule in fleet.yml order wins, not the host's group order": (RULES, ["db", "web"], "auto"),
    "later rule applies when earlier ones do not match": (RULES, ["eu", "cache"], "report"),
    "group all matches every host": (
        Policy(remediation=(RemediationRule("all", "approve"),)), ["anything"], "approve"),
    "group all matches a host in no group": (
        Policy(remediation=(RemediationRule("all", "auto"),)), [], "auto"),
    "a rule before all still wins": (
        Policy(remediation=(RemediationRule("db", "report"), RemediationRule("all", "auto"))), ["db"], "report"),
    "all after other rules catches the rest": (
        Policy(remediation=(RemediationRule("db", "report"), RemediationRule("all", "auto"))), ["web"], "auto"),
    "groups may be any iterable": (RULES, iter(("web",)), "auto"),
}


@pytest.mark.parametrize(("policy", "groups", "mode"), **table(MODE_CASES))
def test_mode_for(policy, groups, mode):
    assert mode_for(policy, groups) == mode


# --- window_open ---------------------------------------------------------------

NIGHTLY = Policy(windows=(Window("0 2 * * *", timedelta(hours=2)),))
LATE = Policy(windows=(Window("0 23 * * *", timedelta(hours=2)),))
WEEKEND = Policy(windows=(Window("0 22 * * sat", timedelta(days=1)),))
TWO = Policy(windows=(Window("0 2 * * *", timedelta(hours=1)), Window("30 12 * * *", timedelta(minutes=30))))

WINDOW_CASES = {
    "no windows means always open": (Policy(), "2024-03-01 13:37", True),
    "before the window": (NIGHTLY, "2024-03-01 01:59", False),
    "exactly at window start": (NIGHTLY, "2024-03-01 02:00", True),
    "inside the window": (NIGHTLY, "2024-03-01 03:15", True),
    "last second of the window": (NIGHTLY, "2024-03-01 03:59:59", True),
    "exactly at window end is closed": (NIGHTLY, "2024-03-01 04:00", False),
    "just after window end": (NIGHTLY, "2024-03-01 04:00:01", False),
    "afternoon": (NIGHTLY, "2024-03-01 15:00", False),
    "window crossing midnight, before midnight": (LATE, "2024-03-01 23:30", True),
    "window crossing midnight, after midnight": (LATE, "2024-03-02 00:30", True),
    "window crossing midnight, after it ends": (LATE, "2024-03-02 01:00", False),
    "weekday window on its day": (WEEKEND, "2024-03-02 22:00", True),  # a Saturday
    "weekday window into the next day": (WEEKEND, "2024-03-03 21:59", True),
    "weekday window closed midweek": (WEEKEND, "2024-03-06 23:00", False),
    "second of two windows open": (TWO, "2024-03-01 12:45", True),
    "first of two windows open": (TWO, "2024-03-01 02:10", True),
    "between two windows": (TWO, "2024-03-01 13:00", False),
}


@pytest.mark.parametrize(("policy", "now", "is_open"), **table(WINDOW_CASES))
def test_window_open(policy, now, is_open):
    assert window_open(policy, at(now)) is is_open


def test_window_open_with_microseconds_at_start():
    assert window_open(NIGHTLY, at("2024-03-01 02:00").replace(microsecond=1)) is True


def test_window_open_converts_other_timezones_to_utc():
    # 03:00 in UTC+2 is 01:00 UTC: before the 02:00 UTC window.
    plus_two = timezone(timedelta(hours=2))
    assert window_open(NIGHTLY, datetime(2024, 3, 1, 3, 0, tzinfo=plus_two)) is False
    assert window_open(NIGHTLY, datetime(2024, 3, 1, 4, 30, tzinfo=plus_two)) is True


def test_window_open_takes_naive_as_utc():
    assert window_open(NIGHTLY, datetime(2024, 3, 1, 2, 30)) is True


# --- next_window_start ---------------------------------------------------------

NEXT_WINDOW_CASES = {
    "no windows means none": (Policy(), "2024-03-01 12:00", None),
    "later today": (NIGHTLY, "2024-03-01 01:00", "2024-03-01 02:00"),
    "tomorrow once today's has started": (NIGHTLY, "2024-03-01 02:00", "2024-03-02 02:00"),
    "earliest of two windows": (TWO, "2024-03-01 03:00", "2024-03-01 12:30"),
    "earliest of two windows, next day": (TWO, "2024-03-01 13:00", "2024-03-02 02:00"),
}


@pytest.mark.parametrize(("policy", "now", "expected"), **table(NEXT_WINDOW_CASES))
def test_next_window_start(policy, now, expected):
    assert next_window_start(policy, at(now)) == (at(expected) if expected else None)


def test_next_window_start_is_aware_utc():
    start = next_window_start(NIGHTLY, datetime(2024, 3, 1, 1, 0))
    assert start is not None and start.tzinfo is not None and start.utcoffset() == timedelta(0)


# --- next_scheduled_check and check_due ------------------------------------------

HALF_HOURLY = Policy()
NIGHTLY_CHECK = Policy(schedule="0 3 * * *")

NEXT_CHECK_CASES = {
    "between slots": (HALF_HOURLY, "2024-03-01 10:10", "2024-03-01 10:30"),
    "exactly on a slot is strictly after": (HALF_HOURLY, "2024-03-01 10:30", "2024-03-01 11:00"),
    "just after a slot": (HALF_HOURLY, "2024-03-01 10:30:01", "2024-03-01 11:00"),
    "across midnight": (HALF_HOURLY, "2024-03-01 23:45", "2024-03-02 00:00"),
    "daily schedule tomorrow": (NIGHTLY_CHECK, "2024-03-01 03:00", "2024-03-02 03:00"),
    "leap day": (NIGHTLY_CHECK, "2024-02-28 04:00", "2024-02-29 03:00"),
}


@pytest.mark.parametrize(("policy", "after", "expected"), **table(NEXT_CHECK_CASES))
def test_next_scheduled_check(policy, after, expected):
    assert next_scheduled_check(policy, at(after)) == at(expected)


CHECK_DUE_CASES = {
    "never checked means due": (HALF_HOURLY, None, "2024-03-01 10:10", True),
    "before the next slot": (HALF_HOURLY, "2024-03-01 10:00", "2024-03-01 10:29:59", False),
    "exactly at the next slot": (HALF_HOURLY, "2024-03-01 10:00", "2024-03-01 10:30", True),
    "just after the next slot": (HALF_HOURLY, "2024-03-01 10:00", "2024-03-01 10:30:02", True),
    "just checked": (HALF_HOURLY, "2024-03-01 10:30", "2024-03-01 10:30", False),
    "checked late, next slot not come": (HALF_HOURLY, "2024-03-01 10:07", "2024-03-01 10:20", False),
    "missed three slots means one check": (HALF_HOURLY, "2024-03-01 10:00", "2024-03-01 11:45", True),
    "daily schedule not due the same day": (NIGHTLY_CHECK, "2024-03-01 03:00", "2024-03-01 23:00", False),
    "daily schedule due the next night": (NIGHTLY_CHECK, "2024-03-01 03:00", "2024-03-02 03:00", True),
}


@pytest.mark.parametrize(("policy", "last", "now", "due"), **table(CHECK_DUE_CASES))
def test_check_due(policy, last, now, due):
    assert check_due(policy, at(last) if last else None, at(now)) is due


def test_missed_slots_do_not_burst():
    # Down from 10:00 to 11:45: one check at 11:45, then nothing until the 12:00 slot.
    last = at("2024-03-01 10:00")
    assert check_due(HALF_HOURLY, last, at("2024-03-01 11:45")) is True
    last = at("2024-03-01 11:45")
    assert check_due(HALF_HOURLY, last, at("2024-03-01 11:46")) is False
    assert check_due(HALF_HOURLY, last, at("2024-03-01 12:00")) is True


def test_check_due_mixes_naive_and_aware():
    # SQLite hands datetimes back naive; they are UTC.
    assert check_due(HALF_HOURLY, datetime(2024, 3, 1, 10, 0), at("2024-03-01 10:30")) is True


# --- batch_size --------------------------------------------------------------

BATCH_SIZE_CASES = {
    "25% of 10 rounds up": ("25%", 10, 3),
    "25% of 8 is exact": ("25%", 8, 2),
    "25% of 1 is at least one": ("25%", 1, 1),
    "percent of no hosts is at least one": ("25%", 0, 1),
    "1% of 3 is one": ("1%", 3, 1),
    "100% is everyone": ("100%", 7, 7),
    "a number is taken as is": ("5", 100, 5),
    "a number larger than the fleet": ("5", 2, 5),
}


@pytest.mark.parametrize(("batch", "hosts", "size"), **table(BATCH_SIZE_CASES))
def test_batch_size(batch, hosts, size):
    assert batch_size(Rollout(batch=batch), hosts) == size


# --- rollout_batches ------------------------------------------------------------

HOSTS = [f"h{i}" for i in range(1, 11)]

BATCH_CASES = {
    "no hosts means no batches": (Rollout(), [], []),
    "one host is the canary alone": (Rollout(), ["h1"], [["h1"]]),
    "canary then batches of 25% of 10": (
        Rollout(canary=1, batch="25%"), HOSTS,
        [["h1"], ["h2", "h3", "h4"], ["h5", "h6", "h7"], ["h8", "h9", "h10"]]),
    "no canary": (Rollout(canary=0, batch="5"), HOSTS, [HOSTS[:5], HOSTS[5:]]),
    "two canaries": (Rollout(canary=2, batch="4"), HOSTS, [HOSTS[:2], HOSTS[2:6], HOSTS[6:]]),
    "canary bigger than host count": (Rollout(canary=5, batch="2"), ["h1", "h2", "h3"], [["h1", "h2", "h3"]]),
    "canary equal to host count": (Rollout(canary=3), ["h1", "h2", "h3"], [["h1", "h2", "h3"]]),
    "100% batch after the canary": (Rollout(canary=1, batch="100%"), HOSTS[:4], [["h1"], ["h2", "h3", "h4"]]),
    "100% batch without canary": (Rollout(canary=0, batch="100%"), HOSTS[:4], [HOSTS[:4]]),
    "batch of one": (Rollout(canary=0, batch="1"), ["a", "b", "c"], [["a"], ["b"], ["c"]]),
    "last batch is smaller": (Rollout(canary=1, batch="3"), HOSTS[:6], [["h1"], ["h2", "h3", "h4"], ["h5", "h6"]]),
    "order is kept, not sorted": (Rollout(canary=1, batch="2"), ["c", "a", "b"], [["c"], ["a", "b"]]),
    "a host named twice is rolled out once": (
        Rollout(canary=1, batch="2"), ["a", "b", "a", "c", "b"], [["a"], ["b", "c"]]),
}


@pytest.mark.parametrize(("rollout", "hosts", "batches"), **table(BATCH_CASES))
def test_rollout_batches(rollout, hosts, batches):
    assert rollout_batches(rollout, hosts) == batches


@pytest.mark.parametrize("canary", [0, 1, 3, 20])
@pytest.mark.parametrize("batch", ["1", "3", "25%", "33%", "100%"])
def test_rollout_batches_cover_every_host_once(canary, batch):
    batches = rollout_batches(Rollout(canary=canary, batch=batch), HOSTS)
    assert [host for group in batches for host in group] == HOSTS
    assert all(batches)  # never an empty batch


# --- should_stop ---------------------------------------------------------------

STOP_CASES = {
    "nothing attempted": (Rollout(), 0, 0, False),
    "no failures": (Rollout(), 10, 0, False),
    "failed canary stops": (Rollout(canary=1, max_fail_percentage=20), 1, 1, True),
    "healthy canary goes on": (Rollout(canary=1, max_fail_percentage=20), 1, 0, False),
    "exactly at the limit goes on": (Rollout(max_fail_percentage=20), 5, 1, False),
    "just above the limit stops": (Rollout(max_fail_percentage=20), 9, 2, True),
    "just below the limit goes on": (Rollout(max_fail_percentage=20), 11, 2, False),
    "zero tolerance stops on one failure": (Rollout(max_fail_percentage=0), 100, 1, True),
    "zero tolerance without failures goes on": (Rollout(max_fail_percentage=0), 100, 0, False),
    "100 percent never stops": (Rollout(max_fail_percentage=100), 4, 4, False),
    "a third with 33 percent stops": (Rollout(max_fail_percentage=33), 3, 1, True),
}


@pytest.mark.parametrize(("rollout", "attempted", "failed", "stop"), **table(STOP_CASES))
def test_should_stop(rollout, attempted, failed, stop):
    assert should_stop(rollout, attempted, failed) is stop


# --- max_inventory_change --------------------------------------------------------

INVENTORY_GUARD_CASES = {
    "absent: 25% by default": ("schedule: '0 * * * *'\n", "25%"),
    "a percent": ("max_inventory_change: 10%\n", "10%"),
    "a host count": ("max_inventory_change: 5\n", "5"),
    "a quoted host count": ("max_inventory_change: '5'\n", "5"),
    "zero: any change waits": ("max_inventory_change: 0\n", "0"),
    "above 100% is allowed": ("max_inventory_change: 300%\n", "300%"),
    "off (YAML reads false) disables": ("max_inventory_change: off\n", None),
    "quoted off disables": ("max_inventory_change: 'OFF'\n", None),
    "null disables": ("max_inventory_change: null\n", None),
    "nothing disables, unlike other keys": ("max_inventory_change:\n", None),
}


@pytest.mark.parametrize(("text", "limit"), **table(INVENTORY_GUARD_CASES))
def test_parse_max_inventory_change(text, limit):
    assert parse_policy(text).max_inventory_change == limit


@pytest.mark.parametrize("text, shown", [
    pytest.param("max_inventory_change: on\n", "True", id="on is not a limit"),
    pytest.param("max_inventory_change: -3\n", "-3", id="negative"),
    pytest.param("max_inventory_change: 2.5%\n", "'2.5%'", id="fraction of a percent"),
    pytest.param("max_inventory_change: many\n", "'many'", id="a word"),
    pytest.param("max_inventory_change: [5]\n", "a list", id="a list"),
])
def test_parse_max_inventory_change_rejects(text, shown):
    with pytest.raises(PolicyError) as raised:
        parse_policy(text)
    assert str(raised.value) == ("fleet.yml line 1: max_inventory_change must be a number of hosts like 5, a percent "
                                 f"like 25%, or off, got {shown}")


INVENTORY_CHANGE_CASES = {
    "4 to 40 hosts is far above 25%": ("25%", 4, 36, True),
    "4 to 5 hosts is exactly 25%: goes on": ("25%", 4, 1, False),
    "4 to 6 hosts is above 25%": ("25%", 4, 2, True),
    "40 to a handful is above 25%": ("25%", 40, 36, True),
    "one host swapped for another counts twice": ("25%", 8, 2, False),
    "nothing changed": ("0", 40, 0, False),
    "zero tolerance": ("0", 40, 1, True),
    "a count: at the limit goes on": ("5", 100, 5, False),
    "a count: above the limit waits": ("5", 100, 6, True),
    "from no hosts any change is above a percent": ("25%", 0, 1, True),
    "off never holds": (None, 4, 400, False),
}


@pytest.mark.parametrize(("limit", "previous", "changed", "exceeds"), **table(INVENTORY_CHANGE_CASES))
def test_inventory_change_exceeds(limit, previous, changed, exceeds):
    assert inventory_change_exceeds(limit, previous, changed) is exceeds


# --- purity --------------------------------------------------------------------

FORBIDDEN_IMPORTS = {"subprocess", "git", "sqlalchemy", "flask", "flask_sqlalchemy", "ansible_runner",
                     "ansible", "os", "pathlib", "time", "socket"}


def test_policy_imports_no_io():
    source = Path(__file__).resolve().parents[2] / "fleet" / "policy.py"
    tree = ast.parse(source.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported & FORBIDDEN_IMPORTS == set()
    assert "now()" not in source.read_text()  # the clock is always a parameter


SSH_PERSIST_NOW = datetime(2026, 11, 27, 14, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("schedule", "now", "expected"), [
    ("*/30 * * * *", SSH_PERSIST_NOW, 20 * 60),
    ("*/30 * * * *", datetime(2026, 11, 27, 14, 30, 0, tzinfo=UTC), 30 * 60),
    ("0 * * * *", datetime(2026, 11, 27, 14, 59, 59, 500000, tzinfo=UTC), 1),
    ("0 3 * * *", SSH_PERSIST_NOW, (24 - 14 + 3) * 3600 - 10 * 60),
])
def test_seconds_until_next_check(schedule, now, expected):
    assert seconds_until_next_check(Policy(schedule=schedule), now) == expected
