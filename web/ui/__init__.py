"""The web UI: server-rendered pages, one blueprint per area.

The dashboard's blueprint is "ui" and each area is a blueprint nested in it,
so endpoints read `ui.dashboard`, `ui.hosts.show`, `ui.runs.index`, ... and
never collide with the API's. Views stay thin: read the store through
`fleet.store.queries` (a fixed number of queries per page), render.
The web never runs Ansible: buttons queue runs the controller executes.
"""

from __future__ import annotations

from flask import Flask
from fleet.web.ui import present

from fleet.shapes import ansible_path_line
from fleet.vocabulary import RUN_ACTIVE_STATUSES


def init_app(app: Flask) -> None:
    from fleet.web.ui.dashboard import bp

    app.register_blueprint(bp)
    app.jinja_env.filters.update(
        symbol=present.status_symbol,
        tone=present.status_tone,
        word=present.status_word,
        diff_lines=present.diff_lines,
        utc=present.utc,
        iso=present.iso,
        ago=present.ago,
        sha=present.short_sha,
        plain_output=present.plain_output,
        first_line=present.first_line,
        message_body=present.message_body,
        error_locations=present.error_locations,
        source_path=present.source_path,
        status_title=present.host_status_title,
        marks=present.task_marks,
        cause_explanation=present.cause_explanation,
        cause_tone=present.cause_tone,
        coverage=present.coverage,
        ansible_path=ansible_path_line,
    )
    app.jinja_env.globals.update(took=present.took, ACTIVE=RUN_ACTIVE_STATUSES)
    app.jinja_env.tests.update(drift=present.is_drift)
