"""How things look: status words and symbols, diff lines, times, the drift chart.

Pure functions of their arguments (no store, no request), registered as Jinja
filters and globals by `fleet.web.ui.init_app`. Nothing here marks text as safe:
templates print every value through Jinja's autoescaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

# status -> (symbol, tone). The word is always printed beside the symbol, so colour is never the only signal.
STATUS_LOOK: dict[str, tuple[str, str]] = {
    # hosts
    "in_sync": ("✓", "good"),
    "drifted": ("≠", "warn"),
    "failed": ("✗", "bad"),
    "unreachable": ("⚠", "alert"),
    "unknown": ("?", "muted"),
    "incomplete": ("◌", "muted"),
    # runs
    "queued": ("…", "info"),
    "running": ("▶", "info"),
    "successful": ("✓", "good"),
    "canceled": ("⊘", "muted"),
    "interrupted": ("↯", "alert"),
    "timeout": ("⌛", "bad"),
    # tasks
    "ok": ("✓", "good"),
    "changed": ("±", "warn"),
    "skipped": ("–", "muted"),
    # revisions
    "valid": ("✓", "good"),
    "rejected": ("✗", "bad"),
    # approvals
    "pending": ("…", "warn"),
    "approved": ("✓", "info"),
    "applied": ("✓", "good"),
    "superseded": ("↷", "muted"),
}
HOST_STATUSES = ("in_sync", "drifted", "failed", "unreachable", "unknown")
RUN_STATUSES = ("queued", "running", "successful", "failed", "canceled", "interrupted", "timeout")
RUN_KINDS = ("check", "converge")
RUN_TRIGGERS = ("schedule", "commit", "manual", "webhook", "policy")
ACTIVE = ("queued", "running")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ERROR_LOCATION = re.compile(r"in (?P<file>\S+?), line (?P<line>\d+)(?:, column (?P<column>\d+))?")


def status_symbol(status: str) -> str:
    return STATUS_LOOK.get(status, ("•", "muted"))[0]


def status_tone(status: str) -> str:
    return STATUS_LOOK.get(status, ("•", "muted"))[1]


def status_word(status: str) -> str:
    return (status or "unknown").replace("_", " ")


@dataclass(frozen=True)
class DiffLine:
    kind: str  # head | hunk | add | del | ctx | note
    text: str


def diff_lines(diff: str) -> list[DiffLine]:
    """Classify each line of a unified diff for colouring; the text itself stays as it was."""
    lines = []
    for text in (diff or "").splitlines():
        if text.startswith(("+++", "---")):
            kind = "head"
        elif text.startswith("@@"):
            kind = "hunk"
        elif text.startswith("+"):
            kind = "add"
        elif text.startswith("-"):
            kind = "del"
        elif text.startswith("\\") or text.startswith("["):
            kind = "note"
        else:
            kind = "ctx"
        lines.append(DiffLine(kind, text))
    return lines


def aware(moment: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; every one fleet writes is UTC.
    return moment.replace(tzinfo=timezone.utc) if moment and moment.tzinfo is None else moment


def utc(moment: datetime | None) -> str:
    moment = aware(moment)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def iso(moment: datetime | None) -> str:
    moment = aware(moment)
    return moment.isoformat() if moment else ""


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'just now', '4 min ago', '3 h ago', '2 d ago', or '—' for never."""
    moment = aware(moment)
    if moment is None:
        return "never"
    seconds = int(((now or datetime.now(timezone.utc)) - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now" if seconds < 10 else f"{seconds} s ago"


def took(start: datetime | None, end: datetime | None, now: datetime | None = None) -> str:
    start, end = aware(start), aware(end)
    if start is None:
        return "—"
    seconds = ((end or now or datetime.now(timezone.utc)) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def short_sha(sha: str | None) -> str:
    return (sha or "")[:12] or "—"


def plain_output(text: str) -> str:
    """Ansible output without terminal colour codes."""
    return ANSI.sub("", text or "")


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


REVISION_TREE = re.compile(r"^.*/revisions/[0-9a-f]{7,64}/")


def source_path(path: str | None) -> str:
    """A task's file relative to the source ('playbooks/roles/x/tasks/main.yml:3'), not the exported tree."""
    return REVISION_TREE.sub("", path or "")


def error_locations(error: str | None) -> list[dict]:
    """The file/line places a validation error names ('in roles/x.yml, line 3, column 5')."""
    return [{"file": m["file"], "line": int(m["line"]), "column": m["column"]}
            for m in ERROR_LOCATION.finditer(error or "")]


# --- the drift chart: geometry computed here, drawn as inline SVG by the template -------------

CHART_WIDTH, CHART_HEIGHT = 480, 160
CHART_LEFT, CHART_BOTTOM, CHART_TOP = 28, 24, 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    drifted: int
    total: int
    label: str
    title: str
    run_id: int


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    width: int
    height: int
    top: int
    baseline: float
    max_value: int
    ticks: list[tuple[float, int]]


@dataclass(frozen=True)
class DriftPoint:
    run: object  # the Run after which the fleet stood like this
    drifted: int
    total: int


def drift_timeline(runs, verdicts, statuses: dict[str, str]) -> list[DriftPoint]:
    """How many inventory hosts were drifted after each of `runs` (oldest first).

    Replays each run's verdicts the way the store applies them to hosts (an
    `incomplete` verdict changes nothing). A host no run in the window touched
    kept its current status throughout; a touched host counts from its first
    verdict in the window on.
    """
    by_run: dict[int, list[tuple[str, str]]] = {}
    for run_id, host, status in verdicts:
        if host in statuses and status != "incomplete":
            by_run.setdefault(run_id, []).append((host, status))
    touched = {host for pairs in by_run.values() for host, _ in pairs}
    state = {host: status for host, status in statuses.items() if host not in touched}
    points = []
    for run in runs:
        state.update(by_run.get(run.id, []))
        drifted = sum(1 for status in state.values() if status == "drifted")
        points.append(DriftPoint(run, drifted, len(statuses)))
    return points


def drift_chart(points: list[DriftPoint]) -> Chart:
    """Bars of drifted hosts after each run (oldest left), scaled to the fleet's size."""
    plot_height = CHART_HEIGHT - CHART_BOTTOM - CHART_TOP
    baseline = CHART_HEIGHT - CHART_BOTTOM
    max_value = max([p.total for p in points] + [1])
    slot = (CHART_WIDTH - CHART_LEFT) / max(len(points), 1)
    width = max(min(slot * 0.7, 40), 2)
    bars = []
    for index, point in enumerate(points):
        run = point.run
        height = plot_height * point.drifted / max_value
        when = aware(run.finished_at or run.started_at or run.created_at)
        label = when.strftime("%m-%d %H:%M") if when else ""
        what = f"{run.kind} of {run.limit}" if run.limit else f"{run.kind} of every host"
        bars.append(Bar(
            x=round(CHART_LEFT + index * slot + (slot - width) / 2, 1), y=round(baseline - height, 1),
            width=round(width, 1), height=round(height, 1), drifted=point.drifted, total=point.total,
            label=label, run_id=run.id,
            title=f"after run {run.id} ({what}), {label} UTC: {point.drifted} of {point.total} hosts drifted"))
    ticks = sorted({0, max_value // 2, max_value})
    return Chart(bars, CHART_WIDTH, CHART_HEIGHT, CHART_TOP, baseline, max_value,
                 [(round(baseline - plot_height * t / max_value, 1), t) for t in ticks])
