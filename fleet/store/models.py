"""Tables. Indexes follow what the pages filter on: host, status, start time."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleet.store.db import Model
from fleet.vocabulary import utcnow


class Revision(Model):
    __tablename__ = "revisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha: Mapped[str] = mapped_column(String(64), unique=True)
    # Outside input (a ref or author of any length) is Text: PostgreSQL refuses what a VARCHAR(n) cannot hold.
    ref: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(Text, default="")
    authored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message: Mapped[str] = mapped_column(Text, default="")
    signature: Mapped[str] = mapped_column(String(20), default="unsigned")
    status: Mapped[str] = mapped_column(String(20))  # valid | rejected
    error: Mapped[str] = mapped_column(Text, default="")
    # The last converged revision is not an ancestor: history was rewritten, never auto-converged.
    rewrites_history: Mapped[bool] = mapped_column(Boolean, default=False)
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SourceState(Model):
    """One row: where the source stands (desired revision, last fetch, staleness)."""

    __tablename__ = "source_state"
    id: Mapped[int] = mapped_column(primary_key=True)
    repo: Mapped[str] = mapped_column(Text, default="")
    desired_sha: Mapped[str | None] = mapped_column(String(64))
    head_sha: Mapped[str | None] = mapped_column(String(64))
    last_fetch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text, default="")
    stale: Mapped[bool] = mapped_column(Boolean, default=False)


class Host(Model):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)  # inventory names have no length limit
    address: Mapped[str] = mapped_column(Text, default="")
    port: Mapped[int] = mapped_column(Integer, default=22)
    groups: Mapped[str] = mapped_column(Text, default="")  # space-separated
    in_inventory: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(20), default="unknown", index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    last_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_check_sha: Mapped[str | None] = mapped_column(String(64))
    last_check_run_id: Mapped[int | None] = mapped_column(Integer)
    last_converge_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_converge_sha: Mapped[str | None] = mapped_column(String(64))
    drifted_tasks: Mapped[int] = mapped_column(Integer, default=0)
    verified_tasks: Mapped[int] = mapped_column(Integer, default=0)
    total_tasks: Mapped[int] = mapped_column(Integer, default=0)
    # Task keys (file|name) that reported drift right after a converge of the same revision, until stable.
    flapping: Mapped[str] = mapped_column(Text, default="", server_default="")  # JSON list
    os: Mapped[str] = mapped_column(Text, default="")
    virtualization: Mapped[str] = mapped_column(String(40), default="")
    key_blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    # When a check first found this host drifted; cleared once it is proven in_sync (metrics: drift age,
    # time to fix). Statuses between (unreachable, unverified, ...) do not end the drift.
    drift_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last check that reached the host and judged it (in_sync, drifted or unverified): last_check_at
    # also moves when a check finds it unreachable or failed, which would hide a host gone silent.
    last_ok_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def group_list(self) -> list[str]:
        return self.groups.split()


class Run(Model):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # check | converge
    trigger: Mapped[str] = mapped_column(String(20))  # schedule | commit | manual | webhook | policy
    status: Mapped[str] = mapped_column(String(20), index=True)
    revision_sha: Mapped[str | None] = mapped_column(String(64))
    limit: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str] = mapped_column(Text, default="")
    hosts_total: Mapped[int] = mapped_column(Integer, default=0)
    hosts_in_sync: Mapped[int] = mapped_column(Integer, default=0)
    hosts_drifted: Mapped[int] = mapped_column(Integer, default=0)
    hosts_unreachable: Mapped[int] = mapped_column(Integer, default=0)
    hosts_failed: Mapped[int] = mapped_column(Integer, default=0)
    hosts_unverified: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pid: Mapped[int | None] = mapped_column(Integer)  # the fleet process running it
    ansible_pid: Mapped[int | None] = mapped_column(Integer)  # its ansible-playbook (own process group)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    approval_id: Mapped[int | None] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(40), default="")  # Ansible strategy the run used
    # How Ansible ran: 'warm' (forked from a kept process, fleet.warm), 'cold: <why>', for a run of shards
    # 'mixed: ...' when they differ; '' before it is known (fleet.shapes.ansible_path_json reads it).
    ansible_path: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The process working on a running run ("host:pid:token") renews its lease; once it lapses, whoever
    # looks next closes the run as interrupted (fleet.store.leases).
    lease_holder: Mapped[str] = mapped_column(String(255), default="", server_default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why a queued run (or a running run's shards) waits: the broker is down, no worker is online (scale-out).
    waiting_reason: Mapped[str] = mapped_column(Text, default="", server_default="")

    __table_args__ = (
        Index("ix_runs_kind_id", "kind", "id"),
        Index("ix_runs_kind_status_id", "kind", "status", "id"),
        Index("ix_runs_status_id", "status", "id"),
        Index("ix_runs_trigger_id", "trigger", "id"),
    )


class RunHost(Model):
    """One host's verdict in one run."""

    __tablename__ = "run_hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")
    ok: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    unreachable: Mapped[int] = mapped_column(Integer, default=0)
    unverified: Mapped[int] = mapped_column(Integer, default=0)
    # Columns added after the first release carry server defaults, so rows written without them stay valid.
    accepted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # unverified tasks accepted
    verified: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # evaluated tasks (coverage)
    executed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # ran for real in a check

    __table_args__ = (
        Index("ix_run_hosts_run", "run_id", "host", unique=True),
        Index("ix_run_hosts_host_run", "host", "run_id"),
    )


class TaskResultRow(Model):
    __tablename__ = "task_results"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)  # a shard numbers its events from its own offset
    host: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    unverified: Mapped[bool] = mapped_column(Boolean, default=False)
    handler: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(Text, default="")
    diff: Mapped[str] = mapped_column(Text, default="")
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    path: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")  # why check mode could not tell
    accepted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # accept_unverified
    executed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # ran for real in a check
    rescued: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # a rescue handled it
    cause: Mapped[str] = mapped_column(String(10), default="", server_default="")  # drift: commit | local | new
    flapping: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # not idempotent

    __table_args__ = (
        Index("ix_task_results_run_host", "run_id", "host", "seq"),
        Index("ix_task_results_host_run", "host", "run_id"),
    )


class DriftResolution(Model):
    """One drift of one host that ended in_sync: how long it took. Kept so the metrics' time-to-fix
    histogram survives restarts (a row per fixed drift, never per check)."""

    __tablename__ = "drift_resolutions"
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(Integer)  # the run that found the host in_sync
    drifted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    seconds: Mapped[float] = mapped_column(Float)


class PrunedRunDurations(Model):
    """The runs retention deleted, per kind, folded in before they go: how many ended in each status and
    how long they took (cumulative bucket counts), so fleet_runs_total and the run-duration histogram
    never go down (Prometheus would read a reset)."""

    __tablename__ = "pruned_run_durations"
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    buckets: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON: bound -> runs <= it
    statuses: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON: final status -> runs


class RunOutput(Model):
    """Ansible's stdout, in the order events arrived, a chunk per event."""

    __tablename__ = "run_output"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)  # a shard numbers its events from its own offset
    text: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_run_output_run_seq", "run_id", "seq"),)


class HostLock(Model):
    """A host held by one running run; the primary key makes a second holder impossible."""

    __tablename__ = "host_locks"
    host: Mapped[str] = mapped_column(Text, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Set when the run ended but could not confirm its work on the host stopped (fleet.remote_stop): the lock
    # outlives the run, with this reason, until confirmed or released (`fleet hosts release`).
    kept_reason: Mapped[str] = mapped_column(Text, default="", server_default="")


class Approval(Model):
    """Something automation will not do without an operator, waiting (or decided): the drift of one host
    at one revision (kind drift), or auto converge at a revision whose inventory jumped (kind inventory,
    no host)."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(Text, index=True)
    check_run_id: Mapped[int] = mapped_column(Integer)
    revision_sha: Mapped[str] = mapped_column(String(64))
    drift_signature: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), index=True)  # pending | approved | applied | superseded | failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_by: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    converge_run_id: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(20), default="drift", server_default="drift")  # drift | inventory
    # Why automation asks, beyond the group's mode: a rollback, an inventory jump ('' for plain approve drift).
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")


class RevisionInventory(Model):
    """A revision's inventory as the inventory guard judged it; the newest accepted one is the baseline
    the next revision is compared with."""

    __tablename__ = "revision_inventories"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha: Mapped[str] = mapped_column(String(64), unique=True)
    hosts: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of host names
    # Within max_inventory_change, or approved: auto converge may go on at this revision.
    accepted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    judged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ControllerState(Model):
    """One row of controller bookkeeping that must survive a restart."""

    __tablename__ = "controller_state"
    id: Mapped[int] = mapped_column(primary_key=True)
    fetch_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    fetch_failures: Mapped[int] = mapped_column(Integer, default=0)
    next_fetch_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_scheduled_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    commit_checked_sha: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pid: Mapped[int | None] = mapped_column(Integer)
    # The leader lock: one controller leads while it renews this; the others wait (fleet.store.leases).
    leader_id: Mapped[str] = mapped_column(String(255), default="", server_default="")
    leader_pid: Mapped[int | None] = mapped_column(Integer)
    leader_host: Mapped[str] = mapped_column(String(255), default="", server_default="")
    leader_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class User(Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))  # viewer | operator | admin
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Model):
    """A bearer token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    created_by: Mapped[str] = mapped_column(Text, default="")  # who made it (a user or cli:<login>)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The user it acts for: it dies with them (disabled or deleted) and never outranks them.
    # None: made on the controller's machine with the CLI, owned by whoever runs fleet there.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: never
    owner: Mapped[User | None] = relationship(lazy="joined")  # read with the token: one query


class WebSession(Model):
    """A logged-in browser. The cookie carries a random id whose SHA-256 is this row's key, so
    deleting the row (logout, password change, disabled account) ends the session at once."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuthFailure(Model):
    """One failed login or bearer token, kept for the throttle window; shared by every process."""

    __tablename__ = "auth_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(20))  # account | address | token
    key: Mapped[str] = mapped_column(Text)  # the account name (as typed at the login) or the remote address
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    __table_args__ = (Index("ix_auth_failures_scope_key_at", "scope", "key", "at"),)


class AuditEntry(Model):
    """Who changed what, when: every state change of the UI, API and CLI."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(80))
    target: Mapped[str] = mapped_column(Text, default="")  # a host limit, a user name, ...
    detail: Mapped[str] = mapped_column(Text, default="")
    remote_addr: Mapped[str] = mapped_column(String(64), default="")


class NotifyTarget(Model):
    """One notification target (fleet.yml `notify:`): its rate-limit window and last outcome.

    Keyed by a hash of the URL, so the URL itself, which may carry a token, is never stored; ``display``
    is the URL with its secrets masked.
    """

    __tablename__ = "notify_targets"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    display: Mapped[str] = mapped_column(Text, default="", server_default="")
    window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_in_window: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    folded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # held back for a summary
    sent_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NotifiedHost(Model):
    """What was last notified about a host (drifted with these tasks, unreachable, failed), so a check
    that finds the same again sends nothing; cleared once the host is in_sync."""

    __tablename__ = "notified_hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(Text, unique=True)
    condition: Mapped[str] = mapped_column(String(20), default="", server_default="")
    tasks: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # JSON list of task names
    noted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class HostKey(Model):
    """One pinned SSH host key, shared by the controller and every worker: the store is the truth,
    each process's known_hosts file a copy of it (fleet.store.pins)."""

    __tablename__ = "host_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)  # as known_hosts names it: "address" or "[address]:port"
    key_type: Mapped[str] = mapped_column(String(64))  # ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa, ...
    key_b64: Mapped[str] = mapped_column(Text)
    pinned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    pinned_by: Mapped[str] = mapped_column(Text, default="", server_default="")  # process (host:pid) or cli:<user>

    __table_args__ = (UniqueConstraint("name", "key_type", name="uq_host_keys_name_type"),)


class Worker(Model):
    """A `fleet worker` process as it last reported itself (its heartbeat), for `fleet workers` and the UI."""

    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)  # Celery's node name, e.g. fleet@host
    host: Mapped[str] = mapped_column(Text, default="")
    pid: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(40), default="")
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    queues: Mapped[str] = mapped_column(Text, default="")  # comma-separated
    running: Mapped[int] = mapped_column(Integer, default=0)  # shards it runs now
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # a clean stop
    refusing: Mapped[str] = mapped_column(Text, default="", server_default="")  # why it refuses shards ('' none)


class Shard(Model):
    """Part of a run's hosts, executed by one worker (FLEET_EXECUTOR=celery).

    The controller creates and dispatches shards and decides what a lost one means; the worker that
    claims one holds its lease (`token`, `lease_expires_at`) and writes its events, then its verdicts,
    fenced by that token, so a worker presumed lost can never write after its shard was given away.
    """

    __tablename__ = "shards"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # 0.. within the run
    hosts: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of host names
    # pending (not sent) | sent (in the broker) | running | done | failed | lost | interrupted | refused | canceled
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker: Mapped[str] = mapped_column(Text, default="", server_default="")
    token: Mapped[str] = mapped_column(String(64), default="", server_default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")  # why it waits, failed, was lost
    outcome: Mapped[str] = mapped_column(String(20), default="", server_default="")  # the runner's status
    strategy: Mapped[str] = mapped_column(String(40), default="", server_default="")
    ansible_path: Mapped[str] = mapped_column(Text, default="", server_default="")  # as Run.ansible_path
    verdicts: Mapped[str] = mapped_column(Text, default="", server_default="")  # JSON, written with `done`
    ansible_pid: Mapped[int | None] = mapped_column(Integer)
    history: Mapped[str] = mapped_column(Text, default="", server_default="")  # earlier attempts, one per line

    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_shards_run_index"),)
