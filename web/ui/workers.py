"""Workers (FLEET_EXECUTOR=celery): the `fleet worker` processes seen, as `fleet workers` lists them."""

from __future__ import annotations

from flask import Blueprint, render_template
from fleet.web.auth import require_role

from fleet import __version__
from fleet.store import workers
from fleet.vocabulary import utcnow

bp = Blueprint("workers", __name__, url_prefix="/workers")


@bp.get("")
@require_role("viewer")
def index():
    """Every worker ever seen (one query): state, version against this fleet's, capacity, running shards."""
    now = utcnow()
    listed = workers.list_workers(now, __version__)
    return render_template(
        "workers/index.html",
        workers=listed,
        now=now,
        version=__version__,
        online=sum(1 for w in listed if w.state == workers.ONLINE),
        capacity=workers.capacity_of(listed),
        stale_seconds=workers.WORKER_STALE_SECONDS,
    )
