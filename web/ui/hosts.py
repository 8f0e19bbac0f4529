"""Hosts: the list (filter by status and group) and one host (drift, coverage, facts, history, buttons)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from fleet.web.auth import actor, require_role
from fleet.web.ui import present
from fleet.web.ui.common import choice_arg, int_arg, or_404

from fleet import actions
from fleet.store import queries, records
from fleet.vocabulary import HOST_STATUSES, TaskStatus, covers

bp = Blueprint("hosts", __name__, url_prefix="/hosts")

HOSTS_PER_PAGE = 200
FAILURES = (TaskStatus.FAILED, TaskStatus.UNREACHABLE)
HISTORY_PER_PAGE = 20


@bp.get("")
@require_role("viewer")
def index():
    status = choice_arg("status", HOST_STATUSES)
    group = request.args.get("group", "").strip() or None
    after = request.args.get("after", "").strip() or None
    page = queries.hosts_page(status, group, after, HOSTS_PER_PAGE)
    counts = queries.count_hosts_by_status()
    return render_template(
        "hosts/index.html",
        hosts=page.items,
        more=page.more,
        status=status,
        group=group,
        after=after,
        groups=queries.inventory_groups(),
        counts=counts,
        total=sum(counts.values()),
        statuses=HOST_STATUSES,
        meanings=present.HOST_STATUS_MEANING,
    )


@bp.get("/<name>")
@require_role("viewer")
def show(name: str):
    host = or_404(queries.get_host, name)
    before = int_arg("before")
    tasks = queries.host_check_tasks(host.last_check_run_id, host.name)
    history = queries.host_history_page(host.name, before, HISTORY_PER_PAGE)
    # One read of the last check's task results, split into what explains the verdict. A task that ran for
    # real (check_mode: false) is never drift; a failure a rescue handled, or one ignore_errors hid (then it
    # is unverified), does not fail the host.
    unverified = [t for t in tasks if t.unverified]
    return render_template(
        "hosts/show.html",
        host=host,
        before=before,
        drifted=[t for t in tasks if present.is_drift(t)],
        failed=[t for t in tasks if t.status in FAILURES and not (t.rescued or t.unverified)],
        rescued=[t for t in tasks if t.rescued],
        unverified=unverified,
        accepted=[t for t in unverified if t.accepted],
        executed=[t for t in tasks if t.executed],
        history=history.items,
        more_history=history.more,
        active=[r for r in queries.active_runs() if covers(r.limit, host.name, host.group_list)],
        approvals=queries.open_approvals_of(host.name),
        kept=records.kept_locks([host.name]),
    )


@bp.post("/<name>/check")
@require_role("operator")
def check(name: str):
    host = or_404(queries.get_host, name)
    requested = actions.request_run(actor(), "check", host.name)
    run = requested.run
    if requested.joined:
        flash(f"run {run.id} queued (an identical check was already waiting; joined it)", "info")
    else:
        flash(f"run {run.id} queued: check of {host.name}", "info")
    return redirect(url_for("ui.runs.show", run_id=run.id), 303)


@bp.post("/<name>/converge")
@require_role("operator")
def converge(name: str):
    host = or_404(queries.get_host, name)
    try:
        run = actions.request_run(actor(), "converge", host.name).run
    except actions.Refused as exc:
        flash(str(exc), "error")
        return show(name), 409
    flash(f"run {run.id} queued: converge of {host.name}", "info")
    return redirect(url_for("ui.runs.show", run_id=run.id), 303)


@bp.post("/<name>/release")
@require_role("operator")
def release(name: str):
    """Free the lock a stopped run kept on the host (its work there was not confirmed ended): `fleet hosts release`."""
    host = or_404(queries.get_host, name)
    try:
        kept = actions.release_host(actor(), host.name)
    except actions.Refused:
        flash(f"{host.name} has no kept lock", "error")
        return redirect(url_for("ui.hosts.show", name=host.name), 303)
    flash(f"released the lock run {kept.run_id} kept on {host.name}", "info")
    return redirect(url_for("ui.hosts.show", name=host.name), 303)
