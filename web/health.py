"""Liveness: answers when the process is up and the store can be read, and says how the controller fares.

It reads one row and never waits on the controller loop (which may be busy
with a long run), so its answer time measures the process, and
`controller.heartbeat_age_seconds` measures the leading controller: a
working one renews its heartbeat every few seconds, even mid-run; a stuck
one lets it age. `kept_processes` lists this data directory's kept Ansible processes (fleet.warm): pid,
age, memory and how many hosts their runs served, read from /proc and their state files. healthz answers
anyone, so it names no host: `fleet status` (the store's reader) lists them by name.
"""

from flask import Blueprint, current_app, jsonify

from fleet import warm
from fleet.store import queries
from fleet.vocabulary import utcnow

bp = Blueprint("health", __name__, url_prefix="/api/v1")


@bp.get("/healthz")
def healthz():
    state = queries.controller_state()  # reading it proves the store answers
    return jsonify(
        status="ok",
        controller=controller_health(state, current_app.extensions.get("fleet.controller")),
        kept_processes=[
            without_host_names(kept) for kept in warm.kept_processes(str(current_app.config["FLEET_SETTINGS"].data_dir))
        ],
    )


def without_host_names(kept: dict) -> dict:
    """A kept process as anyone may see it: its hosts counted, not named."""
    shown = {key: value for key, value in kept.items() if key != "hosts"}
    shown["host_count"] = len(kept.get("hosts", []))
    return shown


def controller_health(state, local_status) -> dict:
    """The leading controller's heartbeat age and identity; `standby`: this process's controller waits."""
    now = utcnow()
    age = round((now - state.heartbeat_at).total_seconds(), 1) if state.heartbeat_at else None
    leads = state.leader_id and state.leader_expires_at and state.leader_expires_at >= now
    return {
        "heartbeat_age_seconds": age,
        "leader": {"pid": state.leader_pid, "host": state.leader_host} if leads else None,
        "standby": bool(local_status and local_status.standby),
    }
