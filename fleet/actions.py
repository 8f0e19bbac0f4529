"""What an operator may do to the fleet, each verb written once.

The CLI, the JSON API and the UI only translate arguments and answers: the rules (what may be canceled, which
converge must wait), the write and its audit record live here, in one transaction (`unit_of_work`), so a verb
is recorded and audited together or not at all. Permissions are checked where the actor is known: the web
checks the role of the signed-in user or token before it calls in; the CLI acts as the machine's operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet import vocabulary
from fleet.errors import FleetError, NotFound
from fleet.store import accounts, queries, records
from fleet.store.db import unit_of_work
from fleet.store.records import KeptLock
from fleet.store.views import ApprovalView, HostView, RunView

if TYPE_CHECKING:
    from fleet.hostkeys import Probe, Target
    from fleet.settings import Settings


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


def accept_host_key(actor: Actor, settings: Settings, name: str, jump: str = "") -> Probe:
    """Trust the SSH host key a host (or `jump`, a jump host on its way) offers now, after the operator checked
    why it changed: probed once more, pinned in the store for every fleet process, the host unblocked."""
    from fleet import hostkeys
    from fleet.store import pins

    host = queries.get_host(name)
    target = _probe_target(settings, host)
    with pins.probing(settings.known_hosts_path):
        written = pins.write_known_hosts(settings.known_hosts_path)  # hops on the way must match the store's
        probe = hostkeys.accept_key(
            target, settings.known_hosts_path, settings.connect_timeout, settings.identity_path, jump
        )
        if not probe.usable:
            raise FleetError(f"cannot accept the key of {jump or name}: {probe.message}")
        # The key just pinned in the file goes to the store; a jump host met for the first time on the way too.
        pins.replace_pins_from_file(settings.known_hosts_path, hostkeys.accepted_name(target, jump), actor.name)
        pins.record_new_pins(settings.known_hosts_path, actor.name, written)
    if not jump:
        records.mark_key_blocked(name, False)
    actor.audit(
        "host.accept_key", name, f"now trusting {probe.fingerprint}" + (f" for jump host {jump}" if jump else "")
    )
    return probe


def _probe_target(settings: Settings, host: HostView) -> Target:
    """Where the probe finds a stored host: by its route in the desired inventory (jump hosts too), else directly."""
    from fleet import hostkeys, runner
    from fleet.revisions import desired_state

    try:
        listed = {h.name: h for h in desired_state(settings).hosts}
    except FleetError:
        listed = {}
    if host.name in listed:
        return runner.probe_target(listed[host.name], hostkeys.load_ssh_config())
    return hostkeys.Target(host.name, host.address, host.port)


# --- accounts: users and API tokens --------------------------------------------------------------


def add_user(actor: Actor, name: str, password: str, role: str, replace: bool = False) -> None:
    """Create an account; with `replace` (the CLI's `fleet user add`) an existing one gets the new password and
    role instead. ConfigError for a bad role or a short password; Refused for an existing name otherwise."""
    with unit_of_work():
        if not replace and accounts.user_exists(name):
            raise Refused(f"a user named {name!r} exists already")
        accounts.add_user(name, password, role)
        actor.audit("user.add", name, f"role={role}")


def change_password(actor: Actor, name: str, password: str, how: str) -> None:
    """Set a user's password (every session they have ends); `how` says through what, for the audit record."""
    with unit_of_work():
        accounts.change_password(name, password)
        actor.audit("user.passwd", name, how)


def set_user_disabled(actor: Actor, user_id: int, disabled: bool) -> str:
    """Disable (sessions end, owned tokens die) or enable an account; an admin cannot disable their own.
    Returns the user's name."""
    with unit_of_work():
        name = accounts.user_name(user_id)
        if name is None:
            raise NotFound(f"no user with id {user_id}")
        if disabled and name == actor.name:
            raise Refused("you cannot disable your own account; ask another admin")
        accounts.set_user_disabled(user_id, disabled)
        actor.audit("user.disable" if disabled else "user.enable", name)
    return name


def create_token(actor: Actor, name: str, role: str, owner: str | None, expires: str | None) -> str:
    """A new API token (at most its owner's role; an owner-less one is the CLI's machine token), expiring
    after `expires` (like 30d) or never. Returns the secret, which fleet keeps only as a hash."""
    lifetime = accounts.parse_expiry(expires)
    with unit_of_work():
        secret = accounts.create_token(name, role, actor.name, owner=owner, expires_in=lifetime)
        actor.audit("token.create", name, f"role={role} owner={owner or 'cli'} expires={expires or 'never'}")
    return secret


def revoke_token(actor: Actor, name: str) -> None:
    with unit_of_work():
        accounts.revoke_token(name)
        actor.audit("token.revoke", name)
