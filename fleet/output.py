"""Terminal rendering: tables, status words with colour, diffs, progress."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from fleet.vocabulary import aware

if TYPE_CHECKING:
    from fleet.drift import DriftTracker

STATUS_COLOURS = {
    "in_sync": "32",
    "successful": "32",
    "ok": "32",
    "drifted": "33",
    "changed": "33",
    "unverified": "34",
    "incomplete": "90",
    "running": "36",
    "queued": "36",
    "unreachable": "35",
    "failed": "31",
    "rejected": "31",
    "timeout": "31",
    "canceled": "90",
    "interrupted": "90",
    "unknown": "90",
    "skipped": "90",
}


def use_colour(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def paint(word: str, colour: bool) -> str:
    code = STATUS_COLOURS.get(word)
    return f"\033[{code}m{word}\033[0m" if colour and code else word


def table(headers: list[str], rows: list[list[str]], colour: bool = False, status_column: int | None = None) -> str:
    """Left-aligned columns; the status column may be coloured (width counts the plain text)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(cell))) for w, cell in zip(widths, row, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for row in rows:
        cells = []
        for index, (cell, width) in enumerate(zip(row, widths, strict=False)):
            text = str(cell)
            padded = text.ljust(width)
            if index == status_column:
                padded = paint(text, colour) + " " * (width - len(text))
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def colour_diff(diff: str, colour: bool) -> str:
    if not colour:
        return diff
    out = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            out.append(f"\033[1m{line}\033[0m")
        elif line.startswith("+"):
            out.append(f"\033[32m{line}\033[0m")
        elif line.startswith("-"):
            out.append(f"\033[31m{line}\033[0m")
        elif line.startswith("@@"):
            out.append(f"\033[36m{line}\033[0m")
        else:
            out.append(line)
    return "\n".join(out) + ("\n" if diff.endswith("\n") else "")


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def when(moment: datetime | None) -> str:
    """A stored moment in the terminal's local time, or "never"."""
    moment = aware(moment)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "never"


def duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return "-"
    seconds = (aware(end) - aware(start)).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


class Progress:
    """One updating line on stderr while a run streams (only on a terminal)."""

    def __init__(self, kind: str, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = use_colour(self.stream)
        self.kind = kind
        self.tasks = 0
        self.current = ""

    def __call__(self, tracker: DriftTracker, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event.get("event") == "playbook_on_task_start":
            self.current = (event.get("event_data") or {}).get("task", "")
        if event.get("event", "").startswith("runner_on_") and event.get("event") != "runner_on_start":
            self.tasks += 1
        drifted = sum(1 for v in tracker.hosts.values() if v.status == "drifted")
        line = (
            f"{self.kind}: {len(tracker.hosts)} hosts answered, {self.tasks} task results, "
            f"{drifted} drifted so far — {self.current}"
        )
        self.stream.write("\r\033[K" + line[:150])
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def kept_process_line(kept: dict[str, Any], most_hosts: int = 8) -> str:
    """One kept Ansible process (fleet.warm.kept_processes) for `fleet status`: pid, age, memory, its hosts."""
    age = kept.get("age_seconds")
    parts = [f"pid {kept['pid']}", f"up {_span(age)}" if age is not None else "age unknown"]
    if kept.get("pss_kib") is not None:
        muxes = len(kept.get("multiplexers") or [])
        parts.append(f"{kept['pss_kib'] / 1024:.0f} MiB PSS" + (f" with {muxes} multiplexer(s)" if muxes else ""))
    elif kept.get("rss_kib") is not None:
        parts.append(f"{kept['rss_kib'] / 1024:.0f} MiB RSS")
    parts.append(f"{kept.get('runs', 0)} run(s)")
    hosts = list(kept.get("hosts") or [])
    if hosts:
        more = f" and {len(hosts) - most_hosts} more" if len(hosts) > most_hosts else ""
        parts.append("hosts " + " ".join(hosts[:most_hosts]) + more)
    return ", ".join(parts)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"
