"""Runs: the history (filters, keyset pages), one run (hosts, tasks, diffs, output, live), cancel."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from fleet.web.auth import actor, require_role
from fleet.web.openapi import MAX_ID
from fleet.web.ui import present
from fleet.web.ui.common import choice_arg, int_arg, or_404

from fleet import actions, vocabulary
from fleet.store import queries, workers

bp = Blueprint("runs", __name__, url_prefix="/runs")

RUNS_PER_PAGE = 50
LIVE_ROWS = 500  # per poll; a client that is behind catches up over a few polls
LIVE_OUTPUT_BYTES = 256 * 1024  # output per poll, whatever the size of each event's chunk
TASKS_PER_PAGE = 1000  # task results on one run page; ?tasks_after= shows the next ones
DOWNLOAD_BLOCK_CHARS = 64 * 1024  # output.txt is written in blocks of about this size


@bp.url_value_preprocessor
def refuse_unstorable_values(endpoint, values):
    """What no column can hold finds nothing: a run id past an SQL INTEGER is a 404, a NUL character in a
    filter (PostgreSQL refuses it in text) a 400, where the database would fail with a 500."""
    if (values or {}).get("run_id", 0) > MAX_ID:
        abort(404, description=f"no run with id {values['run_id']}")
    if any("\x00" in value for values_of_one in request.args.listvalues() for value in values_of_one):
        abort(400, description="filters cannot contain NUL characters")


@bp.get("")
@require_role("viewer")
def index():
    filters = {
        "kind": choice_arg("kind", vocabulary.RUN_KINDS),
        "status": choice_arg("status", vocabulary.RUN_STATUSES),
        "trigger": choice_arg("trigger", vocabulary.TRIGGERS),
        "host": request.args.get("host", "").strip() or None,
    }
    before, after = int_arg("before"), int_arg("after")
    page = queries.runs_page(**filters, before=before, after=after, size=RUNS_PER_PAGE)
    # Paging up (after=), `more` says newer runs exist and older ones do by construction; paging down, the reverse.
    has_older, has_newer = (True, page.more) if after else (page.more, before is not None)
    return render_template(
        "runs/index.html",
        runs=page.items,
        filters=filters,
        has_older=has_older,
        has_newer=has_newer,
        kinds=vocabulary.RUN_KINDS,
        statuses=vocabulary.RUN_STATUSES,
        triggers=vocabulary.TRIGGERS,
    )


@bp.get("/<int:run_id>")
@require_role("viewer")
def show(run_id: int):
    """One run: hosts, one page of task results (?tasks_after=), and the first page of output (or, live, its end).

    Output and tasks come in pages, so a run with 20,000 output chunks or
    thousands of task results costs this page what a small one does.
    """
    run = or_404(queries.get_run, run_id)
    hosts = queries.run_hosts(run_id)
    tasks_after = int_arg("tasks_after") or 0
    tasks = queries.tasks_page(run_id, tasks_after, size=TASKS_PER_PAGE)
    by_host: dict[str, list] = {}
    for task in tasks:
        by_host.setdefault(task.host, []).append(task)
    live = vocabulary.is_active(run.status)
    # Live, the page starts from the end of the output and the live view appends; ended, from the start.
    output = queries.output_tail(run_id) if live else queries.output_page(run_id)
    return render_template(
        "runs/show.html",
        run=run,
        hosts=hosts,
        tasks=tasks.items,
        by_host=by_host,
        live=live,
        placement=workers.run_placement(run_id),
        meanings=present.HOST_STATUS_MEANING,
        tasks_after=tasks_after,
        tasks_next=tasks.cursor("seq"),
        stdout=present.plain_output("\n".join(chunk.text for chunk in output)),
        output_more=output.more,
        output_next=output.cursor("seq"),
        last_output_seq=output.items[-1].seq if output.items else 0,
        last_task_seq=max((t.seq for t in tasks), default=tasks_after),
    )


@bp.get("/<int:run_id>/output")
@require_role("viewer")
def output(run_id: int):
    """One page of a run's Ansible output (?after= the last event shown), with a link to the next page."""
    run = or_404(queries.get_run, run_id)
    after = int_arg("after") or 0
    page = queries.output_page(run_id, after)
    return render_template(
        "runs/output.html",
        run=run,
        after=after,
        next_after=page.cursor("seq"),
        stdout=present.plain_output("\n".join(chunk.text for chunk in page)),
        first_seq=page.items[0].seq if page.items else None,
        last_seq=page.items[-1].seq if page.items else None,
    )


@bp.get("/<int:run_id>/output.txt")
@require_role("viewer")
def output_text(run_id: int):
    """The run's whole output as a text file, streamed from the store a batch of chunks at a time.

    Vault values were masked before the output was stored; colour codes are taken out here.
    """
    or_404(queries.get_run, run_id)
    blocks = _blocks(present.plain_output(piece) for piece in queries.iter_run_stdout(run_id))
    response = Response(stream_with_context(blocks), mimetype="text/plain")
    response.headers["Content-Disposition"] = f"attachment; filename=run-{run_id}.txt"
    return response


def _blocks(pieces, size: int = DOWNLOAD_BLOCK_CHARS):
    """Pieces joined into blocks of about `size` characters, the text ending with a newline: fewer, larger writes."""
    block: list[str] = []
    held, seen = 0, False
    for piece in pieces:
        block.append(piece)
        held, seen = held + len(piece), True
        if held >= size:
            yield "".join(block)
            block, held = [], 0
    if seen:
        yield "".join(block) + "\n"


@bp.get("/<int:run_id>/live")
@require_role("viewer")
def live(run_id: int):
    """What the run page has not shown yet: {status, done, tasks, output, after_task, after_output}."""
    run = or_404(queries.get_run, run_id)
    after_task, after_output = int_arg("after_task") or 0, int_arg("after_output") or 0
    tasks = queries.task_results_after(run_id, after_task, LIVE_ROWS)
    output = queries.output_page(run_id, after_output, max_bytes=LIVE_OUTPUT_BYTES, max_chunks=LIVE_ROWS)
    return jsonify(
        id=run.id,
        status=run.status,
        done=not vocabulary.is_active(run.status),
        symbol=present.status_symbol(run.status),
        tone=present.status_tone(run.status),
        took=present.took(run.started_at, run.finished_at) if run.started_at else "—",
        started=present.ago(run.started_at) if run.started_at else "not yet",
        started_utc=present.utc(run.started_at),
        revision=present.short_sha(run.revision_sha),
        tasks=[
            {
                "seq": t.seq,
                "host": t.host,
                "task": t.task,
                "action": t.action,
                "status": t.status,
                "symbol": present.status_symbol(t.status),
                "tone": present.status_tone(t.status),
                "unverified": bool(t.unverified),
                "reason": (t.reason or t.note or None) if t.unverified else None,
                "accepted": bool(t.accepted),
                "executed": bool(t.executed),
                "rescued": bool(t.rescued),
                "handler": bool(t.handler),
                "cause": t.cause or None,
                "flapping": bool(t.flapping),
                "drift": present.is_drift(t),
                "marks": present.task_mark_json(t),
                "duration": round(t.duration or 0, 2),
            }
            for t in tasks
        ],
        output=[present.plain_output(chunk.text) for chunk in output],
        after_task=tasks[-1].seq if tasks else after_task,
        after_output=output.items[-1].seq if output.items else after_output,
        more=output.more or len(tasks) >= LIVE_ROWS,  # the client is behind: poll again at once
    )


@bp.post("/<int:run_id>/cancel")
@require_role("operator")
def cancel(run_id: int):
    run = or_404(queries.get_run, run_id)
    try:
        actions.cancel_run(actor(), run.id)
    except actions.Refused as exc:
        flash(str(exc), "error")
        return show(run_id), 409
    flash(f"run {run.id}: cancel requested", "info")
    return redirect(url_for("ui.runs.show", run_id=run.id), 303)


@bp.post("/check")
@require_role("operator")
def check_all():
    """Queue a check of every host (joins an identical queued one)."""
    if request.form.get("kind", "check") != "check":
        abort(400, description="only a check of every host can be asked for here; converge a host from its page")
    requested = actions.request_run(actor(), "check")
    run, joined = requested.run, requested.joined
    flash(f"run {run.id} queued: check of every host" + (" (joined the one already waiting)" if joined else ""), "info")
    return redirect(url_for("ui.runs.show", run_id=run.id), 303)
