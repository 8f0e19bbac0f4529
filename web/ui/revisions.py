"""Revisions: the fetched commits, which one is desired, validation errors with file and line."""

from __future__ import annotations

from flask import Blueprint, render_template
from fleet.web.auth import require_role
from fleet.web.ui.common import int_arg

from fleet.store import queries

bp = Blueprint("revisions", __name__, url_prefix="/revisions")

REVISIONS_PER_PAGE = 50


@bp.get("")
@require_role("viewer")
def index():
    before = int_arg("before")
    page = queries.revisions_page(before, REVISIONS_PER_PAGE)
    return render_template(
        "revisions/index.html", revisions=page.items, more=page.more, before=before, source=queries.source_state()
    )
