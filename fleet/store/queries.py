"""Reads for the CLI, UI and API; each returns plain rows in a fixed number of queries."""

from __future__ import annotations

from sqlalchemy import select

from fleet.errors import NotFound
from fleet.store.db import db
from fleet.store.models import Host, Revision, Run, RunHost, RunOutput, TaskResultRow

PAGE_SIZE = 50


def list_hosts(include_removed: bool = False) -> list[Host]:
    query = select(Host).order_by(Host.name)
    if not include_removed:
        query = query.where(Host.in_inventory.is_(True))
    return list(db.session.scalars(query))


def get_host(name: str) -> Host:
    host = db.session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise NotFound(f"no host named {name!r}; `fleet status` lists the hosts")
    return host


def drifted_tasks(hosts: list[Host]) -> dict[str, list[TaskResultRow]]:
    """The changed tasks of each host's last check, in one query."""
    pairs = [(h.last_check_run_id, h.name) for h in hosts if h.last_check_run_id and h.drifted_tasks]
    found: dict[str, list[TaskResultRow]] = {name: [] for _, name in pairs}
    if not pairs:
        return found
    run_ids = {run_id for run_id, _ in pairs}
    wanted = set(pairs)
    rows = db.session.scalars(
        select(TaskResultRow)
        .where(TaskResultRow.run_id.in_(run_ids), TaskResultRow.status == "changed")
        .order_by(TaskResultRow.seq)
    )
    for row in rows:
        if (row.run_id, row.host) in wanted:
            found[row.host].append(row)
    return found


def list_runs(kind: str | None = None, status: str | None = None, host: str | None = None,
              before_id: int | None = None, limit: int = PAGE_SIZE) -> list[Run]:
    """Newest runs first, one keyset page (runs with id < before_id)."""
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if kind:
        query = query.where(Run.kind == kind)
    if status:
        query = query.where(Run.status == status)
    if host:
        query = query.where(Run.id.in_(select(RunHost.run_id).where(RunHost.host == host)))
    if before_id:
        query = query.where(Run.id < before_id)
    return list(db.session.scalars(query))


def get_run(run_id: int) -> Run:
    run = db.session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}; `fleet runs` lists them")
    return run


def run_hosts(run_id: int) -> list[RunHost]:
    return list(db.session.scalars(select(RunHost).where(RunHost.run_id == run_id).order_by(RunHost.host)))


def run_tasks(run_id: int) -> list[TaskResultRow]:
    return list(db.session.scalars(
        select(TaskResultRow).where(TaskResultRow.run_id == run_id).order_by(TaskResultRow.seq)
    ))


def run_stdout(run_id: int) -> str:
    chunks = db.session.scalars(select(RunOutput.text).where(RunOutput.run_id == run_id).order_by(RunOutput.seq))
    return "\n".join(chunks)


def list_revisions(limit: int = PAGE_SIZE) -> list[Revision]:
    return list(db.session.scalars(select(Revision).order_by(Revision.id.desc()).limit(limit)))


def get_revision(sha: str) -> Revision | None:
    return db.session.scalar(select(Revision).where(Revision.sha == sha))


def last_valid_revision() -> Revision | None:
    return db.session.scalar(
        select(Revision).where(Revision.status == "valid").order_by(Revision.fetched_at.desc(), Revision.id.desc())
    )


def approved_waiting():
    """Approvals an operator granted that the controller has not acted on yet."""
    from fleet.store.models import Approval

    return list(db.session.scalars(select(Approval).where(Approval.status == "approved").order_by(Approval.id)))


def list_approvals(limit: int = PAGE_SIZE):
    from fleet.store.models import Approval

    return list(db.session.scalars(select(Approval).order_by(Approval.id.desc()).limit(limit)))


def changed_tasks_of(run_id: int, host: str) -> list[TaskResultRow]:
    return list(db.session.scalars(select(TaskResultRow).where(
        TaskResultRow.run_id == run_id, TaskResultRow.host == host, TaskResultRow.status == "changed",
    ).order_by(TaskResultRow.seq)))


def last_converged_sha() -> str | None:
    """The revision of the newest converge run that reached its end."""
    return db.session.scalar(select(Run.revision_sha).where(
        Run.kind == "converge", Run.status.in_(("successful", "failed"))).order_by(Run.id.desc()).limit(1))
