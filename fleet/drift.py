"""ansible-runner events -> per-task results and per-host drift verdicts.

Pure: no I/O, no Ansible import. The runner feeds events in the order they
arrive; `DriftTracker` keeps just enough to answer, at any point, what each
host's verdict is so far.

A task that reports `changed` in check mode is drift. A task Ansible could
not evaluate in check mode (a command that "would have run", a module
without check-mode support, a task skipped by `when: not ansible_check_mode`,
a failure that was ignored) is *unverified*: counted apart, never as in sync.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field

TASK_EVENTS = {
    "runner_on_ok",
    "runner_on_failed",
    "runner_on_skipped",
    "runner_on_unreachable",
}
FACT_ACTIONS = {"gather_facts", "setup", "ansible.builtin.gather_facts", "ansible.builtin.setup", "ansible.legacy.setup"}
CHECK_MODE_SKIP_MARKERS = (
    "would have run if not in check mode",
    "does not support check mode",
    "check mode not supported",
)
CONTAINER_TYPES = {"docker", "podman", "lxc", "container", "containerd", "systemd-nspawn", "openvz", "wsl", "jail", "zone"}
MAX_DIFF_CHARS = 200_000  # one task's diff; beyond this it is cut, with a note saying so


@dataclass
class TaskResult:
    """One task on one host."""

    seq: int
    host: str
    task: str
    action: str
    status: str  # ok | changed | failed | skipped | unreachable
    unverified: bool = False
    note: str = ""
    diff: str = ""
    duration: float = 0.0
    path: str = ""
    handler: bool = False
    ignored: bool = False  # a failure under ignore_errors


@dataclass
class HostVerdict:
    """What one run found for one host."""

    name: str
    status: str  # in_sync | drifted | unreachable | failed
    message: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    unverified: int = 0
    facts: dict = field(default_factory=dict)

    @property
    def verified(self) -> int:
        """Tasks whose state Ansible actually evaluated."""
        return self.ok + self.changed + self.failed

    @property
    def coverage_total(self) -> int:
        return self.verified + self.unverified


class DriftTracker:
    """Accumulates events of one run into task results and host verdicts."""

    def __init__(self, check_mode: bool):
        self.check_mode = check_mode
        self.hosts: dict[str, HostVerdict] = {}
        self._handler_tasks: set[str] = set()
        self.finished = False  # the play recap arrived: Ansible got to the end

    def add(self, event: dict) -> TaskResult | None:
        """Take one event; return the task result it completes, if any."""
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_handler_task_start":
            self._handler_tasks.add(data.get("task_uuid", ""))
        if kind == "playbook_on_stats":
            self.finished = True
        if kind not in TASK_EVENTS or not data.get("host"):
            return None
        result = task_result_from_event(event, self.check_mode)
        result.handler = data.get("task_uuid") in self._handler_tasks
        self._tally(result, data)
        return result

    def verdicts(self) -> list[HostVerdict]:
        return [self.hosts[name] for name in sorted(self.hosts)]

    def note_host(self, name: str, status: str, message: str) -> HostVerdict:
        """Record a host that never reached Ansible (pre-flight unreachable or blocked)."""
        # No task counts: nothing ran, so nothing was verified.
        verdict = HostVerdict(name=name, status=status, message=message)
        self.hosts[name] = verdict
        return verdict

    def _tally(self, result: TaskResult, data: dict) -> None:
        verdict = self.hosts.setdefault(result.host, HostVerdict(result.host, "in_sync"))
        if not result.ignored:  # Ansible itself does not count an ignored failure against the host
            setattr(verdict, result.status, getattr(verdict, result.status) + 1)
        if result.unverified:
            verdict.unverified += 1
        if result.action in FACT_ACTIONS and result.status in ("ok", "changed"):
            verdict.facts = extract_facts((data.get("res") or {}).get("ansible_facts") or {})
        if result.status == "unreachable" or (result.status == "failed" and not result.ignored and not verdict.message):
            verdict.message = f"{result.task}: {result.note}" if result.note else result.task
        verdict.status = host_status(verdict, self.check_mode)


def settle_incomplete(verdicts: list[HostVerdict]) -> list[HostVerdict]:
    """For a run that did not reach its end, `in_sync` is unproven: call it `incomplete`.

    Drift, failures and unreachable hosts found before the stop are real findings and stay.
    """
    for verdict in verdicts:
        if verdict.status == "in_sync":
            verdict.status = "incomplete"
            if not verdict.message:
                verdict.message = "the run stopped before this host was fully evaluated"
    return verdicts


def host_status(verdict: HostVerdict, check_mode: bool) -> str:
    """Unreachable beats failed beats drifted beats in sync."""
    if verdict.unreachable:
        return "unreachable"
    if verdict.failed:
        return "failed"
    if verdict.changed and check_mode:
        return "drifted"
    return "in_sync"


def task_result_from_event(event: dict, check_mode: bool) -> TaskResult:
    """The TaskResult a runner_on_* event describes."""
    data = event.get("event_data") or {}
    res = data.get("res") or {}
    status = _status(event["event"], res)
    ignored = status == "failed" and bool(data.get("ignore_errors"))
    unverified = check_mode and (ignored or (status == "skipped" and skipped_by_check_mode(res)))
    return TaskResult(
        seq=int(event.get("counter") or 0),
        host=data["host"],
        task=data.get("task") or data.get("task_action") or "",
        action=data.get("resolved_action") or data.get("task_action") or "",
        status=status,
        unverified=unverified,
        note=_note(res, status, ignored),
        diff=render_diff(res) if status in ("changed", "ok") else "",
        duration=float(data.get("duration") or 0.0),
        path=data.get("task_path") or "",
        ignored=ignored,
    )


def _status(kind: str, res: dict) -> str:
    if kind == "runner_on_unreachable":
        return "unreachable"
    if kind == "runner_on_failed":
        return "failed"
    if kind == "runner_on_skipped":
        return "skipped"
    return "changed" if res.get("changed") else "ok"


def skipped_by_check_mode(res: dict) -> bool:
    """Was this skip caused by check mode (rather than by an ordinary `when`)?"""
    msg = str(res.get("msg", "")).lower()
    if any(marker in msg for marker in CHECK_MODE_SKIP_MARKERS):
        return True
    if "ansible_check_mode" in str(res.get("false_condition", "")):
        return True
    items = res.get("results")
    return isinstance(items, list) and any(isinstance(i, dict) and skipped_by_check_mode(i) for i in items)


def _note(res: dict, status: str, ignored: bool) -> str:
    if res.get("censored"):
        return "output hidden (no_log)"
    msg = res.get("msg") or res.get("skip_reason") or ""
    if not isinstance(msg, str):
        msg = json.dumps(msg)
    if status == "failed" and res.get("stderr"):
        msg = f"{msg} {res['stderr']}".strip()
    if ignored:
        msg = f"failed (ignored): {msg}".strip()
    if res.get("false_condition"):
        msg = f"{msg} ({res['false_condition']})".strip()
    return msg[:2000]


def render_diff(res: dict) -> str:
    """Every diff a result carries, as one unified-diff text ('' when none)."""
    parts = [_render_one(diff, path) for diff, path in _diffs_of(res)]
    text = "".join(p for p in parts if p)
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + f"\n... diff cut at {MAX_DIFF_CHARS} characters\n"
    return text


def _diffs_of(res: dict) -> list[tuple[dict, str]]:
    """(diff, path on the host) pairs of a result and of its loop items."""
    diff = res.get("diff")
    diffs = [diff] if isinstance(diff, dict) else [d for d in diff or [] if isinstance(d, dict)]
    path = _target_path(res)
    found = [(d, path) for d in diffs]
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("changed"):
            found += _diffs_of(item)
    return found


def _target_path(res: dict) -> str:
    """The file a result is about; template's after_header is a controller temp file, so not that."""
    args = (res.get("invocation") or {}).get("module_args") or {}
    for source in (res, args):
        for key in ("dest", "path", "name"):
            if isinstance(source.get(key), str) and source[key].startswith("/"):
                return source[key]
    return ""


def _render_one(diff: dict, path: str) -> str:
    if diff.get("prepared"):
        return _ensure_newline(str(diff["prepared"]))
    before, after = diff.get("before"), diff.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        before, after = _mapping_lines(before or {}), _mapping_lines(after or {})
    if before is None and after is None:
        return ""
    before_lines = _ensure_newline(str(before or "")).splitlines(keepends=True)
    after_lines = _ensure_newline(str(after or "")).splitlines(keepends=True)
    target = path or str(diff.get("before_header") or diff.get("after_header") or "")
    return "".join(difflib.unified_diff(
        before_lines, after_lines,
        fromfile=f"before: {target}".strip() if target else "before",
        tofile=f"after: {target}".strip() if target else "after",
    ))


def _mapping_lines(mapping: dict) -> str:
    return "".join(f"{key}: {json.dumps(mapping[key])}\n" for key in sorted(mapping))


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def extract_facts(facts: dict) -> dict:
    """The few facts worth showing about a host: OS and how it is virtualized."""
    if not facts:
        return {}
    distribution = " ".join(
        str(facts.get(k, "")) for k in ("ansible_distribution", "ansible_distribution_version")
    ).strip()
    return {
        "os": distribution or str(facts.get("ansible_system", "")),
        "kernel": str(facts.get("ansible_kernel", "")),
        "virtualization": virtualization_kind(
            str(facts.get("ansible_virtualization_type", "")),
            str(facts.get("ansible_virtualization_role", "")),
        ),
        "virtualization_type": str(facts.get("ansible_virtualization_type", "")),
    }


def virtualization_kind(vtype: str, role: str) -> str:
    """VM, container or bare-metal, from Ansible's virtualization facts."""
    if role != "guest" or vtype in ("", "NA"):
        return "bare-metal"
    return "container" if vtype in CONTAINER_TYPES else "VM"
