"""How things look: status words and symbols, diff lines, times, the drift chart.

Pure functions of their arguments (no store, no request), registered as Jinja
filters and globals by `fleet.web.ui.init_app`. Nothing here marks text as safe:
templates print every value through Jinja's autoescaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from fleet.shapes import is_drift
from fleet.vocabulary import Coverage, TaskStatus, aware, utcnow
from fleet.vocabulary import iso as iso_or_none

# status -> (symbol, tone). The word is always printed beside the symbol, so colour is never the only signal.
STATUS_LOOK: dict[str, tuple[str, str]] = {
    # hosts
    "in_sync": ("✓", "good"),
    "drifted": ("≠", "warn"),
    "failed": ("✗", "bad"),
    "unreachable": ("⚠", "alert"),
    "unverified": ("◐", "unsure"),
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
    # workers (online, lost, stopped) and the shards they run (pending, running, interrupted, canceled above)
    "online": ("●", "good"),
    "lost": ("↯", "alert"),
    "stopped": ("■", "muted"),
    "sent": ("→", "info"),
    "done": ("✓", "good"),
    "refused": ("⊘", "bad"),
}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ERROR_LOCATION = re.compile(r"in (?P<file>\S+?), line (?P<line>\d+)(?:, column (?P<column>\d+))?")
# fleet.yml's own mistakes start their lines: "fleet.yml line 3: ..." (one a line, several at once) and
# "fleet.yml is not valid YAML at line 3, column 2: ..." (fleet.policy words them so).
POLICY_LOCATION = re.compile(
    r"^(?P<file>\S+?)(?: is not valid YAML at)? line (?P<line>\d+)(?:, column (?P<column>\d+))?:", re.MULTILINE
)


def status_symbol(status: str) -> str:
    return STATUS_LOOK.get(status, ("•", "muted"))[0]


def status_tone(status: str) -> str:
    return STATUS_LOOK.get(status, ("•", "muted"))[1]


def status_word(status: str) -> str:
    return (status or "unknown").replace("_", " ")


HOST_STATUS_MEANING = {
    "in_sync": "every task that could change the host was evaluated and none would",
    "drifted": "a task would change the host: it differs from git",
    "unverified": "no drift found, but some tasks could not be checked in check mode",
    "failed": "a task failed, or the host's SSH key changed",
    "unreachable": "fleet could not connect to the host",
    "incomplete": "the run stopped before the host was fully evaluated",
    "unknown": "never checked",
}


def coverage(row) -> Coverage:
    """A host's coverage in one run (a run-host row) or at its last check (a host)."""
    if hasattr(row, "total_tasks"):
        return Coverage(row.verified_tasks or 0, row.total_tasks or 0)
    return Coverage.of(row.verified, row.unverified)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def host_status_title(host) -> str:
    """What a host's status claims, in plain words (a tooltip beside the status word)."""
    unchecked = Coverage(host.verified_tasks or 0, host.total_tasks or 0).unchecked
    if host.status == "unverified":
        return f"no drift found, but {plural(unchecked, 'task')} could not be checked"
    if host.status == "in_sync" and unchecked:
        return (
            f"no drift: every task that could change it was evaluated and none would, "
            f"but for {plural(unchecked, 'unverified task')} that fleet.yml accepts"
        )
    if host.status == "in_sync":
        return "every task that could change it was evaluated and none would"
    if host.status == "drifted":
        return f"{plural(host.drifted_tasks or 0, 'task')} would change it"
    return first_line(host.message) or HOST_STATUS_MEANING.get(host.status, "")


# A drifted task's cause: (tone, what it means). The word itself is printed too.
CAUSES: dict[str, tuple[str, str]] = {
    "commit": ("info", "a commit changed this task since the host's last converge"),
    "local": ("alert", "the host changed since it was converged at this revision"),
    "new": ("muted", "never converged by fleet"),
}
FLAPPING = "flapping — not idempotent, not auto-converged"
FLAPPING_TITLE = (
    "it reported a change in the check right after a converge of the same revision: "
    "the task is not idempotent; fleet does not auto-converge a host whose only drift is this"
)


def cause_explanation(cause: str | None) -> str:
    return CAUSES.get(cause or "", ("", ""))[1]


def cause_tone(cause: str | None) -> str:
    return CAUSES.get(cause or "", ("muted", ""))[0]


@dataclass(frozen=True)
class Mark:
    """A small labelled badge beside a task: what kind of result it is, beyond its status."""

    word: str
    tone: str
    title: str


def task_marks(task) -> list[Mark]:
    """Unverified (and accepted), ran for real, rescued, drift cause, flapping: in that order."""
    marks = []
    if task.unverified:
        marks.append(Mark("unverified", "unsure", task.reason or task.note or "check mode could not evaluate it"))
        if task.accepted:
            marks.append(
                Mark(
                    "accepted by fleet.yml",
                    "good",
                    "listed under accept_unverified in fleet.yml: it does not keep the host from in sync",
                )
            )
    if task.executed:
        if task.status == TaskStatus.CHANGED:
            marks.append(
                Mark(
                    "ran for real: changed the host",
                    "alert",
                    "check_mode: false made the check run it for real; the check itself made this "
                    "change, so it is not drift",
                )
            )
        else:
            marks.append(Mark("ran for real", "info", "check_mode: false made the check run it for real"))
    if task.rescued:
        marks.append(Mark("rescued", "muted", "a block's rescue handled this failure: the host is not failed"))
    if is_drift(task) and task.cause in CAUSES:
        tone, meaning = CAUSES[task.cause]
        marks.append(Mark(f"cause: {task.cause}", tone, meaning))
    if is_drift(task) and task.flapping:
        marks.append(Mark(FLAPPING, "bad", FLAPPING_TITLE))
    return marks


def task_mark_json(task) -> list[dict]:
    return [{"word": m.word, "tone": m.tone, "title": m.title} for m in task_marks(task)]


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
        elif text.startswith(("\\", "[")):
            kind = "note"
        else:
            kind = "ctx"
        lines.append(DiffLine(kind, text))
    return lines


def utc(moment: datetime | None) -> str:
    moment = aware(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def iso(moment: datetime | None) -> str:
    """ISO 8601 for a datetime attribute of a page; empty for never."""
    return iso_or_none(moment) or ""


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'just now', '4 min ago', '3 h ago', '2 d ago', or '—' for never."""
    moment = aware(moment)
    if moment is None:
        return "never"
    seconds = int(((now or utcnow()) - moment).total_seconds())
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
    seconds = ((end or now or utcnow()) - start).total_seconds()
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


def message_body(text: str | None) -> str:
    """A commit message without its subject (first_line): the lines a short listing leaves out."""
    lines = (text or "").strip().splitlines()
    return "\n".join(lines[1:]).strip()


REVISION_TREE = re.compile(r"^.*/revisions/[0-9a-f]{7,64}/")


def source_path(path: str | None) -> str:
    """A task's file relative to the source ('playbooks/roles/x/tasks/main.yml:3'), not the exported tree."""
    return REVISION_TREE.sub("", path or "")


def error_locations(error: str | None) -> list[dict]:
    """The file/line places a validation error names, in its order: Ansible's ('in roles/x.yml, line 3,
    column 5') and fleet.yml's ('fleet.yml line 3: ...')."""
    found = sorted([*ERROR_LOCATION.finditer(error or ""), *POLICY_LOCATION.finditer(error or "")], key=re.Match.start)
    places = dict.fromkeys((m["file"], int(m["line"]), m["column"]) for m in found)  # two mistakes, one line: one place
    return [{"file": file, "line": line, "column": column} for file, line, column in places]


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
    unverified: int = 0  # stacked on top of the drifted part
    unverified_y: float = 0.0
    unverified_height: float = 0.0


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
    unverified: int = 0


def drift_timeline(runs, verdicts, statuses: dict[str, str]) -> list[DriftPoint]:
    """How many inventory hosts were drifted (and unverified) after each of `runs` (oldest first).

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
        unverified = sum(1 for status in state.values() if status == "unverified")
        points.append(DriftPoint(run, drifted, len(statuses), unverified))
    return points


def drift_chart(points: list[DriftPoint]) -> Chart:
    """Bars of drifted hosts after each run (oldest left), unverified hosts stacked on top, scaled to the fleet."""
    plot_height = CHART_HEIGHT - CHART_BOTTOM - CHART_TOP
    baseline = CHART_HEIGHT - CHART_BOTTOM
    max_value = max([p.total for p in points] + [1])
    slot = (CHART_WIDTH - CHART_LEFT) / max(len(points), 1)
    width = max(min(slot * 0.7, 40), 2)
    bars = []
    for index, point in enumerate(points):
        run = point.run
        height = plot_height * point.drifted / max_value
        unverified_height = plot_height * point.unverified / max_value
        when = aware(run.finished_at or run.started_at or run.created_at)
        label = when.strftime("%m-%d %H:%M") if when else ""
        what = f"{run.kind} of {run.limit}" if run.limit else f"{run.kind} of every host"
        bars.append(
            Bar(
                x=round(CHART_LEFT + index * slot + (slot - width) / 2, 1),
                y=round(baseline - height, 1),
                width=round(width, 1),
                height=round(height, 1),
                drifted=point.drifted,
                total=point.total,
                label=label,
                run_id=run.id,
                unverified=point.unverified,
                unverified_y=round(baseline - height - unverified_height, 1),
                unverified_height=round(unverified_height, 1),
                title=f"after run {run.id} ({what}), {label} UTC: {point.drifted} of {point.total} hosts drifted"
                + (f", {point.unverified} unverified" if point.unverified else ""),
            )
        )
    ticks = sorted({0, max_value // 2, max_value})
    return Chart(
        bars,
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_TOP,
        baseline,
        max_value,
        [(round(baseline - plot_height * t / max_value, 1), t) for t in ticks],
    )
