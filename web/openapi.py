"""The OpenAPI 3.1 description of the JSON API, served without authentication at GET /api/v1/openapi.json.

Written by hand beside the views it describes (web/api.py, web/hooks.py,
web/health.py) and the shapes they return (fleet/shapes.py), and held to
them by tests/web/test_openapi.py, which runs schemathesis against the app
with a real token: every operation, every status code it answers must be
listed here, every body must match its schema. Enumerations come from
fleet.vocabulary, so a new status shows up here by itself. Pure: builds a
dict, no Flask.
"""

from __future__ import annotations

from fleet import vocabulary

MAX_ID = 2**31 - 1  # the largest value of an SQL INTEGER column (PostgreSQL's is 32-bit); ids and seqs fit
MAX_PAGE = 200  # web/api.py's page limit
OUTPUT_PAGE_CHUNKS = 2000  # fleet.store.queries.OUTPUT_PAGE_CHUNKS
MAX_LIMIT_CHARS = 1024  # web/api.py's MAX_LIMIT_CHARS: the runs.limit column

ERRORS = {
    "400": "Malformed request: a bad query parameter, or a body that is not JSON.",
    "401": "No credentials, or a bearer token that is unknown, revoked or expired (`WWW-Authenticate: Bearer`). "
    "A bad token is refused on every path, even those that need none.",
    "403": "The role is too low (or a browser session's POST lacks its CSRF token).",
    "404": "No such host, run or approval.",
    "409": "The request collides with the state (see the operation).",
    "413": "The body is over 1 MiB; it is refused before it is read.",
    "422": "Well-formed JSON whose fields are wrong; the error names the field.",
    "429": "Too many failed bearer tokens from this address lately; `Retry-After` says when to try again.",
}
# Every caller may send a token, and a bad one is answered 401, or 429 once too many came from its address.
ANYONE = ("401", "429")
VIEWER = ("401", "429")  # viewer is the lowest role: a valid token always may read
OPERATOR = ("401", "403", "429")


def openapi_document() -> dict:
    """The whole document, a JSON-ready dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fleet API",
            "version": "1",
            "description": "GitOps for Ansible fleets: hosts, runs, run requests, approvals, revisions, metrics. "
            "Create a token with `fleet token create NAME --role viewer|operator|admin`. Lists "
            "are keyset pages: pass the `next_cursor` you got as `cursor`. Errors are "
            '`{"error": "..."}` saying what to do next.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": _security_schemes(),
            "schemas": _schemas(),
            "responses": {code: _error_response(text) for code, text in ERRORS.items()},
        },
    }


def _paths() -> dict:
    return {
        "/api/v1/openapi.json": {"get": _openapi_operation()},
        "/api/v1/healthz": {"get": _healthz_operation()},
        "/api/v1/hosts": {"get": _list_hosts()},
        "/api/v1/hosts/{name}": {"get": _show_host()},
        "/api/v1/hosts/{name}/release": {"post": _release_host()},
        "/api/v1/runs": {"get": _list_runs(), "post": _request_run()},
        "/api/v1/runs/{run_id}": {"get": _show_run()},
        "/api/v1/runs/{run_id}/output": {"get": _run_output()},
        "/api/v1/runs/{run_id}/cancel": {"post": _cancel_run()},
        "/api/v1/workers": {"get": _list_workers()},
        "/api/v1/approvals": {"get": _list_approvals()},
        "/api/v1/approvals/{approval_id}": {"post": _approve()},
        "/api/v1/revisions": {"get": _list_revisions()},
        "/api/v1/metrics": {"get": _metrics()},
        "/api/v1/hooks/git": {"post": _git_push()},
    }


# --- building blocks --------------------------------------------------------------------


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _maybe(schema: dict) -> dict:
    """The schema, or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def _string_or_null() -> dict:
    return {"type": ["string", "null"]}


def _int_or_null() -> dict:
    return {"type": ["integer", "null"]}


def _object(properties: dict, required: tuple[str, ...] | None = None) -> dict:
    """An object with these properties, all of them required unless `required` says which."""
    return {"type": "object", "properties": properties, "required": list(properties if required is None else required)}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error_response(description: str) -> dict:
    return _json(_ref("Error"), description)


def _errors(*codes: str) -> dict:
    return {code: {"$ref": f"#/components/responses/{code}"} for code in codes}


def _operation(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict,
    *,
    role: str | None,
    parameters: list | None = None,
    body: dict | None = None,
) -> dict:
    operation = {"operationId": op_id, "summary": summary, "tags": [tag], "responses": responses}
    if role is None:
        operation["security"] = [{}, {"bearer": []}]  # none needed; a token sent is still checked
    else:
        operation["description"] = f"Needs the **{role}** role (or higher)."
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = body
    return operation


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path_id(name: str, what: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"the {what}'s id",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "example": 1,
    }


def _enum(values) -> dict:
    return {"type": "string", "enum": [str(v) for v in values]}


def _count(minimum: int = 0, maximum: int = MAX_ID) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def _page_parameters() -> list:
    return [
        _query("cursor", _count(1), "the `next_cursor` of the previous page (the last id it held)"),
        _query("limit", _count(1, MAX_PAGE), "page size, default 50"),
    ]


# --- operations -----------------------------------------------------------------------------


def _openapi_operation() -> dict:
    return _operation(
        "openapi",
        "This document",
        "meta",
        {"200": _json({"type": "object"}, "The OpenAPI 3.1 document."), **_errors(*ANYONE)},
        role=None,
    )


def _healthz_operation() -> dict:
    return _operation(
        "healthz",
        "Liveness, and how the leading controller fares",
        "meta",
        {"200": _json(_ref("Health"), "The process answers and the store can be read."), **_errors(*ANYONE)},
        role=None,
    )


def _list_hosts() -> dict:
    parameters = [
        _query("status", _enum(vocabulary.HOST_STATUSES), "only hosts with this status"),
        _query("group", {"type": "string"}, "only hosts of this inventory group"),
    ]
    return _operation(
        "listHosts",
        "Every inventory host with its status and current drift",
        "hosts",
        {
            "200": _json(_object({"hosts": {"type": "array", "items": _ref("Host")}}), "The hosts."),
            **_errors("400", *VIEWER),
        },
        role="viewer",
        parameters=parameters,
    )


def _show_host() -> dict:
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "the inventory host name",
        "example": "web1",
    }
    return _operation(
        "showHost",
        "One host: status, drift with diffs, unverified tasks, links",
        "hosts",
        {"200": _json(_object({"host": _ref("Host")}), "The host."), **_errors("404", *VIEWER)},
        role="viewer",
        parameters=[name],
    )


def _release_host() -> dict:
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "the inventory host name",
        "example": "web1",
    }
    released = _object({"host": {"type": "string"}, "run_id": {"type": "integer"}, "reason": {"type": "string"}})
    return _operation(
        "releaseHost",
        "Free a host's lock kept by a stopped run whose work there could not be "
        "confirmed ended (`fleet hosts release`)",
        "hosts",
        {
            "200": _json(released, "Released; the next run may take the host."),
            "409": _error_response("The host has no kept lock."),
            **_errors("404", *OPERATOR),
        },
        role="operator",
        parameters=[name],
    )


def _list_runs() -> dict:
    parameters = [
        _query("kind", _enum(vocabulary.RUN_KINDS), "only runs of this kind"),
        _query("status", _enum(vocabulary.RUN_STATUSES), "only runs with this status"),
        _query("host", {"type": "string"}, "only runs that recorded a verdict for this host"),
        *_page_parameters(),
    ]
    page = _object({"runs": {"type": "array", "items": _ref("RunSummary")}, "next_cursor": _int_or_null()})
    return _operation(
        "listRuns",
        "Runs, newest first, one keyset page",
        "runs",
        {"200": _json(page, "One page; `next_cursor` is null on the last."), **_errors("400", *VIEWER)},
        role="viewer",
        parameters=parameters,
    )


def _request_run() -> dict:
    request = _object(
        {
            "kind": _enum(vocabulary.RUN_KINDS),
            "limit": {
                "type": ["string", "null"],
                "maxLength": MAX_LIMIT_CHARS,
                "pattern": "^[^\\x00-\\x1f\\x7f]*$",
                "description": "an Ansible host pattern such as `web1,web2`; empty or absent: every host",
            },
        },
        required=("kind",),
    )
    request["additionalProperties"] = False
    body = {"required": True, "content": {"application/json": {"schema": request}}}
    location = {"Location": {"description": "the run's URL", "schema": {"type": "string"}}}
    accepted = _json(
        _object({"run": _ref("Run"), "joined": {"type": "boolean"}}),
        "Queued for the controller; `joined`: an identical queued check was joined instead.",
        location,
    )
    return _operation(
        "requestRun",
        "Queue a check or a converge (nothing runs inside the request)",
        "runs",
        {
            "202": accepted,
            "409": _error_response(
                "A converge that may overlap one queued or running: the same or no limit, or a host "
                "locked by a running converge."
            ),
            **_errors("400", "413", "422", *OPERATOR),
        },
        role="operator",
        body=body,
    )


def _show_run() -> dict:
    parameters = [
        _path_id("run_id", "run"),
        _query("after_seq", _count(0), "start the tasks and output after this event (live views)"),
    ]
    return _operation(
        "showRun",
        "One run, its hosts' verdicts and one page of its tasks and output",
        "runs",
        {
            "200": _json(_ref("RunReport"), "The run; `more` is true while pages follow."),
            **_errors("400", "404", *VIEWER),
        },
        role="viewer",
        parameters=parameters,
    )


def _run_output() -> dict:
    parameters = [
        _path_id("run_id", "run"),
        _query("after", _count(0), "the `next` of the previous page; default 0"),
        _query("limit", _count(1, OUTPUT_PAGE_CHUNKS), "chunks per page (also capped near 256 KiB)"),
    ]
    page = _object({"output": {"type": "array", "items": _ref("OutputChunk")}, "next": _int_or_null()})
    return _operation(
        "runOutput",
        "One page of a run's output",
        "runs",
        {"200": _json(page, "One page; `next` is null at the end."), **_errors("400", "404", *VIEWER)},
        role="viewer",
        parameters=parameters,
    )


def _cancel_run() -> dict:
    return _operation(
        "cancelRun",
        "Cancel a queued run at once, or a running one at its next event",
        "runs",
        {
            "202": _json(_object({"run": _ref("Run")}), "Cancel requested; partial results are kept."),
            "409": _error_response("The run has ended already."),
            **_errors("404", *OPERATOR),
        },
        role="operator",
        parameters=[_path_id("run_id", "run")],
    )


def _list_workers() -> dict:
    listing = _object(
        {
            "version": {"type": "string", "description": "this fleet's version, which workers must run"},
            "workers": {"type": "array", "items": _ref("Worker")},
        }
    )
    return _operation(
        "listWorkers",
        "The `fleet worker` processes seen, online first",
        "workers",
        {
            "200": _json(listing, "Every worker ever seen; empty when runs execute in the controller."),
            **_errors(*VIEWER),
        },
        role="viewer",
    )


def _list_approvals() -> dict:
    parameters = [
        _query("status", _enum(vocabulary.APPROVAL_STATUSES), "only approvals with this status"),
        *_page_parameters(),
    ]
    page = _object({"approvals": {"type": "array", "items": _ref("Approval")}, "next_cursor": _int_or_null()})
    return _operation(
        "listApprovals",
        "Approvals, newest first, one keyset page",
        "approvals",
        {"200": _json(page, "One page; `next_cursor` is null on the last."), **_errors("400", *VIEWER)},
        role="viewer",
        parameters=parameters,
    )


def _approve() -> dict:
    decision = _object({"decision": {"type": "string", "const": "approve"}}, required=())
    body = {
        "required": False,
        "description": 'empty, or `{"decision": "approve"}`; any other decision is 422',
        "content": {"application/json": {"schema": decision}},
    }
    return _operation(
        "approve",
        "Approve converging exactly the drift shown (re-checked first)",
        "approvals",
        {
            "200": _json(_object({"approval": _ref("Approval")}), "Approved."),
            "409": _error_response("The approval was decided already."),
            **_errors("400", "404", "413", "422", *OPERATOR),
        },
        role="operator",
        parameters=[_path_id("approval_id", "approval")],
        body=body,
    )


def _list_revisions() -> dict:
    listing = _object({"source": _ref("Source"), "revisions": {"type": "array", "items": _ref("Revision")}})
    return _operation(
        "listRevisions",
        "The source's state and the newest revisions",
        "revisions",
        {"200": _json(listing, "Source and revisions."), **_errors(*VIEWER)},
        role="viewer",
    )


def _metrics() -> dict:
    text = {
        "description": "Prometheus text exposition format 0.0.4.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    return _operation(
        "metrics",
        "Prometheus metrics (give Prometheus a viewer token)",
        "meta",
        {"200": text, **_errors(*VIEWER)},
        role="viewer",
    )


def _git_push() -> dict:
    headers = [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": text}
        for name, text in (
            ("X-Hub-Signature-256", "GitHub: `sha256=` HMAC-SHA256 of the body"),
            ("X-Gitea-Signature", "Gitea: hex HMAC-SHA256 of the body"),
            ("X-Gitlab-Token", "GitLab: the shared secret"),
        )
    ]
    body = {
        "required": False,
        "description": "the push payload; never read, only signed",
        "content": {"application/json": {"schema": {}}},
    }
    operation = _operation(
        "gitPush",
        "A push notification: asks the controller to fetch now",
        "hooks",
        {
            "202": _json(_object({"status": {"type": "string"}}), "Fetch requested."),
            "401": _error_response("Missing or bad webhook signature (or a bad bearer token)."),
            "403": _error_response("The webhook is off: FLEET_WEBHOOK_SECRET is not set."),
            **_errors("413", "429"),
        },
        role=None,
        parameters=headers,
        body=body,
    )
    operation["security"] = [{}]  # signed by HMAC or a shared token, not by a bearer token
    return operation


# --- schemas ----------------------------------------------------------------------------------


def _security_schemes() -> dict:
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "`fleet token create NAME --role viewer|operator|admin` prints one, once.",
        }
    }


def _schemas() -> dict:
    return {
        "Error": _object({"error": {"type": "string"}}),
        "Coverage": _object({"verified": _count(), "total": _count()}),
        "Health": _health_schema(),
        "Run": _run_schema(),
        "RunSummary": _run_summary_schema(),
        "RunHost": _run_host_schema(),
        "RunReport": _run_report_schema(),
        "Task": _task_schema(),
        "OutputChunk": _object({"seq": _count(), "text": {"type": "string"}}),
        "VerdictLists": _verdict_lists_schema(),
        "Host": _host_schema(),
        "Revision": _revision_schema(),
        "Source": _source_schema(),
        "Approval": _approval_schema(),
        "Worker": _worker_schema(),
        "Shard": _shard_schema(),
    }


def _health_schema() -> dict:
    leader = _maybe(_object({"pid": _int_or_null(), "host": _string_or_null()}))
    controller = _object(
        {"heartbeat_age_seconds": {"type": ["number", "null"]}, "leader": leader, "standby": {"type": "boolean"}}
    )
    kept = _object(
        {
            "pid": _count(1),
            "age_seconds": {"type": ["number", "null"]},
            "rss_kib": _int_or_null(),
            "pss_kib": {**_int_or_null(), "description": "with its Mitogen multiplexers"},
            "strategy": _string_or_null(),
            "multiplexers": {"type": "array", "items": _count(1)},
            "runs": _count(),
            "last_run_at": {"type": ["number", "null"], "description": "seconds since the epoch"},
            "host_count": {
                **_count(),
                "description": "hosts of the runs it served (named by `fleet status` only: healthz answers anyone)",
            },
        }
    )
    return _object(
        {
            "status": {"type": "string", "const": "ok"},
            "controller": controller,
            "kept_processes": {
                "type": "array",
                "items": kept,
                "description": "this data directory's kept Ansible processes",
            },
        }
    )


def _run_schema() -> dict:
    timestamp = {"type": ["string", "null"], "description": "ISO 8601, UTC"}
    return _object(
        {
            "id": _count(1),
            "kind": _enum(vocabulary.RUN_KINDS),
            "trigger": _enum(vocabulary.TRIGGERS),
            "status": _enum(vocabulary.RUN_STATUSES),
            "revision": _string_or_null(),
            "limit": _string_or_null(),
            "requested_by": {"type": "string"},
            "strategy": _string_or_null(),
            "created_at": timestamp,
            "started_at": timestamp,
            "finished_at": timestamp,
            "error": _string_or_null(),
            "cancel_requested": {"type": "boolean"},
            "approval_id": _int_or_null(),
            "waiting_reason": {**_string_or_null(), "description": "why a queued run waits (the broker is down)"},
            "ansible_path": _ansible_path_schema(),
        }
    )


def _ansible_path_schema() -> dict:
    path = _object(
        {
            "warm": {
                "type": ["boolean", "null"],
                "description": "true: forked from a kept Ansible process; false: a new ansible-playbook (cold); "
                "null: a run whose shards took different paths",
            },
            "reason": {**_string_or_null(), "description": "why it went cold (each shard's when mixed)"},
        }
    )
    return {**_maybe(path), "description": "how Ansible ran; null: not known (no Ansible ran, or an older run)"}


def _run_summary_schema() -> dict:
    counts = _object(
        {name: _count() for name in ("total", "in_sync", "drifted", "unverified", "unreachable", "failed")}
    )
    return {"allOf": [_ref("Run"), _object({"hosts": counts})]}


def _verdict_lists_schema() -> dict:
    named = _object({"task": {"type": "string"}, "action": {"type": "string"}})
    return _object(
        {
            "changed_tasks": {
                "type": "array",
                "items": _object(
                    {
                        "task": {"type": "string"},
                        "action": {"type": "string"},
                        "diff": _string_or_null(),
                        "cause": _string_or_null(),
                        "flapping": {"type": "boolean"},
                    }
                ),
            },
            "unverified_tasks": {
                "type": "array",
                "items": _object(
                    {
                        "task": {"type": "string"},
                        "action": {"type": "string"},
                        "reason": _string_or_null(),
                        "accepted": {"type": "boolean"},
                    }
                ),
            },
            "flapping_tasks": {"type": "array", "items": named},
            "executed_in_check": {
                "type": "array",
                "items": _object(
                    {"task": {"type": "string"}, "action": {"type": "string"}, "changed": {"type": "boolean"}}
                ),
            },
        }
    )


def _run_host_schema() -> dict:
    counters = {
        name: _count()
        for name in ("ok", "changed", "failed", "skipped", "unreachable", "unverified", "accepted", "executed")
    }
    verdict = _object(
        {
            "name": {"type": "string"},
            "status": {"type": "string"},
            "message": _string_or_null(),
            "coverage": _ref("Coverage"),
            **counters,
        }
    )
    return {"allOf": [verdict, _ref("VerdictLists")]}


def _run_report_schema() -> dict:
    next_seq = _int_or_null()
    return _object(
        {
            "run": _ref("Run"),
            "hosts": {"type": "array", "items": _ref("RunHost")},
            "shards": {
                "type": "array",
                "items": _ref("Shard"),
                "description": "which worker ran which hosts (FLEET_EXECUTOR=celery); empty for a local run",
            },
            "tasks": {"type": "array", "items": _ref("Task")},
            "stdout": {"type": "string"},
            "last_seq": _count(),
            "more": {"type": "boolean"},
            "output_next": next_seq,
            "tasks_next": next_seq,
            "links": _object({"output": _string_or_null()}),
        }
    )


def _task_schema() -> dict:
    flags = {
        name: {"type": "boolean"} for name in ("unverified", "accepted", "executed", "rescued", "handler", "flapping")
    }
    return _object(
        {
            "seq": _count(),
            "host": {"type": "string"},
            "task": {"type": "string"},
            "action": {"type": "string"},
            "status": {"type": "string"},
            "note": _string_or_null(),
            "diff": _string_or_null(),
            "duration": {"type": ["number", "null"]},
            "path": _string_or_null(),
            "reason": _string_or_null(),
            "cause": _string_or_null(),
            **flags,
        }
    )


def _host_schema() -> dict:
    timestamp = _string_or_null()
    host = _object(
        {
            "name": {"type": "string"},
            "status": {"type": "string"},
            "groups": {"type": "array", "items": {"type": "string"}},
            "address": _string_or_null(),
            "message": _string_or_null(),
            "last_check_at": timestamp,
            "last_check_revision": _string_or_null(),
            "last_check_run_id": _int_or_null(),
            "last_converge_at": timestamp,
            "last_converge_revision": _string_or_null(),
            "coverage": _ref("Coverage"),
            "facts": _object({"os": _string_or_null(), "virtualization": _string_or_null()}),
            "key_blocked": {"type": "boolean"},
            "links": _object(
                {"self": {"type": "string"}, "runs": {"type": "string"}, "last_check_run": _string_or_null()}
            ),
        }
    )
    return {"allOf": [host, _ref("VerdictLists")]}


def _revision_schema() -> dict:
    return _object(
        {
            "sha": {"type": "string"},
            "ref": {"type": "string"},
            "status": {"type": "string"},
            "error": _string_or_null(),
            "author": {"type": "string"},
            "authored_at": _string_or_null(),
            "message": {"type": "string"},
            "signature": {"type": "string"},
            "desired": {"type": "boolean"},
            "rewrites_history": {"type": "boolean"},
        }
    )


def _source_schema() -> dict:
    return _object(
        {
            "repo": {"type": "string"},
            "desired": _string_or_null(),
            "head": _string_or_null(),
            "stale": {"type": "boolean"},
            "error": _string_or_null(),
            "last_fetch_at": _string_or_null(),
        }
    )


def _approval_schema() -> dict:
    return _object(
        {
            "id": _count(1),
            "host": _string_or_null(),
            "status": _enum(vocabulary.APPROVAL_STATUSES),
            "check_run_id": _int_or_null(),
            "revision": {"type": "string"},
            "summary": {"type": "string"},
            "created_at": _string_or_null(),
            "decided_by": _string_or_null(),
            "decided_at": _string_or_null(),
            "converge_run_id": _int_or_null(),
            "note": _string_or_null(),
            "kind": {"type": "string"},
            "reason": _string_or_null(),
        }
    )


def _worker_schema() -> dict:
    return _object(
        {
            "name": {"type": "string"},
            "host": {"type": "string"},
            "pid": _int_or_null(),
            "state": {
                "type": "string",
                "enum": ["online", "lost", "stopped"],
                "description": "online: a heartbeat within 30 s; lost: silent for longer; stopped: a clean stop",
            },
            "version": {"type": "string"},
            "version_ok": {"type": "boolean", "description": "the same as this fleet's"},
            "concurrency": _count(),
            "running": _count(),
            "queues": {"type": "array", "items": {"type": "string"}},
            "refusing": _string_or_null(),
            "started_at": _string_or_null(),
            "heartbeat_at": _string_or_null(),
            "heartbeat_age_seconds": {"type": ["number", "null"]},
            "stopped_at": _string_or_null(),
        }
    )


def _shard_schema() -> dict:
    # The statuses of fleet.store.models.Shard (the store's, not fleet.vocabulary's: only workers have them).
    return _object(
        {
            "index": _count(),
            "hosts": {"type": "array", "items": {"type": "string"}},
            "status": _enum(
                ("pending", "sent", "running", "done", "failed", "lost", "interrupted", "refused", "canceled")
            ),
            "attempt": _count(1),
            "worker": _string_or_null(),
            "reason": _string_or_null(),
            "started_at": _string_or_null(),
            "finished_at": _string_or_null(),
            "history": {"type": "array", "items": {"type": "string"}, "description": "earlier attempts, one line each"},
            "ansible_path": _ansible_path_schema(),
        }
    )
