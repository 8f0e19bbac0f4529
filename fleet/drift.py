"""ansible-runner events -> per-task results and per-host drift verdicts.

Pure: no I/O, no Ansible import. The runner feeds events in the order they
arrive; `DriftTracker` keeps just enough to answer, at any point, what each
host's verdict is so far.

The truth rule: a task that reports `changed` in check mode is drift; a host
is `in_sync` only when every task that could change it was evaluated and none
would. A task check mode could not evaluate is *unverified*, with the reason
(`fleet.evidence` reads it from the real result, inside ansible-playbook):
a skip no real `when` explains, a command that "would have run", loop items
not looked at, a suppressed failure, a skip whose condition read
a result an unverified task registered, the tasks a host never reached after
`meta: end_host` on such a result. Such a result taints what is derived from
it (set_fact, include_vars, vars, registers of tasks that read it): a task
skipped by a tainted condition or loop, or ok with tainted arguments or loop
items, is unverified too, its reason naming the chain. A host with no drift
but an unverified task is `unverified`, unless `accept_unverified` lists
every such task (accepting a probe does not accept what reads it).

Results are credited to the host they ran on (`delegate_to`); handlers are
part of the change that notified them; tasks that run for real in a check
(`check_mode: false`) are `executed`, not drift; tasks that change nothing
(`debug`, `assert`, `set_fact`, facts) stay out of the coverage.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from fleet.evidence import classify_result, short_action
from fleet.vocabulary import HostStatus, coverage_total

TASK_EVENTS = {
    "runner_on_ok",
    "runner_on_failed",
    "runner_on_skipped",
    "runner_on_unreachable",
}
FACT_ACTIONS = {"gather_facts", "setup"}
# Actions that read or decide but never change a host: not part of the coverage.
NON_STATE_ACTIONS = FACT_ACTIONS | {
    "debug",
    "assert",
    "set_fact",
    "meta",
    "include_vars",
    "add_host",
    "group_by",
    "fail",
    "pause",
    "set_stats",
    "ping",
    "wait_for_connection",
    "include_tasks",
    "import_tasks",
    "include_role",
    "import_role",
}
CONTAINER_TYPES = {
    "docker",
    "podman",
    "lxc",
    "container",
    "containerd",
    "systemd-nspawn",
    "openvz",
    "wsl",
    "jail",
    "zone",
}
MAX_DIFF_CHARS = 200_000  # one task's diff; beyond this it is cut, with a note saying so
CAUSES = ("commit", "local", "new")


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
    reason: str = ""  # why check mode could not evaluate it (unverified tasks)
    accepted: bool = False  # unverified, and listed under accept_unverified
    executed: bool = False  # ran for real during a check (check_mode: false)
    rescued: bool = False  # a failure that a block's rescue handled
    counted: bool = True  # part of the coverage (a task that could change the host)
    cause: str = ""  # drift only: commit | local | new
    flapping: bool = False  # drift right after a converge of the same revision: not idempotent
    reads: tuple[str, ...] = ()  # source files and role directories (ending in /) the task depends on

    @property
    def drift(self) -> bool:
        """Check mode says a converge would change the host here."""
        return is_drift(self)


class _Judged(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def executed(self) -> bool: ...


def is_drift(task: _Judged) -> bool:
    """A changed task, unless it ran for real during a check (then the check itself made the change).

    Takes a TaskResult or anything with its `status` and `executed` (store views, rows).
    """
    return task.status == "changed" and not task.executed


@dataclass
class HostVerdict:
    """What one run found for one host."""

    name: str
    status: str  # in_sync | drifted | unverified | unreachable | failed | incomplete
    message: str = ""
    ok: int = 0
    changed: int = 0  # drifted tasks in a check, changed tasks in a converge
    failed: int = 0  # failures that count: not ignored, not rescued
    skipped: int = 0
    unreachable: int = 0
    unverified: int = 0
    accepted: int = 0  # unverified tasks that accept_unverified lists
    verified: int = 0  # counted tasks Ansible really evaluated
    executed: int = 0  # tasks that ran for real during a check
    facts: dict[str, Any] = field(default_factory=dict)
    flapping: set[str] = field(default_factory=set)  # task keys known not to be idempotent after this run

    @property
    def coverage_total(self) -> int:
        return coverage_total(self.verified, self.unverified)


@dataclass(frozen=True)
class HostHistory:
    """What the store knew about a host before this check: for drift causes and flapping."""

    last_converge_sha: str | None = None
    checked_since_converge: bool = True  # False: this is the check that directly follows a converge
    flapping: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CheckContext:
    """Everything outside the event stream a verdict depends on, read before the run starts."""

    revision: str = ""
    hosts: frozenset[str] = frozenset()  # the run's hosts: delegated results are credited among them
    accept_unverified: frozenset[str] = frozenset()
    history: dict[str, HostHistory] = field(default_factory=dict)  # host -> HostHistory
    # last converged sha -> repository paths changed from it to `revision` (None: unknown)
    changed_paths: dict[str, frozenset[str] | None] = field(default_factory=dict)
    project_dir: str = ""  # where the revision was exported: task paths are shown relative to it

    def relative(self, path: str) -> str:
        return path.removeprefix(self.project_dir) if self.project_dir else path

    def accepts(self, task: str) -> bool:
        """Is this unverified task listed under accept_unverified (by its name, with or without its role)?"""
        return task in self.accept_unverified or task.split(" : ", 1)[-1] in self.accept_unverified


@dataclass
class _HostState:
    # Variables whose value check mode could not give, each with the chain that says why: a result an
    # unverified task registered, and what set_fact, include_vars or a register derived from it.
    tainted: dict[str, str] = field(default_factory=dict)


class DriftTracker:
    """Accumulates events of one run into task results and host verdicts."""

    def __init__(self, check_mode: bool, context: CheckContext | None = None):
        self.check_mode = check_mode
        self.context = context or CheckContext()
        self.hosts: dict[str, HostVerdict] = {}
        self._states: dict[str, _HostState] = {}
        self._handler_tasks: set[str] = set()
        self._play_hosts: set[str] = set()
        self.finished = False  # the play recap arrived: Ansible got to the end

    def add(self, event: dict[str, Any]) -> TaskResult | None:
        """Take one event; return the task result it completes, if any (see add_all for several)."""
        results = self.add_all(event)
        return results[0] if results else None

    def add_all(self, event: dict[str, Any]) -> list[TaskResult]:
        """Take one event; return every task result it completes (a stopped host adds the ones it never reached)."""
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_handler_task_start":
            self._handler_tasks.add(data.get("task_uuid", ""))
        if kind == "playbook_on_play_start":
            self._play_hosts = set()
        if kind == "playbook_on_stats":
            self._settle_recap(data)
        if kind not in TASK_EVENTS or not data.get("host"):
            return []
        handler = data.get("task_uuid") in self._handler_tasks or bool((data.get("fleet") or {}).get("handler"))
        result = task_result_from_event(event, self.check_mode, handler=handler)
        result.path = self.context.relative(result.path)
        result.reads = self._reads(data.get("fleet") or {})
        self._credit_delegation(result, data)
        self._play_hosts.add(result.host)
        results = [result] + self._never_reached(result, data)
        for item in results:
            self._judge(item, data if item is result else {})
        return results

    def verdicts(self) -> list[HostVerdict]:
        return [self.hosts[name] for name in sorted(self.hosts)]

    def note_host(self, name: str, status: str, message: str) -> HostVerdict:
        """Record a host that never reached Ansible (pre-flight unreachable or blocked)."""
        # No task counts: nothing ran, so nothing was verified.
        verdict = HostVerdict(name=name, status=status, message=message)
        self.hosts[name] = verdict
        return verdict

    def _credit_delegation(self, result: TaskResult, data: dict[str, Any]) -> None:
        """A task delegated to another host of this run changed that host, not the one it was run for."""
        target = (data.get("fleet") or {}).get("delegated_host") or ""
        if target and target != result.host and target in self.context.hosts:
            result.note = f"{result.note} (delegated from {result.host})".strip()
            result.host = target

    def _never_reached(self, result: TaskResult, data: dict[str, Any]) -> list[TaskResult]:
        """Tasks a host skips because a meta task ended it early on a result check mode could not give."""
        findings = data.get("fleet") or {}
        if not (self.check_mode and findings.get("meta")):
            return []
        cause = self._condition_taint(result.host, findings)
        if not cause:
            return []
        hosts = sorted(self._play_hosts) if findings["meta"] == "end_play" else [result.host]
        reason = f"never reached: '{result.task}' (meta {findings['meta']}) ended the play early; {cause}"
        return [
            TaskResult(
                seq=result.seq,
                host=host,
                task=item.get("task", ""),
                action=item.get("action", ""),
                status="skipped",
                unverified=True,
                reason=reason,
                note="never reached",
                path=self.context.relative(item.get("path", "")),
            )
            for host in hosts
            for item in findings.get("never_reached") or []
        ]

    def _judge(self, result: TaskResult, data: dict[str, Any]) -> None:
        """Apply the rules that need the host's earlier results, then count the result."""
        state = self._states.setdefault(result.host, _HostState())
        findings = data.get("fleet") or {}
        if self.check_mode and not result.unverified and not result.handler:
            reason = self._taint_reason(result, findings, str((data.get("res") or {}).get("false_condition") or ""))
            if reason:
                result.unverified, result.reason = True, reason
        if self.check_mode:
            self._propagate(state, result, findings)
        if result.unverified and self.context.accepts(result.task):
            result.accepted = True
        if self.check_mode and result.drift:
            self._attribute(result)
        self._tally(result, data)

    def _reads(self, findings: dict[str, Any]) -> tuple[str, ...]:
        """The source files and role directories a task depends on, relative to the revision's tree."""
        files = [self.context.relative(str(f)) for f in findings.get("files") or []]
        roles = [self.context.relative(str(r)).rstrip("/") + "/" for r in findings.get("roles") or []]
        return tuple(files + roles)

    def _taint_reason(self, result: TaskResult, findings: dict[str, Any], false_condition: str) -> str:
        """Why a task that read a value check mode could not give proves nothing ('' when it read none).

        A skip decided by such a value may be a run in a converge; an ok task that could change the host
        was evaluated with arguments or loop items the converge may not have. A change stays drift.
        """
        if result.status == "skipped":
            cause = self._condition_taint(result.host, findings, false_condition)
            if cause:
                return f"skipped because {cause}"
            loop = self._taint_of(result.host, findings.get("loop_reads") or [], findings)
            return f"skipped because its loop reads {loop}" if loop and result.counted else ""
        if result.status != "ok" or not result.counted or result.executed:
            return ""
        loop = self._taint_of(result.host, findings.get("loop_reads") or [], findings)
        if loop:
            return f"check mode evaluated it over loop items the converge may not have: its loop reads {loop}"
        args = self._taint_of(result.host, findings.get("arg_reads") or [], findings)
        if args:
            return f"check mode evaluated it with arguments the converge may not have: they read {args}"
        return ""

    def _condition_taint(self, host: str, findings: dict[str, Any], false_condition: str = "") -> str:
        """'its condition reads `x`, registered by T, which check mode could not evaluate' ('' when not)."""
        conditions = [str(c) for c in findings.get("when") or []]
        text = " ".join(conditions + [false_condition])
        if "ansible_check_mode" in text:
            return "its condition reads ansible_check_mode"
        reads = findings.get("when_reads")
        if not isinstance(reads, dict):  # an event without the callback's names: look for the names themselves
            state = self._states.get(host, _HostState())
            names = [n for n in state.tainted if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text)]
        elif false_condition in reads:  # Ansible stops at the first false condition: only it decided the skip
            names = reads[false_condition]
        else:
            names = [name for condition in reads.values() for name in condition]
        taint = self._taint_of(host, names, findings)
        return f"its condition reads {taint}" if taint else ""

    def _taint_of(
        self, host: str, names: Collection[str], findings: dict[str, Any], seen: frozenset[str] = frozenset()
    ) -> str:
        """The chain by which one of `names` holds a value check mode could not give ('' when none does);
        names that play, role, block or task vars define from others are followed (`derived`)."""
        tainted = self._states.get(host, _HostState()).tainted
        derived = findings.get("derived") or {}
        if "ansible_check_mode" in names:  # true in a check, false in a converge: never the converge's value
            return "`ansible_check_mode`"
        for name in sorted(names):
            if name in tainted:
                return tainted[name]
        for name in sorted(names):
            if name in derived and name not in seen:
                inner = self._taint_of(host, derived[name], findings, seen | {name})
                if inner:
                    return f"`{name}` (from vars), which reads {inner}"
        return ""

    def _propagate(self, state: _HostState, result: TaskResult, findings: dict[str, Any]) -> None:
        """Carry taint to what this task gives a value: its register, set_fact's facts, include_vars' vars."""
        read = [
            *(findings.get("arg_reads") or []),
            *(findings.get("loop_reads") or []),
            *[n for c in (findings.get("when_reads") or {}).values() for n in c],
        ]
        condition = self._taint_of(result.host, read, findings)
        register = findings.get("register") or ""
        if register and result.unverified:
            state.tainted[register] = (
                f"`{register}`, registered by '{result.task}', which check mode could not evaluate"
            )
        elif register and condition:
            state.tainted[register] = f"`{register}`, registered by '{result.task}', which read {condition}"
        elif register:
            state.tainted.pop(register, None)
        for name, reads in (findings.get("sets") or {}).items():
            inner = condition or self._taint_of(result.host, reads, findings)
            if inner:
                state.tainted[name] = f"`{name}`, set from {inner}"
            elif result.status == "ok":
                state.tainted.pop(name, None)  # set again from values check mode did give

    def _attribute(self, result: TaskResult) -> None:
        """Cause and flapping of one drifted task, from the host's history."""
        history = self.context.history.get(result.host, HostHistory())
        result.cause = drift_cause(result, history, self.context)
        key = task_key(result)
        result.flapping = history.last_converge_sha == self.context.revision and (
            not history.checked_since_converge or key in history.flapping
        )

    def _verdict(self, host: str) -> HostVerdict:
        if host not in self.hosts:
            known = self.context.history.get(host, HostHistory()).flapping if self.check_mode else ()
            self.hosts[host] = HostVerdict(host, HostStatus.IN_SYNC, flapping=set(known))
        return self.hosts[host]

    def _tally(self, result: TaskResult, data: dict[str, Any]) -> None:
        verdict = self._verdict(result.host)
        # A task that ran for real changed the host already: no converge is needed for it.
        bucket = "ok" if result.executed else result.status
        if bucket != "failed" or not (result.ignored or result.rescued):
            # Ansible's recap does not count an ignored or rescued failure against the host either.
            setattr(verdict, bucket, getattr(verdict, bucket) + 1)
        verdict.executed += result.executed
        if result.unverified:
            verdict.unverified += 1
            verdict.accepted += result.accepted
        elif result.counted and result.status in ("ok", "changed", "failed"):
            verdict.verified += 1
        self._track_flapping(verdict, result)
        if short_action(result.action) in FACT_ACTIONS and result.status in ("ok", "changed"):
            verdict.facts = extract_facts((data.get("res") or {}).get("ansible_facts") or {})
        if result.status == "unreachable" or (
            result.status == "failed" and not (result.ignored or result.rescued) and not verdict.message
        ):
            verdict.message = f"{result.task}: {result.note}" if result.note else result.task
        verdict.status = host_status(verdict, self.check_mode)

    def _track_flapping(self, verdict: HostVerdict, result: TaskResult) -> None:
        if not self.check_mode:
            return
        key = task_key(result)
        if result.flapping:
            verdict.flapping.add(key)
        elif result.status == "ok":
            verdict.flapping.discard(key)  # evaluated and unchanged: it is stable now

    def _settle_recap(self, stats: dict[str, Any]) -> None:
        """Ansible's recap is the last word on failures: a failure a rescue handled is not one."""
        self.finished = True
        failures = stats.get("failures") or {}
        for name, verdict in self.hosts.items():
            if verdict.failed and not failures.get(name) and name in (stats.get("processed") or {}):
                verdict.failed = 0
                if verdict.message and not verdict.unreachable:
                    verdict.message = ""
                verdict.status = host_status(verdict, self.check_mode)


def settle_incomplete(verdicts: list[HostVerdict]) -> list[HostVerdict]:
    """For a run that did not reach its end, `in_sync` is unproven: call it `incomplete`.

    Drift, failures and unreachable hosts found before the stop are real findings and stay.
    """
    for verdict in verdicts:
        if verdict.status in (HostStatus.IN_SYNC, HostStatus.UNVERIFIED):
            verdict.status = HostStatus.INCOMPLETE
            if not verdict.message:
                verdict.message = "the run stopped before this host was fully evaluated"
    return verdicts


def host_status(verdict: HostVerdict, check_mode: bool) -> str:
    """Unreachable beats failed beats drifted beats unverified beats in sync."""
    if verdict.unreachable:
        return HostStatus.UNREACHABLE
    if verdict.failed:
        return HostStatus.FAILED
    if check_mode and verdict.changed:
        return HostStatus.DRIFTED
    if check_mode and verdict.unverified > verdict.accepted:
        return HostStatus.UNVERIFIED
    return HostStatus.IN_SYNC


class KeyedTask(Protocol):
    """Anything task_key can name: a TaskResult, or a task result the store hands back."""

    @property
    def path(self) -> str: ...
    @property
    def task(self) -> str: ...


class ChangedTask(KeyedTask, Protocol):
    """A drifted task as plan.drift_signature counts it."""

    @property
    def action(self) -> str: ...
    @property
    def diff(self) -> str: ...


class UnverifiedTask(KeyedTask, Protocol):
    """An unverified task as plan.drift_signature counts it."""

    @property
    def action(self) -> str: ...
    @property
    def reason(self) -> str: ...


def task_key(result: KeyedTask) -> str:
    """A task's identity across runs: its file (not its line, which moves) and its name."""
    return f"{result.path.rsplit(':', 1)[0]}|{result.task}"


def drift_cause(result: TaskResult, history: HostHistory, context: CheckContext) -> str:
    """`new`: never converged; `local`: the host changed under the revision it was converged at, or under
    a revision that left every file this task reads alone; `commit`: a commit changed what the task does."""
    if history.last_converge_sha is None:
        return "new"
    if history.last_converge_sha == context.revision:
        return "local"
    changed = context.changed_paths.get(history.last_converge_sha)
    if changed is None:
        return "commit"  # the history between the two revisions is unknown: do not claim the host changed
    return "commit" if any(reads_path(result.path, path, result.reads) for path in changed) else "local"


def reads_path(task_path: str, changed_path: str, reads: tuple[str, ...] = ()) -> bool:
    """Could a change to `changed_path` change what the task at `task_path` does?

    Its own file; its role's templates, files, defaults, vars and handlers; any
    inventory or variables file (they feed every task's arguments); and every
    file and directory the callback saw it read (`reads`: the template or copy
    source its action found, files its lookups found, include_vars files, its
    play's file and vars_files, the directories of its role and of the roles
    whose defaults and vars it sees).
    """
    task_file = task_path.rsplit(":", 1)[0]
    if changed_path == task_file:
        return True
    if "/tasks/" in task_file and changed_path.startswith(task_file.split("/tasks/")[0] + "/"):
        return True
    if any(changed_path == read or changed_path.startswith(read.rstrip("/") + "/") for read in reads if read):
        return True
    parts = changed_path.split("/")
    return any(part in ("inventory", "group_vars", "host_vars", "vars") for part in parts[:-1])


def task_result_from_event(event: dict[str, Any], check_mode: bool, handler: bool = False) -> TaskResult:
    """The TaskResult a runner_on_* event describes."""
    data = event.get("event_data") or {}
    res = data.get("res") or {}
    action = data.get("resolved_action") or data.get("task_action") or ""
    findings = data.get("fleet") or fallback_findings(event["event"], res, action)
    status = _status(event["event"], findings)
    result = TaskResult(
        seq=int(event.get("counter") or 0),
        host=data["host"],
        task=data.get("task") or data.get("task_action") or "",
        action=action,
        status=status,
        diff=render_diff(res) if status in ("changed", "ok") else "",
        duration=float(data.get("duration") or 0.0),
        path=data.get("task_path") or "",
        handler=handler,
        ignored=status == "failed" and bool(data.get("ignore_errors")),
        rescued=status == "failed" and bool(findings.get("in_rescued_block")),
        executed=check_mode and findings.get("check_mode") is False and status in ("ok", "changed"),
        counted=short_action(action) not in NON_STATE_ACTIONS,
    )
    result.reason = _unverified_reason(result, findings) if check_mode and not handler else ""
    result.unverified = bool(result.reason)
    result.note = _note(res, result)
    return result


def fallback_findings(kind: str, res: dict[str, Any], action: str) -> dict[str, Any]:
    """Findings from an event's own `res`, for events recorded without fleet's callback."""
    return classify_result(res, kind == "runner_on_skipped", action)


def _status(kind: str, findings: dict[str, Any]) -> str:
    if kind == "runner_on_unreachable":
        return "unreachable"
    if kind == "runner_on_failed":
        return "failed"
    if kind == "runner_on_skipped":
        return "skipped"
    return "changed" if findings.get("changed") else "ok"


def _unverified_reason(result: TaskResult, findings: dict[str, Any]) -> str:
    """Why check mode could not evaluate this task ('' when it did); handlers are judged with their change."""
    if result.executed:
        return ""
    if result.status == "failed" and result.ignored:
        return "it failed in check mode and ignore_errors hid the failure"
    if result.status in ("failed", "unreachable", "changed"):
        return ""  # a failure is a finding; a change is drift, the stronger claim
    if result.status == "skipped" and not result.counted and not findings.get("not_evaluated"):
        return ""
    return findings.get("not_evaluated") or ""


def _note(res: dict[str, Any], result: TaskResult) -> str:
    """Ansible's message for the task, or the reason it is unverified."""
    if res.get("censored"):
        msg = "output hidden (no_log)"
    else:
        msg = res.get("msg") or res.get("skip_reason") or ""
    if not isinstance(msg, str):
        msg = json.dumps(msg)
    if result.status == "failed" and res.get("stderr"):
        msg = f"{msg} {res['stderr']}".strip()
    if result.ignored:
        msg = f"failed (ignored): {msg}".strip()
    if result.rescued:
        msg = f"failed (rescued): {msg}".strip()
    if res.get("false_condition"):
        msg = f"{msg} ({res['false_condition']})".strip()
    return msg[:2000]


def render_diff(res: dict[str, Any]) -> str:
    """Every diff a result carries, as one unified-diff text ('' when none)."""
    parts = [_render_one(diff, path) for diff, path in _diffs_of(res)]
    text = "".join(p for p in parts if p)
    if len(text) > MAX_DIFF_CHARS:
        text = text[:MAX_DIFF_CHARS] + f"\n... diff cut at {MAX_DIFF_CHARS} characters\n"
    return text


def _diffs_of(res: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(diff, path on the host) pairs of a result and of its loop items."""
    diff = res.get("diff")
    diffs = [diff] if isinstance(diff, dict) else [d for d in diff or [] if isinstance(d, dict)]
    path = _target_path(res)
    found = [(d, path) for d in diffs]
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("changed"):
            found += _diffs_of(item)
    return found


def _target_path(res: dict[str, Any]) -> str:
    """The file a result is about; template's after_header is a controller temp file, so not that."""
    args = (res.get("invocation") or {}).get("module_args") or {}
    for source in (res, args):
        for key in ("dest", "path", "name"):
            value = source.get(key)
            if isinstance(value, str) and value.startswith("/"):
                return value
    return ""


def _render_one(diff: dict[str, Any], path: str) -> str:
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
    return "".join(
        difflib.unified_diff(
            before_lines,
            after_lines,
            fromfile=f"before: {target}".strip() if target else "before",
            tofile=f"after: {target}".strip() if target else "after",
        )
    )


def _mapping_lines(mapping: dict[str, Any]) -> str:
    return "".join(f"{key}: {json.dumps(mapping[key])}\n" for key in sorted(mapping))


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def extract_facts(facts: dict[str, Any]) -> dict[str, Any]:
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
