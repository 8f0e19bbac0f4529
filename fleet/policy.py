"""fleet.yml policy: parsing, maintenance windows, check schedules and rollout batches.

Pure on purpose: no git, no subprocess, no database, no files and no clock.
The caller reads fleet.yml from the revision and passes its text in; every
function that needs the time takes ``now`` as a parameter. That keeps every
rule here testable with plain tables of cases.

All cron expressions (``schedule`` and ``windows[].allow``) are evaluated in
UTC. Datetimes handed in may be aware (converted to UTC) or naive (taken to be
UTC already, as SQLite hands them back); datetimes handed out are aware UTC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import yaml
from croniter import CroniterError, croniter

from fleet.errors import ConfigError
from fleet.vocabulary import aware

MODES = ("auto", "approve", "report")
MATCH_ALL = "all"  # a rule for group "all" matches every host, as in Ansible

_TOP_KEYS = (
    "schedule",
    "accept_unverified",
    "remediation",
    "rollout",
    "windows",
    "max_inventory_change",
    "retention",
    "notify",
)
# What a notify target can be told about (fleet.notify sends them); a target without `on:` hears all.
NOTIFY_EVENTS = ("drift", "unreachable", "failed", "approval", "rejected", "stale")
_NOTIFY_KEYS = ("url", "on")
_RETENTION_KEYS = ("days", "keep_per_host")
_RULE_KEYS = ("group", "mode")
_ROLLOUT_KEYS = ("canary", "batch", "max_fail_percentage")
_WINDOW_KEYS = ("allow", "duration")

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_PERCENT = re.compile(r"(\d+)%")
_CRON_EXAMPLE = '"*/30 * * * *"'
# Any fixed instant will do to ask "does this cron ever fire?"; a fixed one keeps this pure.
_CRON_PROBE = datetime(2000, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class PolicyError(ConfigError):
    """fleet.yml is invalid; the message names every mistake, one a line, each with its line and key."""


@dataclass(frozen=True)
class RemediationRule:
    """What to do with drift on the hosts of one inventory group."""

    group: str
    mode: str  # "auto" | "approve" | "report"


@dataclass(frozen=True)
class Rollout:
    """How an auto converge spreads over the drifted hosts."""

    canary: int = 1
    batch: str = "25%"  # a number ("5") or a percent ("25%"), kept as given
    max_fail_percentage: int = 20


@dataclass(frozen=True)
class Window:
    """A maintenance window: opens at each cron time, stays open for ``duration``."""

    allow: str  # cron expression of the window start
    duration: timedelta


@dataclass(frozen=True)
class Retention:
    """How long run history is kept (`fleet.store.retention` prunes by it).

    Runs older than ``days`` go, except each host's newest ``keep_per_host``
    checks and converges (and whatever else retention always keeps).
    """

    days: int = 90
    keep_per_host: int = 1


@dataclass(frozen=True)
class NotifyRule:
    """One `notify:` target: an apprise URL and the events it is told about."""

    url: str = field(repr=False)  # may carry a token: never in a repr, a log line or the store
    on: frozenset[str] = frozenset(NOTIFY_EVENTS)


@dataclass(frozen=True)
class Policy:
    """Everything fleet.yml can say; the defaults are what an absent fleet.yml means."""

    schedule: str = "*/30 * * * *"
    # Task names known not to be checkable: they no longer keep a host from `in_sync`.
    accept_unverified: frozenset[str] = frozenset()
    remediation: tuple[RemediationRule, ...] = ()
    rollout: Rollout = Rollout()
    windows: tuple[Window, ...] = ()
    # Hosts added + removed (a number, or a percent of the previous count) above which auto converge
    # waits for an approval; None ("off") disables the guard.
    max_inventory_change: str | None = "25%"
    retention: Retention = Retention()
    notify: tuple[NotifyRule, ...] = ()


DEFAULT_POLICY = Policy()


# --- parsing ---------------------------------------------------------------


class _Mistake(Exception):
    """A value that cannot be read was noted; raised to give up on that value alone (see _Document.fail)."""


_PARENT_PATH = re.compile(r"(.*)(?:\.[^.\[\]]*|\[\d+\])")  # "a[0].b" -> "a[0]" -> "a"


@dataclass(frozen=True)
class _Document:
    """The loaded YAML, where each key path sits, and the mistakes found in it so far.

    Mistakes are collected, not raised one by one: an operator who fixes the
    first of three should not have to push twice more to hear of the others.
    """

    origin: str
    data: Any
    lines: Mapping[str, int]
    mistakes: list[tuple[int, str]] = field(default_factory=list)  # (line, message), in the order found

    def note(self, path: str, message: str) -> None:
        """Record a mistake and go on: what is around it is still worth checking."""
        line = self.line_of(path)
        subject = path or "the top level"
        self.mistakes.append((line, f"{self.origin} line {line}: {subject} {message}"))

    def fail(self, path: str, message: str) -> NoReturn:
        """Record a mistake in a value that cannot be read; the nearest `_checked` skips that value."""
        self.note(path, message)
        raise _Mistake(path)

    def line_of(self, path: str) -> int:
        """The 1-based line of ``path``; a key that is missing is placed at the entry that should hold it."""
        while path not in self.lines:
            parent = _PARENT_PATH.fullmatch(path)
            if parent is None:
                return self.lines.get("", 1)
            path = parent.group(1)
        return self.lines[path]

    def raise_mistakes(self) -> None:
        """Raise one PolicyError naming every mistake, in the order of fleet.yml's lines, if there are any."""
        if not self.mistakes:
            return
        listed = [message for _, message in sorted(self.mistakes, key=lambda mistake: mistake[0])]
        if len(listed) > 1:
            listed.insert(0, f"{self.origin} has {len(listed)} mistakes:")
        raise PolicyError("\n".join(listed))


def _checked(parse: Callable[[], T], fallback: T) -> T:
    """``parse()``, or ``fallback`` when it gave up on a mistake it noted, so checking goes on past it.

    A fallback never reaches a caller: parse_policy raises once any mistake was noted.
    """
    try:
        return parse()
    except _Mistake:
        return fallback


def parse_policy(text: str | None, origin: str = "fleet.yml") -> Policy:
    """Parse fleet.yml text into a Policy, or raise PolicyError naming every mistake, one a line.

    None, empty or comment-only text means DEFAULT_POLICY. A key set to nothing
    (``windows:``) counts as absent. Unknown keys and wrong types are errors,
    never silently ignored, so a typo cannot turn a policy off. A YAML syntax
    error stops the reading where it is, so it is the only one named.
    """
    if text is None or not text.strip():
        return DEFAULT_POLICY
    doc = _load(text, origin)
    if doc.data is None:
        return DEFAULT_POLICY
    top: Mapping[str, Any] = _checked(lambda: _mapping(doc, "", doc.data, _TOP_KEYS), {})
    parsed = Policy(
        schedule=_checked(lambda: _schedule(doc, top.get("schedule")), DEFAULT_POLICY.schedule),
        accept_unverified=_checked(lambda: _accept_unverified(doc, top.get("accept_unverified")), frozenset()),
        remediation=_checked(lambda: _remediation(doc, top.get("remediation")), ()),
        rollout=_checked(lambda: _rollout(doc, top.get("rollout")), Rollout()),
        windows=_checked(lambda: _windows(doc, top.get("windows")), ()),
        max_inventory_change=_checked(lambda: _inventory_change(doc, top), None),
        retention=_checked(lambda: _retention(doc, top.get("retention")), Retention()),
        notify=_checked(lambda: _notify(doc, top.get("notify")), ()),
    )
    doc.raise_mistakes()
    return parsed


def _load(text: str, origin: str) -> _Document:
    """YAML text -> data and line map (keys written twice noted), with syntax errors turned into PolicyError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise PolicyError(_yaml_message(origin, exc)) from exc
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    doc = _Document(origin, data, lines)
    if node is not None:
        _map_lines(doc, node, "", lines, set())
    return doc


def _yaml_message(origin: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    advice = "fix the syntax there"
    # The commonest slip in fleet.yml: an unquoted cron starting with "*" reads as a YAML alias.
    if "alias" in f"{getattr(exc, 'context', '')} {problem}":
        advice = f"quote cron expressions, like schedule: {_CRON_EXAMPLE}"
    return f"{origin} is not valid YAML{where}: {problem}; {advice}"


def _map_lines(doc: _Document, node: yaml.Node, path: str, lines: dict[str, int], seen: set[int]) -> None:
    """Record the 1-based line of every key path; reject keys written twice."""
    if id(node) in seen:  # aliases may point back up the tree
        return
    seen.add(id(node))
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        _map_mapping_lines(doc, node, path, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _map_lines(doc, item, f"{path}[{index}]", lines, seen)


def _map_mapping_lines(
    doc: _Document, node: yaml.MappingNode, path: str, lines: dict[str, int], seen: set[int]
) -> None:
    keys: set[str] = set()
    for key_node, value_node in node.value:
        child = _child(path, str(key_node.value))
        if child in keys:
            # PyYAML would silently keep the last one; the first may be the one meant.
            lines[child] = key_node.start_mark.line + 1
            doc.note(child, "is written twice; keep only one of them")
        keys.add(child)
        lines[child] = key_node.start_mark.line + 1
        _map_lines(doc, value_node, child, lines, seen)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    """A value as an error message shows it: containers by kind, scalars by repr."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


def _mapping(doc: _Document, path: str, value: Any, allowed: Sequence[str]) -> Mapping[str, Any]:
    """``value`` as a mapping whose keys are all in ``allowed``."""
    if not isinstance(value, Mapping):
        doc.fail(path, f"must be a mapping with the keys {', '.join(allowed)}, got {_shown(value)}")
    for key in value:
        if key not in allowed:
            # Noted, not fatal: the known keys beside it are still checked (and an unknown one is never read).
            doc.note(_child(path, str(key)), f"is not a known key; use one of {', '.join(allowed)}")
    return value


def _list(doc: _Document, path: str, value: Any, example: str) -> list[Any]:
    if not isinstance(value, list):
        doc.fail(path, f"must be a list of entries like {example}, got {_shown(value)}")
    return value


def _text(doc: _Document, path: str, value: Any, example: str) -> str:
    """A required non-empty string."""
    if value is None:
        doc.fail(path, f"is missing; write it like {example}")
    if not isinstance(value, str) or not value.strip():
        doc.fail(path, f"must be text like {example}, got {_shown(value)}")
    return value.strip()


def _integer(doc: _Document, path: str, value: Any, low: int, high: int | None) -> int:
    """A whole number in [low, high]; YAML booleans are not numbers here."""
    bounds = f"between {low} and {high}" if high is not None else f"{low} or more"
    if isinstance(value, bool) or not isinstance(value, int):
        doc.fail(path, f"must be a whole number {bounds}, got {_shown(value)}")
    if value < low or (high is not None and value > high):
        doc.fail(path, f"must be a whole number {bounds}, got {value}")
    return value


def _cron(doc: _Document, path: str, value: Any, example: str) -> str:
    """A quoted five-field cron expression (or an @daily-style macro) that fires."""
    expression = _text(doc, path, value, example)
    if not is_cron(expression):
        doc.fail(
            path,
            "must be a cron expression with five fields (minute hour day month weekday), "
            f"like {example}, got {expression!r}",
        )
    try:
        croniter(expression, _CRON_PROBE).get_next(datetime)
    except CroniterError:
        doc.fail(path, f'never fires ({expression!r}); pick a date that exists, like "0 2 * * *"')
    return expression


def is_cron(expression: str) -> bool:
    """True when ``expression`` is a five-field cron expression or an @hourly-style macro.

    Six- and seven-field forms (seconds, years) are refused: they are not what
    an operator writing cron expects, and croniter reads them its own way.
    """
    if expression.startswith("@"):
        return bool(croniter.is_valid(expression))
    return len(expression.split()) == 5 and bool(croniter.is_valid(expression))


def _schedule(doc: _Document, value: Any) -> str:
    if value is None:
        return DEFAULT_POLICY.schedule
    return _cron(doc, "schedule", value, f"schedule: {_CRON_EXAMPLE}")


def _each(path: str, entries: list[Any], read: Callable[[str, Any], T]) -> dict[int, T]:
    """Every entry of a list read on its own, by index: a mistake in one does not hide those in the next.

    Entries with a mistake are left out (it was noted; parse_policy raises at the end).
    """
    read_entries: dict[int, T] = {}
    for index, entry in enumerate(entries):
        try:
            read_entries[index] = read(f"{path}[{index}]", entry)
        except _Mistake:
            continue
    return read_entries


def _accept_unverified(doc: _Document, value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    entries = _list(doc, "accept_unverified", value, '"Restart app"')
    names = _each("accept_unverified", entries, lambda path, entry: _text(doc, path, entry, '"Restart app"'))
    return frozenset(names.values())


def _remediation(doc: _Document, value: Any) -> tuple[RemediationRule, ...]:
    if value is None:
        return ()
    entries = _list(doc, "remediation", value, "{group: web, mode: auto}")
    rules = _each("remediation", entries, lambda path, entry: _rule(doc, path, entry))
    _reject_repeated_groups(doc, rules)
    return tuple(rules.values())


def _rule(doc: _Document, path: str, value: Any) -> RemediationRule:
    entry = _mapping(doc, path, value, _RULE_KEYS)
    group = _checked(lambda: _text(doc, f"{path}.group", entry.get("group"), "group: web"), None)
    mode = _checked(lambda: _mode(doc, f"{path}.mode", entry.get("mode")), None)
    if group is None or mode is None:
        raise _Mistake(path)  # noted already; a rule without its group or mode is no rule
    return RemediationRule(group=group, mode=mode)


def _mode(doc: _Document, path: str, value: Any) -> str:
    if value not in MODES:
        doc.fail(path, f"must be one of {', '.join(MODES)}, got {_shown(value)}")
    return str(value)


def _reject_repeated_groups(doc: _Document, rules: Mapping[int, RemediationRule]) -> None:
    # First match wins, so a second rule for the same group could never apply.
    first: dict[str, int] = {}
    for index, rule in rules.items():
        if rule.group in first:
            doc.note(
                f"remediation[{index}].group",
                f"repeats group {rule.group!r} of remediation[{first[rule.group]}] "
                "and would never apply; keep one rule per group",
            )
            continue
        first[rule.group] = index


def _rollout(doc: _Document, value: Any) -> Rollout:
    if value is None:
        return Rollout()
    entry = _mapping(doc, "rollout", value, _ROLLOUT_KEYS)
    default = Rollout()
    return Rollout(
        canary=_optional_integer(doc, "rollout.canary", entry.get("canary"), default.canary, 0, None),
        batch=_checked(lambda: _batch(doc, "rollout.batch", entry.get("batch")), default.batch),
        max_fail_percentage=_optional_integer(
            doc, "rollout.max_fail_percentage", entry.get("max_fail_percentage"), default.max_fail_percentage, 0, 100
        ),
    )


def _optional_integer(doc: _Document, path: str, value: Any, default: int, low: int, high: int | None) -> int:
    """The number at ``path``, or ``default`` when it is absent (or wrong: noted, and checking goes on)."""
    if value is None:
        return default
    return _checked(lambda: _integer(doc, path, value, low, high), default)


def _batch(doc: _Document, path: str, value: Any) -> str:
    """A positive host count or a percent in (0, 100], kept as text as written."""
    if value is None:
        return Rollout().batch
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    percent = _PERCENT.fullmatch(text)
    if percent and 0 < int(percent.group(1)) <= 100:
        return text
    if not percent and text.isdigit() and int(text) > 0:
        return text
    doc.fail(path, f"must be a number of hosts like 5 or a percent like 25% (1% to 100%), got {_shown(value)}")


def _inventory_change(doc: _Document, top: Mapping[str, Any]) -> str | None:
    """A host count or percent kept as written; ``off`` (YAML reads it as false) or null turns the guard off.

    Unlike other keys, an explicit null is not "absent": it disables, so the default applies only
    when the key is not written at all.
    """
    if "max_inventory_change" not in top:
        return Policy().max_inventory_change
    value = top["max_inventory_change"]
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if _PERCENT.fullmatch(text) or text.isdigit():
        return text
    doc.fail(
        "max_inventory_change", f"must be a number of hosts like 5, a percent like 25%, or off, got {_shown(value)}"
    )


def _retention(doc: _Document, value: Any) -> Retention:
    if value is None:
        return Retention()
    entry = _mapping(doc, "retention", value, _RETENTION_KEYS)
    default = Retention()
    return Retention(
        days=_optional_integer(doc, "retention.days", entry.get("days"), default.days, 1, None),
        keep_per_host=_optional_integer(
            doc, "retention.keep_per_host", entry.get("keep_per_host"), default.keep_per_host, 1, 1000
        ),
    )


def _notify(doc: _Document, value: Any) -> tuple[NotifyRule, ...]:
    if value is None:
        return ()
    entries = _list(doc, "notify", value, '{url: "slack://T000/B000/XXXX", on: [drift]}')
    return tuple(_each("notify", entries, lambda path, entry: _notify_rule(doc, path, entry)).values())


def _notify_rule(doc: _Document, path: str, value: Any) -> NotifyRule:
    if isinstance(value, Mapping):  # YAML 1.1 reads a bare `on:` key as the boolean true
        value = {("on" if key is True else key): item for key, item in value.items()}
    entry = _mapping(doc, path, value, _NOTIFY_KEYS)
    url = _checked(lambda: _notify_url(doc, f"{path}.url", entry.get("url")), None)
    on = _checked(lambda: _notify_events(doc, f"{path}.on", entry.get("on")), None)
    if url is None or on is None:
        raise _Mistake(path)  # noted already
    return NotifyRule(url, on)


def _notify_url(doc: _Document, path: str, value: Any) -> str:
    url = _text(doc, path, value, 'url: "json://example.org/hook"')
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://\S", url):
        # The URL itself is not repeated: it may hold a token.
        doc.fail(path, 'must be an apprise URL like "slack://T000/B000/XXXX" or "json://host/path"')
    return url


def _notify_events(doc: _Document, path: str, value: Any) -> frozenset[str]:
    """The events a target hears; all of them when ``on:`` is left out."""
    if value is None:
        return frozenset(NOTIFY_EVENTS)
    names = _list(doc, path, value, "[drift, failed]")
    if not names:
        doc.fail(path, f"lists no event; leave it out for all of {', '.join(NOTIFY_EVENTS)}")
    unknown = [i for i, name in enumerate(names) if name not in NOTIFY_EVENTS]
    for i in unknown:
        doc.note(f"{path}[{i}]", f"must be one of {', '.join(NOTIFY_EVENTS)}, got {_shown(names[i])}")
    if unknown:
        raise _Mistake(path)  # noted already
    return frozenset(names)


def _windows(doc: _Document, value: Any) -> tuple[Window, ...]:
    if value is None:
        return ()
    entries = _list(doc, "windows", value, '{allow: "0 2 * * *", duration: 2h}')
    return tuple(_each("windows", entries, lambda path, entry: _window(doc, path, entry)).values())


def _window(doc: _Document, path: str, value: Any) -> Window:
    entry = _mapping(doc, path, value, _WINDOW_KEYS)
    allow = _checked(lambda: _cron(doc, f"{path}.allow", entry.get("allow"), 'allow: "0 2 * * *"'), None)
    duration = _checked(lambda: _window_duration(doc, f"{path}.duration", entry.get("duration")), None)
    if allow is None or duration is None:
        raise _Mistake(path)  # noted already
    return Window(allow=allow, duration=duration)


def _window_duration(doc: _Document, path: str, value: Any) -> timedelta:
    raw = _text(doc, path, value, "duration: 2h")
    try:
        return parse_duration(raw)
    except ValueError:
        doc.fail(path, f"must be a positive duration like 2h, 30m, 90s, 1h30m or 1d, got {raw!r}")


def parse_duration(text: str) -> timedelta:
    """Parse "1d", "2h", "30m", "90s" or combinations in that order ("1h30m").

    Raises ValueError for anything else, including a zero duration.
    """
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration like 2h, 30m, 90s or 1h30m: {text!r}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if duration <= timedelta(0):
        raise ValueError(f"a duration must be longer than zero: {text!r}")
    return duration


# --- remediation -----------------------------------------------------------


def mode_for(policy: Policy, groups: Iterable[str]) -> str:
    """The remediation mode of a host in ``groups``.

    The first rule in fleet.yml order whose group the host is in wins; a rule
    for group "all" matches every host; no match means "report".
    """
    member_of = set(groups)
    for rule in policy.remediation:
        if rule.group == MATCH_ALL or rule.group in member_of:
            return rule.mode
    return "report"


# --- time: windows and schedules -------------------------------------------


def _utc(moment: datetime) -> datetime:
    """Aware UTC; naive datetimes are taken to be UTC already."""
    return aware(moment).astimezone(UTC)


def _last_fire(expression: str, now: datetime) -> datetime:
    """The latest cron time at or before ``now`` (croniter's get_prev alone is strictly before)."""
    previous: datetime = croniter(expression, now).get_prev(datetime)
    following: datetime = croniter(expression, previous).get_next(datetime)
    return following if following <= now else previous


def _next_fire(expression: str, after: datetime) -> datetime:
    """The first cron time strictly after ``after``."""
    following: datetime = croniter(expression, after).get_next(datetime)
    return following


def window_open(policy: Policy, now: datetime) -> bool:
    """True when auto converge may run at ``now``.

    With no windows that is always. Otherwise some window must have started at
    or before ``now`` (its latest cron start) and not yet ended: start <= now <
    start + duration. Windows may run past midnight.
    """
    if not policy.windows:
        return True
    now = _utc(now)
    return any(_inside(window, now) for window in policy.windows)


def _inside(window: Window, now: datetime) -> bool:
    start = _last_fire(window.allow, now)
    return start <= now < start + window.duration


def next_window_start(policy: Policy, now: datetime) -> datetime | None:
    """When the next window opens, strictly after ``now``; None when there are no windows."""
    if not policy.windows:
        return None
    now = _utc(now)
    return min(_next_fire(window.allow, now) for window in policy.windows)


def next_scheduled_check(policy: Policy, after: datetime) -> datetime:
    """The next time of ``policy.schedule`` strictly after ``after``."""
    return _next_fire(policy.schedule, _utc(after))


def seconds_until_next_check(policy: Policy, now: datetime) -> int:
    """Whole seconds from ``now`` to the next scheduled check (how long idle SSH masters must live)."""
    now = _utc(now)
    return math.ceil((next_scheduled_check(policy, now) - now).total_seconds())


def check_due(policy: Policy, last_scheduled: datetime | None, now: datetime) -> bool:
    """True when a scheduled drift check should start at ``now``.

    Due when no scheduled check ever ran, or when the first schedule time after
    the last one has come. Slots missed while the controller was down add up to
    one check, not a burst: the caller records ``now`` as the new last_scheduled.
    """
    if last_scheduled is None:
        return True
    return next_scheduled_check(policy, last_scheduled) <= _utc(now)


# --- rollout ---------------------------------------------------------------


def batch_size(rollout: Rollout, host_count: int) -> int:
    """Hosts per batch: a number as written, or a percent of ``host_count`` rounded up; at least 1."""
    if rollout.batch.endswith("%"):
        size = math.ceil(int(rollout.batch[:-1]) * host_count / 100)
    else:
        size = int(rollout.batch)
    return max(1, size)


def rollout_batches(rollout: Rollout, hosts: Sequence[str]) -> list[list[str]]:
    """Split ``hosts`` into the batches of a rollout, in order.

    Batch 0 holds the first ``canary`` hosts alone (left out when canary is 0);
    the rest follow in batches of batch_size over all the hosts. Order is kept,
    a host named twice is rolled out once, and no hosts means no batches.
    """
    unique = list(dict.fromkeys(hosts))
    canary, rest = unique[: rollout.canary], unique[rollout.canary :]
    size = batch_size(rollout, len(unique))
    batches = [canary] if canary else []
    batches.extend(rest[i : i + size] for i in range(0, len(rest), size))
    return batches


def inventory_change_exceeds(limit: str | None, previous: int, changed: int) -> bool:
    """True when ``changed`` hosts (added + removed) is more than ``limit`` allows.

    ``limit`` is max_inventory_change as written: a host count ("5"), a percent of
    the ``previous`` host count ("25%"), or None (off: nothing exceeds). From an
    empty inventory any change exceeds a percent.
    """
    if limit is None:
        return False
    if limit.endswith("%"):
        # Integers on both sides, as in should_stop: 25% of 4 hosts is exactly 1 host.
        return changed * 100 > int(limit[:-1]) * previous
    return changed > int(limit)


def should_stop(rollout: Rollout, attempted: int, failed: int) -> bool:
    """True when more than max_fail_percentage of the ``attempted`` hosts ``failed``.

    Callers check after every batch, the canary batch included, with the
    running totals. That is how a failed canary stops the rollout: with canary
    1 and max_fail_percentage below 100, 1 failed of 1 attempted is 100%.
    (With max_fail_percentage 100 nothing ever stops, by the operator's choice.)
    """
    if attempted <= 0:
        return False
    # Integers on both sides, so 20% of 5 hosts is exactly 1 host, with no float rounding.
    return failed * 100 > rollout.max_fail_percentage * attempted
