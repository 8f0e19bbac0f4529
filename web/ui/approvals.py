"""Approvals: drift in `approve` groups waiting for an operator, with exactly the diffs approved."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from fleet.web.auth import actor, require_role
from fleet.web.ui.common import int_arg

from fleet import actions, shapes
from fleet.errors import NotFound
from fleet.store import queries
from fleet.vocabulary import ApprovalKind

bp = Blueprint("approvals", __name__, url_prefix="/approvals")

APPROVALS_PER_PAGE = 50


@bp.get("")
@require_role("viewer")
def index():
    before = int_arg("before")
    page = queries.approvals_page(None, before, APPROVALS_PER_PAGE)
    shown = page.items
    waiting = [(a.check_run_id, a.host) for a in shown if a.status == "pending" and a.kind == ApprovalKind.DRIFT]
    # What an approval covers: drift (not tasks that ran for real in a check) and the tasks check mode could not tell.
    drift = queries.approval_tasks_of_pairs(waiting)
    return render_template("approvals/index.html", approvals=shown, more=page.more, before=before, drift=drift)


@bp.post("/<int:approval_id>/approve")
@require_role("operator")
def approve(approval_id: int):
    try:
        approval = actions.approve(actor(), approval_id)
    except NotFound as exc:
        flash(str(exc), "error")
        return index(), 404
    except actions.Refused as exc:
        flash(str(exc), "error")
        return index(), 409
    flash(shapes.approved_message(approval), "info")
    return redirect(url_for("ui.approvals.index"), 303)
