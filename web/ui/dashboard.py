"""The dashboard ("/"): counts per status, drift over time, the source, recent and active runs."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, render_template
from fleet.web.auth import require_role
from fleet.web.ui import admin, approvals, hosts, present, revisions, runs
from fleet.web.ui import workers as workers_area

from fleet import __version__
from fleet.store import queries, workers
from fleet.vocabulary import HOST_STATUSES, aware, utcnow

bp = Blueprint("ui", __name__)
for _area in (hosts.bp, runs.bp, revisions.bp, approvals.bp, admin.bp, workers_area.bp):
    bp.register_blueprint(_area)

RECENT_RUNS = 10
CHART_RUNS = 30


@bp.get("/")
@require_role("viewer")
def dashboard():
    counts = queries.count_hosts_by_status()
    source = queries.source_state()
    desired = queries.get_revision(source.desired_sha) if source and source.desired_sha else None
    runs, verdicts = queries.recent_run_verdicts(CHART_RUNS)
    points = present.drift_timeline(runs, verdicts, queries.host_statuses())
    return render_template(
        "dashboard/index.html",
        counts=counts,
        total=sum(counts.values()),
        statuses=HOST_STATUSES,
        meanings=present.HOST_STATUS_MEANING,
        source=source,
        desired=desired,
        stale=source_staleness(source),
        controller_seen=queries.controller_heartbeat(),
        chart=present.drift_chart(points),
        points=points,
        recent=queries.recent_runs(RECENT_RUNS),
        pending_approvals=queries.count_pending_approvals(),
        inventory_holds=queries.pending_inventory_approvals(),
        workers=workers_card(),
    )


def workers_card() -> dict | None:
    """The dashboard's workers card: how many are online and what they can run at once (None: no worker was
    ever seen, this fleet runs everything in the controller)."""
    listed = workers.list_workers(utcnow(), __version__)
    if not listed:
        return None
    return {
        "online": sum(1 for w in listed if w.state == workers.ONLINE),
        "capacity": workers.capacity_of(listed),
        "lost": sum(1 for w in listed if w.state == workers.LOST),
        "mismatched": sum(1 for w in listed if w.state == workers.ONLINE and not w.version_ok),
    }


def source_staleness(source) -> str:
    """Why the source may be stale ('' when it is fresh): a fetch error, or no fetch for a long while."""
    if source is None:
        return "never fetched: start the controller (fleet serve) or run fleet check"
    if source.stale:
        return f"the last fetch failed: {source.last_error}"
    poll = current_app.config["FLEET_SETTINGS"].poll_interval
    last = aware(source.last_fetch_at)
    if last and utcnow() - last > timedelta(seconds=max(3 * poll, 300)):
        since = present.ago(last).removesuffix(" ago")
        return f"no fetch for {since} (polling every {poll} s): is the controller running?"
    return ""
