"""JSON shapes of fleet's records, one per thing, shared by the CLI's --json and the API.

A run has one shape wherever it is printed: `fleet check --json`,
`fleet show RUN_ID --json` and `GET /api/v1/runs/<id>` all give a top-level
`run` object (`run_json`) and a `hosts` list (`run_host_json`): name, status,
message, coverage, counts and the lists that explain the verdict
(`changed_tasks`, `unverified_tasks`, `flapping_tasks`, `executed_in_check`).
`fleet show` and the API add fields (tasks, stdout, last_seq) but never
rename these. Pure functions: records in (store rows, the store's dataclasses
or drift's results, read by attribute), dicts out; links are built by the web,
which knows the URL map.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleet.drift import is_drift as is_drift  # also the CLI's and the web's test of a drifted task
from fleet.vocabulary import ApprovalKind, Coverage, TaskStatus, iso

if TYPE_CHECKING:
    from fleet.drift import HostVerdict, TaskResult
    from fleet.store.views import ApprovalView, HostView, RevisionView, RunHostView, RunView, SourceView, TaskView
    from fleet.store.workers import ShardReport, WorkerView


def run_json(run: RunView) -> dict[str, Any]:
    """One run: what it is, where it stands, and its queue bookkeeping."""
    return {
        "id": run.id,
        "kind": run.kind,
        "trigger": run.trigger,
        "status": run.status,
        "revision": run.revision_sha,
        "limit": run.limit or None,
        "requested_by": run.requested_by,
        "strategy": run.strategy or None,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "error": run.error or None,
        "cancel_requested": bool(run.cancel_requested),
        "approval_id": run.approval_id,
        # Why a queued run waits (the broker is down, scale-out); rows of older pages may not carry it.
        "waiting_reason": getattr(run, "waiting_reason", "") or None,
        "ansible_path": ansible_path_json(getattr(run, "ansible_path", "")),
    }


def ansible_path_json(text: str) -> dict[str, Any] | None:
    """How Ansible ran, from the stored text: {"warm": true, "reason": null} forked from a kept Ansible process;
    {"warm": false, "reason": why} cold (a new ansible-playbook); {"warm": null, "reason": each shard's} for a
    run whose shards took different paths; None when not known (no Ansible ran, or recorded before fleet kept it).
    """
    if not text:
        return None
    if text == "warm":
        return {"warm": True, "reason": None}
    kind, _, reason = text.partition(": ")
    return {"warm": False if kind == "cold" else None, "reason": reason or None}


def ansible_path_line(text: str) -> str:
    """The same for people: 'warm (forked from the kept Ansible process)', 'cold: why', 'mixed: ...'."""
    if text == "warm":
        return "warm (forked from the kept Ansible process)"
    return text or "not recorded"


def run_summary_json(run: RunView) -> dict[str, Any]:
    """A run in a history page: its per-status host counts come from the run row itself."""
    data = run_json(run)
    data["hosts"] = {
        "total": run.hosts_total,
        "in_sync": run.hosts_in_sync,
        "drifted": run.hosts_drifted,
        "unverified": run.hosts_unverified,
        "unreachable": run.hosts_unreachable,
        "failed": run.hosts_failed,
    }
    return data


def run_host_json(
    name: str, verdict: RunHostView | HostVerdict, tasks: Sequence[TaskView | TaskResult]
) -> dict[str, Any]:
    """One host's verdict in one run, with the task results that explain it.

    `verdict` is a stored run-host row or drift's HostVerdict (same counters);
    `tasks` are that host's task results in the run (any that are not part of
    the explanation are left out of the lists).
    """
    return {
        "name": name,
        "status": verdict.status,
        "message": verdict.message or None,
        "coverage": Coverage.of(verdict.verified, verdict.unverified).as_json(),
        "ok": verdict.ok,
        "changed": verdict.changed,
        "failed": verdict.failed,
        "skipped": verdict.skipped,
        "unreachable": verdict.unreachable,
        "unverified": verdict.unverified,
        "accepted": verdict.accepted,
        "executed": verdict.executed,
        **verdict_lists_json(tasks),
    }


def run_report_json(
    run: RunView,
    hosts: Sequence[tuple[str, RunHostView | HostVerdict, Sequence[TaskView | TaskResult]]],
) -> dict[str, Any]:
    """The shared document of a run: `hosts` are (name, verdict, tasks) triples, in display order."""
    return {"run": run_json(run), "hosts": [run_host_json(name, verdict, tasks) for name, verdict, tasks in hosts]}


def task_json(row: TaskView) -> dict[str, Any]:
    """One task result; `seq` orders it against the run's output."""
    return {
        "seq": row.seq,
        "host": row.host,
        "task": row.task,
        "action": row.action,
        "status": row.status,
        "unverified": bool(row.unverified),
        "note": row.note or None,
        "diff": row.diff or None,
        "duration": row.duration,
        "path": row.path or None,
        "reason": row.reason or None,
        "accepted": bool(row.accepted),
        "executed": bool(row.executed),
        "rescued": bool(row.rescued),
        "handler": bool(row.handler),
        "cause": row.cause or None,
        "flapping": bool(row.flapping),
    }


def changed_task_json(task: TaskView | TaskResult) -> dict[str, Any]:
    return {
        "task": task.task,
        "action": task.action,
        "diff": task.diff,
        "cause": task.cause or None,
        "flapping": bool(task.flapping),
    }


def unverified_task_json(task: TaskView | TaskResult) -> dict[str, Any]:
    return {
        "task": task.task,
        "action": task.action,
        "reason": task.reason or task.note,
        "accepted": bool(task.accepted),
    }


def verdict_lists_json(tasks: Sequence[TaskView | TaskResult]) -> dict[str, Any]:
    """What explains one host's verdict, from its task results (store rows or drift.TaskResult)."""
    return {
        "changed_tasks": [changed_task_json(t) for t in tasks if is_drift(t)],
        "unverified_tasks": [unverified_task_json(t) for t in tasks if t.unverified],
        "flapping_tasks": [{"task": t.task, "action": t.action} for t in tasks if t.flapping],
        "executed_in_check": [
            {"task": t.task, "action": t.action, "changed": t.status == TaskStatus.CHANGED} for t in tasks if t.executed
        ],
    }


def host_json(host: HostView, drifted: Sequence[TaskView]) -> dict[str, Any]:
    """A host as `fleet status --json` prints it; `drifted` are the task results that explain its last check."""
    return {
        "name": host.name,
        "status": host.status,
        "groups": host.group_list,
        "address": host.address,
        "message": host.message or None,
        "last_check_at": iso(host.last_check_at),
        "last_check_revision": host.last_check_sha,
        "last_check_run_id": host.last_check_run_id,
        "last_converge_at": iso(host.last_converge_at),
        "last_converge_revision": host.last_converge_sha,
        "coverage": Coverage(host.verified_tasks, host.total_tasks).as_json(),
        "facts": {"os": host.os or None, "virtualization": host.virtualization or None},
        "key_blocked": host.key_blocked,
        **verdict_lists_json(drifted),
    }


def revision_json(revision: RevisionView, desired_sha: str | None) -> dict[str, Any]:
    return {
        "sha": revision.sha,
        "ref": revision.ref,
        "status": revision.status,
        "error": revision.error or None,
        "author": revision.author,
        "authored_at": iso(revision.authored_at),
        "message": revision.message,
        "signature": revision.signature,
        "desired": revision.sha == desired_sha,
        "rewrites_history": revision.rewrites_history,
    }


def source_json(state: SourceView | None, default_repo: str) -> dict[str, Any]:
    """Where the source stands; `state` is None before the first fetch."""
    if state is None:
        return {
            "repo": default_repo,
            "desired": None,
            "head": None,
            "stale": False,
            "error": None,
            "last_fetch_at": None,
        }
    return {
        "repo": state.repo or default_repo,
        "desired": state.desired_sha,
        "head": state.head_sha,
        "stale": bool(state.stale),
        "error": state.last_error or None,
        "last_fetch_at": iso(state.last_fetch_at),
    }


def approval_json(approval: ApprovalView) -> dict[str, Any]:
    return {
        "id": approval.id,
        "host": approval.host,
        "status": approval.status,
        "check_run_id": approval.check_run_id,
        "revision": approval.revision_sha,
        "summary": approval.summary,
        "created_at": iso(approval.created_at),
        "decided_by": approval.decided_by or None,
        "decided_at": iso(approval.decided_at),
        "converge_run_id": approval.converge_run_id,
        "note": approval.note or None,
        "kind": approval.kind,
        "reason": approval.reason or None,
    }


def approved_message(approval: ApprovalView) -> str:
    """What the controller does next with an approval just approved (the UI and the CLI say the same)."""
    if approval.kind == ApprovalKind.INVENTORY:
        return (
            f"approval {approval.id} approved: the inventory of {approval.revision_sha[:12]} is accepted; the "
            "controller checks every host again, then auto converge goes on"
        )
    return (
        f"approval {approval.id} for {approval.host} approved: the controller re-checks, then converges exactly "
        f"this drift at {approval.revision_sha[:12]}"
    )


def worker_json(worker: WorkerView, now: datetime) -> dict[str, Any]:
    """One `fleet worker` as `fleet workers --json` and GET /api/v1/workers show it (a store WorkerView)."""
    age = worker.heartbeat_age(now)
    return {
        "name": worker.name,
        "host": worker.host,
        "pid": worker.pid,
        "state": worker.state,
        "version": worker.version,
        "version_ok": worker.version_ok,
        "concurrency": worker.concurrency,
        "running": worker.running,
        "queues": list(worker.queues),
        "refusing": worker.refusing or None,
        "started_at": iso(worker.started_at),
        "heartbeat_at": iso(worker.heartbeat_at),
        "heartbeat_age_seconds": None if age is None else round(max(age, 0.0), 1),
        "stopped_at": iso(worker.stopped_at),
    }


def shard_json(shard: ShardReport) -> dict[str, Any]:
    """One shard of a run (a store ShardReport): which worker ran which hosts, its attempts and why it ended so."""
    return {
        "index": shard.index,
        "hosts": list(shard.hosts),
        "status": shard.status,
        "attempt": shard.attempt,
        "worker": shard.worker or None,
        "reason": shard.reason or None,
        "started_at": iso(shard.started_at),
        "finished_at": iso(shard.finished_at),
        "history": list(shard.history),
        "ansible_path": ansible_path_json(getattr(shard, "ansible_path", "")),
    }
