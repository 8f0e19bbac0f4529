"""What an operator may do to the fleet, each verb written once.

The CLI, the JSON API and the UI only translate arguments and answers: the rules (what may be canceled, which
converge must wait), the write and its audit record live here, in one transaction (`unit_of_work`), so a verb
is recorded and audited together or not at all. Permissions are checked where the actor is known: the web
checks the role of the signed-in user or token before it calls in; the CLI acts as the machine's operator.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet import vocabulary
from fleet.errors import FleetError, NotFound
from fleet.store import accounts, queries, records
from fleet.store.db import unit_of_work
from fleet.store.records import KeptLock
from fleet.store.views import ApprovalView, RunView


class Refused(FleetError):
    """The fleet's state does not allow this now (HTTP 409): a converge overlaps one queued or running, the
    run has ended, the approval was decided, the host keeps no lock. The message says why and what to do."""


@dataclass(frozen=True)
class Actor:
    """Who acts: their name as audit records it, and where from (the web's remote address; empty from the CLI)."""

    name: str
    remote_addr: str = ""

    def audit(self, action: str, target: str, detail: str = "") -> None:
        accounts.audit(self.name, action, target, detail, self.remote_addr)


@dataclass(frozen=True)
class RunRequested:
    run: RunView
    joined: bool  # an identical check was already queued: this request joined it


def request_run(actor: Actor, kind: str, limit: str = "") -> RunRequested:
    """Queue a check or converge of `limit` (empty: every host) for the controller.

    An identical queued check is joined (audited as such: who asked is kept). A converge that may touch a
    host another queued or running converge may touch is refused (queries.converge_conflict): the rule and
    the enqueue hold one lock, so two requests cannot both pass."""
    if kind not in vocabulary.RUN_KINDS:
        raise FleetError(f"unknown run kind {kind!r}: one of {', '.join(vocabulary.RUN_KINDS)}")
    limit = limit or ""
    with unit_of_work(serialized=kind == vocabulary.RunKind.CONVERGE):
        if kind == vocabulary.RunKind.CONVERGE:
            conflict = queries.converge_conflict(limit)
            if conflict:
                raise Refused(conflict)
        run, joined = records.enqueue_run(kind, vocabulary.Trigger.MANUAL, limit, actor.name)
        actor.audit(
            "run.request", limit or "all hosts", f"{kind}, run {run.id}" + (", joined the queued one" if joined else "")
        )
    return RunRequested(run, joined)


def cancel_run(actor: Actor, run_id: int) -> tuple[RunView, str]:
    """Stop a queued run at once, or a running one at its next event (partial results are kept). Returns the
    run and the status it had."""
    with unit_of_work():
        run = queries.get_run(run_id)
        if not vocabulary.is_active(run.status):
            raise Refused(f"run {run_id} is {run.status}; only queued or running runs can be canceled")
        canceled = records.request_cancel(run_id, f"canceled by {actor.name}")
        actor.audit("run.cancel", f"run {run_id}", f"{run.kind}, was {run.status}")
    return canceled, run.status


def approve(actor: Actor, approval_id: int) -> ApprovalView:
    """Approve converging exactly the drift an approval shows at its revision (the controller re-checks
    first), or the rollout an inventory jump held. A decided approval is refused, never approved twice."""
    with unit_of_work():
        try:
            approval = records.decide_approval(approval_id, actor.name)
        except NotFound:
            raise
        except FleetError as exc:
            raise Refused(str(exc)) from exc
        actor.audit(
            "approval.approve",
            approval.host or f"revision {approval.revision_sha[:12]}",
            f"approval {approval.id}; kind={approval.kind} revision={approval.revision_sha[:12]} "
            f"check_run={approval.check_run_id} drift={approval.drift_signature[:12] or '-'}",
        )
    return approval


def release_host(actor: Actor, name: str) -> KeptLock:
    """Free the lock a stopped run kept on a host whose remote work could not be confirmed ended; the next run
    may then take it. Nothing about the host is proven since: it keeps reading incomplete."""
    with unit_of_work():
        kept = records.release_kept_lock(name, f"lock released by {actor.name}; nothing about the host is proven since")
        if kept is None:
            raise Refused(
                f"{name} has no kept lock (only a stopped run whose work on a host could not be "
                "confirmed ended keeps one); `fleet status` shows the hosts' locks and runs"
            )
        actor.audit("host.release", name, f"lock kept by run {kept.run_id}: {kept.reason}")
    return kept
