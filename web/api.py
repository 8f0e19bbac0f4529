"""The JSON API under /api/v1: hosts, runs, run requests, cancel, workers, approvals, revisions, metrics.

Authentication: `Authorization: Bearer <token>` (`fleet token create`), or a
logged-in session, which must then send its CSRF token in `X-CSRF-Token` on
every POST. Roles: viewer reads (GET, including /metrics); operator also
requests runs, cancels them and approves drift.

Errors are JSON `{"error": "..."}`:

    400  malformed request: a bad query parameter, a body that is not JSON
    401  no credentials, or a token that is unknown or revoked
    403  the role is too low (or a session POST lacks its CSRF token)
    404  no such host, run or approval
    409  the request collides with the state: converge already queued or
         running for those hosts, run already finished, approval already decided
    413  body over 1 MiB
    422  well-formed JSON whose fields are wrong

Every view costs a fixed number of SQL queries, whatever the history's length:
lists are keyset pages (`cursor` = the last id of the previous page), never OFFSET.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, jsonify, request, url_for
from fleet.web import openapi, serializers
from fleet.web.auth import actor, require_role

from fleet import __version__, actions, shapes, vocabulary
from fleet.errors import NotFound
from fleet.store import queries, workers

bp = Blueprint("api", __name__, url_prefix="/api/v1")

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_LIMIT_CHARS = 1024  # the runs.limit column's size
MAX_ID = openapi.MAX_ID  # ids and seqs past an SQL INTEGER are 404 or 400 here, not an overflow in the database
TASKS_PER_ANSWER = 1000  # task results in one answer of GET /runs/<id>; the rest page by after_seq


@bp.after_request
def bearer_challenge(response):
    """RFC 6750: a 401 names the scheme the client should use."""
    if response.status_code == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="fleet"')
    return response


@bp.url_value_preprocessor
def refuse_unstorable_values(endpoint, values):
    """What no column can hold names nothing: an id past an SQL INTEGER, a NUL character (PostgreSQL
    refuses it in text). 404 in the path, 400 in the query, where the database would fail with a 500."""
    for value in (values or {}).values():
        if isinstance(value, int) and value > MAX_ID:
            abort(404, description=f"no such id {value}; ids are at most {MAX_ID}")
        if isinstance(value, str) and "\x00" in value:
            abort(404, description="no such name: names never contain a NUL character")
    if any("\x00" in value for values_of_one in request.args.listvalues() for value in values_of_one):
        abort(400, description="query parameters cannot contain NUL characters")


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 description of this API (web/openapi.py); readable without a token."""
    return jsonify(openapi.openapi_document())


# --- hosts --------------------------------------------------------------------------


@bp.get("/hosts")
@require_role("viewer")
def list_hosts():
    """Every inventory host with its status and current drift; ?status= and ?group= filter."""
    status = _choice_arg("status", vocabulary.HOST_STATUSES)
    group = request.args.get("group") or None
    hosts = queries.inventory_hosts(status, group)
    drift = queries.verdict_tasks(hosts)  # one query for every host's drift, not one per host
    return jsonify(hosts=[_host_with_links(h, drift.get(h.name, [])) for h in hosts])


@bp.get("/hosts/<name>")
@require_role("viewer")
def show_host(name: str):
    """One host: status, drift with diffs, unverified tasks of its last check, links to its runs."""
    host = _found(queries.get_host, name, f"no host named {name!r}; GET /api/v1/hosts lists them")
    return jsonify(host=_host_with_links(host, queries.verdict_tasks([host]).get(host.name, [])))


@bp.post("/hosts/<name>/release")
@require_role("operator")
def release_host(name: str):
    """Free the lock a stopped run kept on the host (its work there could not be confirmed ended)."""
    _found(queries.get_host, name, f"no host named {name!r}; GET /api/v1/hosts lists them")
    try:
        kept = actions.release_host(actor(), name)
    except actions.Refused as exc:
        abort(409, description=str(exc))
    return jsonify(host=name, run_id=kept.run_id, reason=kept.reason)


def _host_with_links(host, drift) -> dict:
    data = shapes.host_json(host, drift)
    data["links"] = {
        "self": url_for("api.show_host", name=host.name),
        "runs": url_for("api.list_runs", host=host.name),
        "last_check_run": url_for("api.show_run", run_id=host.last_check_run_id) if host.last_check_run_id else None,
    }
    return data


# --- runs ------------------------------------------------------------------------------


@bp.get("/runs")
@require_role("viewer")
def list_runs():
    """Newest runs first, one keyset page: ?kind= ?status= ?host= ?cursor= ?limit=.

    `host` finds the runs that recorded a verdict for that host (queued runs have none yet).
    """
    kind = _choice_arg("kind", vocabulary.RUN_KINDS)
    status = _choice_arg("status", vocabulary.RUN_STATUSES)
    cursor, size = _page_args()
    page = queries.runs_page(kind=kind, status=status, host=request.args.get("host") or None, before=cursor, size=size)
    return jsonify(runs=[shapes.run_summary_json(r) for r in page], next_cursor=page.cursor())


@bp.get("/runs/<int:run_id>")
@require_role("viewer")
def show_run(run_id: int):
    """One run with its hosts, and one page of its tasks and output; ?after_seq=N starts the page after N.

    A page holds at most TASKS_PER_ANSWER tasks and about 256 KiB of output, both
    up to the same event (`last_seq`). When more follows, `more` is true and
    `output_next` / `tasks_next` give the after_seq of the next page (null
    otherwise). A live view polls with the `last_seq` it got until the run's
    status is final and `more` is false.
    """
    after = _int_arg("after_seq", minimum=0) or 0
    run = _run_or_404(run_id)
    # Read the run before the high-water mark: once it is final, every row up to the mark is there.
    upto = queries.run_last_seq(run_id)
    tasks = queries.tasks_page(run_id, after, upto, TASKS_PER_ANSWER)
    output = queries.output_page(run_id, after, upto)
    # Both lists end at the same event, so one cursor (last_seq) goes on from where both stopped.
    reached = min([page.cursor("seq") for page in (tasks, output) if page.more], default=max(upto, after))
    more = reached < upto
    return jsonify(
        **shapes.run_report_json(run, queries.run_verdicts(run_id)),
        shards=[shapes.shard_json(shard) for shard in workers.shards_of_run(run_id)],
        tasks=[shapes.task_json(t) for t in tasks if t.seq <= reached],
        stdout="\n".join(chunk.text for chunk in output if chunk.seq <= reached),
        last_seq=reached,
        more=more,
        output_next=reached if more else None,
        tasks_next=reached if more else None,
        links={"output": url_for("api.run_output", run_id=run_id, after=reached) if more else None},
    )


@bp.get("/runs/<int:run_id>/output")
@require_role("viewer")
def run_output(run_id: int):
    """One page of a run's output: ?after= (a seq, default 0) ?limit= (chunks, at most 2000, and ~256 KiB).

    Each chunk is one event's stdout ({"seq", "text"}); `next` is the after= of the next page, null at the end.
    """
    _run_or_404(run_id)
    after = _int_arg("after", minimum=0) or 0
    limit = _int_arg("limit", minimum=1, maximum=queries.OUTPUT_PAGE_CHUNKS) or queries.OUTPUT_PAGE_CHUNKS
    page = queries.output_page(run_id, after, max_chunks=limit)
    return jsonify(output=[{"seq": chunk.seq, "text": chunk.text} for chunk in page], next=page.cursor("seq"))


@bp.post("/runs")
@require_role("operator")
def request_run():
    """Queue a check or converge: {"kind": "check"|"converge", "limit": "pattern"} -> 202.

    The controller runs it; nothing runs inside this request. An identical queued
    check is joined ("joined": true). A converge gets 409 when it may overlap one
    queued or running; see queries.converge_conflict for the exact rule.
    """
    kind, limit = _run_request(_json_object())
    try:
        requested = actions.request_run(actor(), kind, limit)
    except actions.Refused as exc:
        abort(409, description=str(exc))
    run = requested.run
    body = {"run": shapes.run_json(run), "joined": requested.joined}
    return jsonify(body), 202, {"Location": url_for("api.show_run", run_id=run.id)}


@bp.post("/runs/<int:run_id>/cancel")
@require_role("operator")
def cancel_run(run_id: int):
    """Stop a queued run at once, or a running one at its next event (partial results are kept)."""
    _run_or_404(run_id)
    try:
        run, _was = actions.cancel_run(actor(), run_id)
    except actions.Refused as exc:
        abort(409, description=str(exc))
    body = {"run": shapes.run_json(run)}
    return jsonify(body), 202


# --- workers ------------------------------------------------------------------------------


@bp.get("/workers")
@require_role("viewer")
def list_workers():
    """Every `fleet worker` seen, online first (one query): state, version against this fleet's, capacity,
    running shards, last heartbeat. Empty when runs execute in the controller (FLEET_EXECUTOR=local)."""
    now = vocabulary.utcnow()
    return jsonify(
        version=__version__, workers=[shapes.worker_json(w, now) for w in workers.list_workers(now, __version__)]
    )


# --- approvals ----------------------------------------------------------------------------


@bp.get("/approvals")
@require_role("viewer")
def list_approvals():
    """Approvals newest first, one keyset page: ?status= ?cursor= ?limit=."""
    status = _choice_arg("status", vocabulary.APPROVAL_STATUSES)
    cursor, size = _page_args()
    page = queries.approvals_page(status, cursor, size)
    return jsonify(approvals=[shapes.approval_json(a) for a in page], next_cursor=page.cursor())


@bp.post("/approvals/<int:approval_id>")
@require_role("operator")
def approve(approval_id: int):
    """Approve converging exactly the drift the approval shows at its revision (the controller re-checks
    first), or, for an inventory approval, the auto converge an inventory jump held.

    The body may be empty or {"decision": "approve"}; any other decision is refused (422)
    rather than read as an approval.
    """
    if request.get_data(cache=True):
        decision = _json_object().get("decision", "approve")
        if decision != "approve":
            abort(422, description='"decision" can only be "approve"; leave a drift you reject pending')
    try:
        approval = actions.approve(actor(), approval_id)
    except NotFound:
        abort(404, description=f"no approval with id {approval_id}; GET /api/v1/approvals lists them")
    except actions.Refused as exc:  # decided already: approving twice must not look like success
        abort(409, description=str(exc))
    body = {"approval": shapes.approval_json(approval)}
    return jsonify(body)


# --- revisions and metrics -------------------------------------------------------------------


@bp.get("/revisions")
@require_role("viewer")
def list_revisions():
    """The source's state and the newest fetched revisions with their validation results."""
    state = queries.source_state()
    desired = state.desired_sha if state else None
    settings = current_app.config["FLEET_SETTINGS"]
    return jsonify(
        source=shapes.source_json(state, str(settings.repo)),
        revisions=[shapes.revision_json(r, desired) for r in queries.revisions_page()],
    )


@bp.get("/metrics")
@require_role("viewer")
def metrics():
    """Prometheus text format 0.0.4. Needs the viewer role: give Prometheus a viewer token
    (`fleet token create prometheus --role viewer`; scrape config `authorization: {credentials_file: ...}`).

    Seven queries whatever the history's length: the inventory's hosts (once), runs per kind and status
    (the queue among them) and run durations (aggregated in SQL), the runs retention folded away,
    times to fix (aggregated in SQL), the source, the workers (with their running shards).
    fleet_runs_total counts finished runs only (pruned ones included), so it never goes down;
    fleet_queue_depth shows the queue.
    """
    counts, durations = queries.run_totals()
    snapshot = serializers.MetricsSnapshot(
        now=vocabulary.utcnow(),
        hosts=queries.inventory_hosts(),
        run_counts={key: n for key, n in counts.items() if key[1] in vocabulary.RUN_FINAL_STATUSES},
        queue_depth=sum(n for (_, status), n in counts.items() if status == vocabulary.RunStatus.QUEUED),
        source=queries.source_state(),
        drift_fix=queries.drift_fix_histogram(),
        run_durations=durations,
        workers=workers.list_workers(vocabulary.utcnow(), __version__),
        executor=current_app.config["FLEET_SETTINGS"].executor,
    )
    return Response(serializers.metrics_text(snapshot), content_type=serializers.CONTENT_TYPE)


# --- request parsing ---------------------------------------------------------------------------


def _run_request(body: dict) -> tuple[str, str]:
    """The validated (kind, limit) of a run request; 422 names the field that is wrong."""
    unknown = sorted(set(body) - {"kind", "limit"})
    if unknown:
        abort(422, description=f"unknown field(s) {', '.join(unknown)}; a run request has kind and limit")
    kind = body.get("kind")
    if kind not in vocabulary.RUN_KINDS:
        abort(422, description='"kind" is required and must be "check" or "converge"')
    limit = body.get("limit")
    if limit is None:
        return kind, ""
    if not isinstance(limit, str):
        abort(422, description='"limit" must be a string: an Ansible host pattern such as "web1,web2"')
    if len(limit) > MAX_LIMIT_CHARS:
        abort(422, description=f'"limit" is longer than {MAX_LIMIT_CHARS} characters')
    if any(ord(ch) < 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF for ch in limit):
        abort(422, description='"limit" must be one line, without newlines, control characters or lone surrogates')
    return kind, limit.strip()


def _json_object() -> dict:
    if not request.is_json:
        abort(400, description="send the body as JSON, with Content-Type: application/json")
    body = request.get_json(silent=True)
    if body is None:
        abort(400, description="the body is empty or not valid JSON")
    if not isinstance(body, dict):
        abort(422, description="the body must be a JSON object")
    return body


def _choice_arg(name: str, choices: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in choices:
        abort(400, description=f"{name} must be one of {', '.join(choices)}; got {value[:40]!r}")
    return value


def _int_arg(name: str, minimum: int, maximum: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    maximum = MAX_ID if maximum is None else maximum  # past it the database would overflow: a 500
    if value is None or value < minimum or value > maximum:
        abort(400, description=f"{name} must be a whole number between {minimum} and {maximum}")
    return value


def _page_args() -> tuple[int | None, int]:
    """(cursor, page size): the cursor is the last id of the previous page."""
    return _int_arg("cursor", minimum=1), _int_arg("limit", minimum=1, maximum=MAX_PAGE) or DEFAULT_PAGE


def _run_or_404(run_id: int):
    return _found(queries.get_run, run_id, f"no run with id {run_id}; GET /api/v1/runs lists them")


def _found(lookup, key, message: str):
    """lookup(key), or a 404 whose message points at the listing endpoint."""
    try:
        return lookup(key)
    except NotFound:
        abort(404, description=message)
