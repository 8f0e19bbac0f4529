"""Pruning: what fleet forgets after `retention.days`, and what it keeps whatever its age.

    prune(settings, retention, now, dry_run) -> PruneReport

Runs older than `retention.days` (by when they ended, or were queued) go,
with their host results, task results and output, in batches of
PRUNE_BATCH runs per transaction, so a big prune never holds SQLite's write
lock for long. Whatever its age, a run stays when it is:

- one of each host's newest `keep_per_host` checks or converges, or the
  converge that last brought it in sync,
- the run a host's current status points to (`Host.last_check_run_id`),
- queued or running,
- the check or converge of an approval still open (pending or approved).

Audit entries go after max(retention.days, AUDIT_MIN_DAYS): the audit log
answers "who did this?" long after the runs themselves are gone.

Exports (`<data dir>/revisions/<sha>`, one tree per fetched revision) go
unless they are the desired revision's or an active run's, or younger than
EXPORT_GRACE (a fetch or a CLI run may be about to use one it just wrote).
The git mirror keeps every commit, and an export is written again on
demand (`revisions.sync_source`, `revisions.desired_state`). Leftover staging
directories of interrupted exports and run directories (`runs/<id>`, the
private data of a run its process did not live to clean up) go too.

Revision rows stay: they are the small history of what was fetched and why
a commit was rejected, and a rejected sha must stay known so it is never
validated (or run) again.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from fleet.policy import Retention
from fleet.source import export_path
from fleet.store import queries
from fleet.store.accounts import audit
from fleet.store.db import db
from fleet.store.models import Approval, AuditEntry, Host, Run, RunHost, RunOutput, TaskResultRow
from fleet.store.records import fold_pruned_runs, size_text
from fleet.vocabulary import APPROVAL_OPEN_STATUSES, RUN_ACTIVE_STATUSES, HostStatus, RunKind

if TYPE_CHECKING:
    from fleet.settings import Settings

PRUNE_BATCH = 500  # runs (or audit entries) per transaction
# Between two write transactions the prune steps aside this long: SQLite's busy handler sleeps
# while it waits, so a writer that came back at once could keep the controller's heartbeat waiting.
PRUNE_PAUSE_SECONDS = 0.1
AUDIT_MIN_DAYS = 365
EXPORT_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed, or with `dry_run` would remove; byte counts are of the stored text."""

    dry_run: bool
    cutoff: datetime
    audit_cutoff: datetime
    runs: int = 0
    run_hosts: int = 0
    task_results: int = 0
    output_chunks: int = 0
    run_bytes: int = 0  # output, diffs and messages of the pruned runs
    kept_runs: int = 0  # runs older than the cutoff kept on purpose (see the module docstring)
    audit_entries: int = 0
    exports: int = 0
    export_bytes: int = 0
    run_dirs: int = 0
    export_names: list[str] = field(default_factory=list)
    stopped_early: bool = False  # `go_on` said stop (the controller lost its lead): the rest goes next time

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cutoff"], data["audit_cutoff"] = self.cutoff.isoformat(), self.audit_cutoff.isoformat()
        return data

    def describe(self) -> str:
        """Lines for people: what went (or would go) and what was kept."""
        verb = "would prune" if self.dry_run else "pruned"
        return "\n".join(
            [
                f"{verb} {self.runs} run(s) older than {self.cutoff:%Y-%m-%d %H:%M} UTC: {self.run_hosts} host "
                f"result(s), {self.task_results} task result(s), {self.output_chunks} output chunk(s), "
                f"{size_text(self.run_bytes)} of output and diffs",
                f"kept {self.kept_runs} older run(s): each host's last check and converge, the runs host statuses "
                "point to, and runs of open approvals",
                f"{verb} {self.audit_entries} audit entr{'y' if self.audit_entries == 1 else 'ies'} older than "
                f"{self.audit_cutoff:%Y-%m-%d} (the audit log keeps at least {AUDIT_MIN_DAYS} days)",
                f"{verb} {self.exports} revision export(s), {size_text(self.export_bytes)}, and {self.run_dirs} "
                "leftover run directorie(s); the desired revision's and active runs' exports are kept",
            ]
            + (["stopped early; the rest is pruned next time"] if self.stopped_early else [])
        )


def prune(
    settings: Settings,
    retention: Retention,
    now: datetime,
    dry_run: bool = False,
    batch: int = PRUNE_BATCH,
    go_on: Callable[[], bool] = lambda: True,
    actor: str = "",
) -> PruneReport:
    """Remove (or with `dry_run` count) what `retention` lets go at `now`: runs, audit entries, exports.

    `go_on` is called after each write transaction: the controller renews its
    heartbeat and leader lock there, and a False stops the prune (what is left
    goes next time). A prune that removed something is audited as `actor`'s.
    """
    cutoff = now - timedelta(days=retention.days)
    audit_cutoff = now - timedelta(days=max(retention.days, AUDIT_MIN_DAYS))
    between = _Between(go_on)
    runs = _prune_runs(cutoff, retention.keep_per_host, dry_run, batch, between)
    audit_entries = _prune_audit(audit_cutoff, dry_run, batch, between)
    exports = _prune_exports(settings, now, dry_run)
    run_dirs = _prune_run_dirs(settings, now, dry_run)
    report = PruneReport(
        dry_run=dry_run,
        cutoff=cutoff,
        audit_cutoff=audit_cutoff,
        audit_entries=audit_entries,
        run_dirs=run_dirs,
        stopped_early=between.stopped,
        **runs,
        **exports,
    )
    if not dry_run and (report.runs or report.audit_entries or report.exports):
        audit(
            actor or "fleet",
            "store.prune",
            f"runs before {cutoff:%Y-%m-%d}",
            f"{report.runs} runs, {report.audit_entries} audit entries, {report.exports} exports",
        )
    return report


# --- runs ------------------------------------------------------------------------------------------


def protected_runs(keep_per_host: int) -> set[int]:
    """Ids of the runs retention keeps whatever their age (active runs are left out by the prune's query)."""
    newest = (
        select(
            RunHost.run_id,
            func.row_number()
            .over(partition_by=(RunHost.host, Run.kind), order_by=RunHost.run_id.desc())
            .label("newness"),
        )
        .join(Run, Run.id == RunHost.run_id)
        .subquery()
    )
    kept = set(db.session.scalars(select(newest.c.run_id).where(newest.c.newness <= keep_per_host)))
    # The converge that last brought each host in sync explains its last converged revision, even
    # when converges that failed came after it.
    kept.update(
        db.session.scalars(
            select(func.max(RunHost.run_id))
            .join(Run, Run.id == RunHost.run_id)
            .where(Run.kind == RunKind.CONVERGE, RunHost.status == HostStatus.IN_SYNC)
            .group_by(RunHost.host)
        )
    )
    kept.update(db.session.scalars(select(Host.last_check_run_id).where(Host.last_check_run_id.is_not(None))))
    for check, converge in db.session.execute(
        select(Approval.check_run_id, Approval.converge_run_id).where(Approval.status.in_(APPROVAL_OPEN_STATUSES))
    ):
        kept.update(run_id for run_id in (check, converge) if run_id)
    return kept


class _Between:
    """What happens between two write transactions of a prune: a pause for other writers, and `go_on`."""

    def __init__(self, go_on: Callable[[], bool]):
        self.go_on = go_on
        self.stopped = False

    def __call__(self) -> bool:
        time.sleep(PRUNE_PAUSE_SECONDS)
        self.stopped = self.stopped or not self.go_on()
        return not self.stopped


def _prune_runs(cutoff: datetime, keep_per_host: int, dry_run: bool, batch: int, between: _Between) -> dict[str, Any]:
    kept = protected_runs(keep_per_host)
    totals = {"runs": 0, "run_hosts": 0, "task_results": 0, "output_chunks": 0, "run_bytes": 0, "kept_runs": 0}
    after = 0
    while not between.stopped:
        ids = _old_runs(cutoff, after, batch)
        if not ids:
            break
        after = ids[-1]
        doomed = [run_id for run_id in ids if run_id not in kept]
        totals["kept_runs"] += len(ids) - len(doomed)
        if doomed:
            for name, value in _measure_runs(doomed).items():
                totals[name] += value
            if not dry_run:
                _delete_runs(doomed)
                between()
    return totals


def _old_runs(cutoff: datetime, after: int, batch: int) -> list[int]:
    """The next `batch` ids above `after` of ended runs that ended (or were queued) before `cutoff`."""
    ended = func.coalesce(Run.finished_at, Run.created_at)
    return list(
        db.session.scalars(
            select(Run.id)
            .where(Run.id > after, ended < cutoff, Run.status.not_in(RUN_ACTIVE_STATUSES))
            .order_by(Run.id)
            .limit(batch)
        )
    )


def _measure_runs(run_ids: list[int]) -> dict[str, Any]:
    """Rows and stored text of these runs: what pruning them frees (three queries)."""
    hosts = db.session.scalar(select(func.count()).select_from(RunHost).where(RunHost.run_id.in_(run_ids)))
    tasks, task_bytes = db.session.execute(
        select(
            func.count(), func.coalesce(func.sum(func.length(TaskResultRow.diff) + func.length(TaskResultRow.note)), 0)
        ).where(TaskResultRow.run_id.in_(run_ids))
    ).one()
    chunks, output_bytes = db.session.execute(
        select(func.count(), func.coalesce(func.sum(func.length(RunOutput.text)), 0)).where(
            RunOutput.run_id.in_(run_ids)
        )
    ).one()
    return {
        "runs": len(run_ids),
        "run_hosts": hosts or 0,
        "task_results": tasks,
        "output_chunks": chunks,
        "run_bytes": int(task_bytes) + int(output_bytes),
    }


def _delete_runs(run_ids: list[int]) -> None:
    """One transaction: the runs and their rows (deleted explicitly, whether or not the database cascades)."""
    _end_reads()
    try:
        fold_pruned_runs(run_ids)  # the metrics keep counting them (counters never go down)
        for model in (RunOutput, TaskResultRow, RunHost):
            db.session.execute(delete(model).where(model.run_id.in_(run_ids)))
        # A run that became active since it was read (it cannot, once ended) is never deleted.
        db.session.execute(delete(Run).where(Run.id.in_(run_ids), Run.status.not_in(RUN_ACTIVE_STATUSES)))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


def _end_reads() -> None:
    """Close the read transaction before writing: in SQLite (WAL) a transaction that read an older
    snapshot cannot become a writer once another process has written; a fresh one waits its turn."""
    db.session.commit()


# --- the audit log -------------------------------------------------------------------------------------


def _prune_audit(cutoff: datetime, dry_run: bool, batch: int, between: _Between) -> int:
    old = AuditEntry.at < cutoff
    if dry_run:
        return db.session.scalar(select(func.count()).select_from(AuditEntry).where(old)) or 0
    removed = 0
    while not between.stopped:
        ids = list(db.session.scalars(select(AuditEntry.id).where(old).order_by(AuditEntry.id).limit(batch)))
        if not ids:
            return removed
        _end_reads()
        db.session.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids)))
        db.session.commit()
        removed += len(ids)
        between()
    return removed


# --- files: revision exports and leftover run directories -----------------------------------------------


def exports_in_use() -> set[str]:
    """Shas whose export must stay: the desired revision and every queued or running run's."""
    shas = {
        sha
        for sha in db.session.scalars(
            select(Run.revision_sha).where(Run.status.in_(RUN_ACTIVE_STATUSES), Run.revision_sha.is_not(None))
        )
        if sha is not None  # what the query asked for already; said again for the type
    }
    desired = queries.desired_sha()
    return shas | ({desired} if desired else set())


def _prune_exports(settings: Settings, now: datetime, dry_run: bool) -> dict[str, Any]:
    root = export_path(settings, "x").parent
    keep = exports_in_use()
    doomed = [path for path in _entries(root) if path.name not in keep and _older_than(path, now - EXPORT_GRACE)]
    sizes = [_tree_bytes(path) for path in doomed]
    if not dry_run:
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
    return {"exports": len(doomed), "export_bytes": sum(sizes), "export_names": sorted(p.name for p in doomed)}


def _prune_run_dirs(settings: Settings, now: datetime, dry_run: bool) -> int:
    """`runs/<id>` directories of runs no longer active (a run removes its own; a killed one cannot)."""
    root = settings.data_dir / "runs"
    active = {str(run_id) for run_id in db.session.scalars(select(Run.id).where(Run.status.in_(RUN_ACTIVE_STATUSES)))}
    doomed = [path for path in _entries(root) if path.name not in active and _older_than(path, now - EXPORT_GRACE)]
    if not dry_run:
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
    return len(doomed)


def _entries(root: Path) -> list[Path]:
    return [path for path in root.iterdir() if path.is_dir() and not path.is_symlink()] if root.is_dir() else []


def _older_than(path: Path, moment: datetime) -> bool:
    try:
        return path.stat().st_mtime < moment.timestamp()
    except OSError:  # gone already
        return False


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total
