"""GET /api/v1/openapi.json describes the API as it behaves: schemathesis holds every operation to it.

The app runs on a real SQLite store seeded with hosts, runs (one running
converge), output, task results, approvals and a revision; schemathesis
loads the document from the app itself and sends generated requests with a
real operator token, the state-changing ones included (they only queue: no
controller runs here). Every answer must be a documented status code, its
body must match the documented schema, and none may be a 500. Then a table
of hand-made requests provokes each documented status code of each
operation once, so none is listed that the API never answers.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from fleet.settings import load_settings
from fleet.store import accounts, queries
from fleet.store.db import db
from fleet.store.models import (
    Approval, Host, HostLock, Revision, Run, RunHost, RunOutput, Shard, SourceState, TaskResultRow, Worker,
)
from fleet.web import api, create_app, openapi

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
SECRET = "hook secret"
SHA = "c" * 40
AT = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
EXAMPLES_PER_OPERATION = 30  # about 20 s for the whole API on this machine


def seeded_app(root):
    """The app on a fresh store holding what seed_store writes, and a viewer and an operator token."""
    settings = load_settings(flags={"repo": str(root), "data_dir": str(root / "data"), "webhook_secret": SECRET},
                             environ={}, cwd=root)
    app = create_app(settings)
    with app.app_context():
        seed_store()
        tokens = {role: accounts.create_token(f"openapi-{role}", role, "test") for role in ("viewer", "operator")}
    return app, tokens


# Per test, not per module: on PostgreSQL (FLEET_TEST_DATABASE_URL) each test starts from an emptied database.
@pytest.fixture
def seeded(tmp_path):
    return seeded_app(tmp_path)


@pytest.fixture
def api_app(seeded):
    return seeded[0]


@pytest.fixture
def tokens(seeded):
    return seeded[1]


def seed_store() -> None:
    """What a fleet that has run for a while holds; ids start at 1, as the document's examples say."""
    check = Run(kind="check", trigger="schedule", status="successful", revision_sha=SHA, requested_by="schedule",
                started_at=AT, finished_at=AT, hosts_total=2, hosts_in_sync=1, hosts_drifted=1)
    converge = Run(kind="converge", trigger="manual", status="running", revision_sha=SHA, requested_by="ada",
                   started_at=AT)
    db.session.add_all([check, converge])
    db.session.flush()
    db.session.add_all([
        Host(name="web1", address="127.0.0.1", groups="web", status="drifted", last_check_at=AT,
             last_check_sha=SHA, last_check_run_id=check.id, verified_tasks=3, total_tasks=3, os="Debian"),
        Host(name="db1", address="", groups="db", status="in_sync", last_check_at=AT, last_check_run_id=check.id),
        RunHost(run_id=check.id, host="web1", status="drifted", ok=2, changed=1, verified=3),
        RunHost(run_id=check.id, host="db1", status="in_sync", ok=3, verified=3),
        TaskResultRow(run_id=check.id, seq=2, host="web1", task="motd", action="copy", status="changed",
                      diff="--- before\n+++ after\n-old\n+new\n", duration=0.2),
        TaskResultRow(run_id=check.id, seq=3, host="db1", task="motd", action="copy", status="ok", duration=0.1),
        *[RunOutput(run_id=check.id, seq=seq, text=f"output line {seq}") for seq in range(1, 6)],
        Approval(host="web1", check_run_id=check.id, revision_sha=SHA, drift_signature="d" * 64,
                 summary="motd (copy)", status="pending"),
        Approval(host="db1", check_run_id=check.id, revision_sha=SHA, drift_signature="e" * 64,
                 summary="motd (copy)", status="applied", decided_by="ada", decided_at=AT),
        Revision(sha=SHA, ref="main", author="ada", authored_at=AT, message="motd", status="valid"),
        SourceState(repo="/srv/fleet-config", desired_sha=SHA, head_sha=SHA, last_fetch_at=AT),
        Worker(name="fleet@w1", host="w1", pid=10, version="0.0.1", concurrency=2, queues="fleet", started_at=AT,
               heartbeat_at=AT, refusing="fleet 0.0.1 here"),
        Shard(run_id=converge.id, index=0, hosts='["web1"]', status="running", attempt=2, worker="fleet@w1",
              started_at=AT, history="attempt 1 on fleet@w0: lost\n"),
        # A stopped run could not confirm its work on db1 ended (fleet.remote_stop): the lock outlives it.
        HostLock(host="db1", run_id=check.id, acquired_at=AT, kept_reason="remote work may still run: test"),
    ])
    db.session.commit()


@pytest.fixture
def api_schema(api_app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app)


# One test per operation, named after it; the list comes from the document itself (pure, no app needed).
OPERATIONS = [(method.upper(), path) for path, item in openapi.openapi_document()["paths"].items() for method in item]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_as_documented(api_schema, tokens, method, path):
    operation = api_schema[path][method]
    # Valid requests (the document's examples point at seeded rows) and invalid ones (bad types, missing fields).
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE),
                      *api_schema.get_strategies_from_examples(operation))
    headers = {"Authorization": f"Bearer {tokens['operator']}"}

    @given(case=cases)
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def answers_as_documented(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    answers_as_documented()


# --- each documented status code, provoked once -----------------------------------------------

def signed(body: bytes) -> dict:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json"}


BIG = b"x" * (1024 * 1024 + 1)
JSON = {"Content-Type": "application/json"}

# (method, path template, status, who: operator|viewer|bad|none, request keyword arguments)
PROVOKED = [
    ("GET", "/api/v1/openapi.json", 200, "none", {}),
    ("GET", "/api/v1/openapi.json", 401, "bad", {}),
    ("GET", "/api/v1/healthz", 200, "none", {}),
    ("GET", "/api/v1/healthz", 401, "bad", {}),
    ("GET", "/api/v1/hosts", 200, "viewer", {"query_string": {"status": "drifted"}}),
    ("GET", "/api/v1/hosts", 400, "viewer", {"query_string": {"status": "purple"}}),
    ("GET", "/api/v1/hosts", 401, "none", {}),
    ("GET", "/api/v1/hosts/{name}", 200, "viewer", {"name": "web1"}),
    ("GET", "/api/v1/hosts/{name}", 404, "viewer", {"name": "nowhere"}),
    ("GET", "/api/v1/hosts/{name}", 404, "viewer", {"name": "web%001"}),  # PostgreSQL refuses NUL in text
    ("GET", "/api/v1/hosts/{name}", 401, "bad", {"name": "web1"}),
    ("GET", "/api/v1/runs", 200, "viewer", {"query_string": {"limit": "1"}}),
    ("GET", "/api/v1/runs", 400, "viewer", {"query_string": {"cursor": str(2**40)}}),  # past an SQL INTEGER
    ("GET", "/api/v1/runs", 400, "viewer", {"query_string": {"host": "web\x001"}}),
    ("GET", "/api/v1/runs", 401, "none", {}),
    ("POST", "/api/v1/runs", 202, "operator", {"json": {"kind": "check", "limit": "web1"}}),
    ("POST", "/api/v1/runs", 400, "operator", {"data": "kind=check"}),
    ("POST", "/api/v1/runs", 401, "none", {"json": {"kind": "check"}}),
    ("POST", "/api/v1/runs", 403, "viewer", {"json": {"kind": "check"}}),
    ("POST", "/api/v1/runs", 409, "operator", {"json": {"kind": "converge"}}),
    ("POST", "/api/v1/runs", 413, "operator", {"data": BIG, "headers": JSON}),
    ("POST", "/api/v1/runs", 422, "operator", {"json": {"kind": "check", "limit": "web1\udfff"}}),
    ("GET", "/api/v1/runs/{run_id}", 200, "viewer", {"run_id": 1}),
    ("GET", "/api/v1/runs/{run_id}", 400, "viewer", {"run_id": 1, "query_string": {"after_seq": "-1"}}),
    ("GET", "/api/v1/runs/{run_id}", 404, "viewer", {"run_id": 2**40}),
    ("GET", "/api/v1/runs/{run_id}", 401, "none", {"run_id": 1}),
    ("GET", "/api/v1/runs/{run_id}/output", 200, "viewer", {"run_id": 1, "query_string": {"limit": "2"}}),
    ("GET", "/api/v1/runs/{run_id}/output", 400, "viewer", {"run_id": 1, "query_string": {"limit": "2001"}}),
    ("GET", "/api/v1/runs/{run_id}/output", 404, "viewer", {"run_id": 999}),
    ("GET", "/api/v1/runs/{run_id}/output", 401, "bad", {"run_id": 1}),
    ("POST", "/api/v1/hosts/{name}/release", 200, "operator", {"name": "db1"}),
    ("POST", "/api/v1/hosts/{name}/release", 409, "operator", {"name": "db1"}),  # released by the line above
    ("POST", "/api/v1/hosts/{name}/release", 404, "operator", {"name": "nowhere"}),
    ("POST", "/api/v1/hosts/{name}/release", 401, "none", {"name": "db1"}),
    ("POST", "/api/v1/hosts/{name}/release", 403, "viewer", {"name": "db1"}),
    ("POST", "/api/v1/runs/{run_id}/cancel", 202, "operator", {"run_id": "queued"}),
    ("POST", "/api/v1/runs/{run_id}/cancel", 401, "none", {"run_id": 1}),
    ("POST", "/api/v1/runs/{run_id}/cancel", 403, "viewer", {"run_id": 1}),
    ("POST", "/api/v1/runs/{run_id}/cancel", 404, "operator", {"run_id": 999}),
    ("POST", "/api/v1/runs/{run_id}/cancel", 409, "operator", {"run_id": 1}),
    ("GET", "/api/v1/approvals", 200, "viewer", {"query_string": {"status": "pending"}}),
    ("GET", "/api/v1/approvals", 400, "viewer", {"query_string": {"limit": "0"}}),
    ("GET", "/api/v1/approvals", 401, "none", {}),
    ("POST", "/api/v1/approvals/{approval_id}", 200, "operator", {"approval_id": 1, "json": {"decision": "approve"}}),
    ("POST", "/api/v1/approvals/{approval_id}", 400, "operator", {"approval_id": 1, "data": "decision=approve"}),
    ("POST", "/api/v1/approvals/{approval_id}", 401, "none", {"approval_id": 1}),
    ("POST", "/api/v1/approvals/{approval_id}", 403, "viewer", {"approval_id": 1}),
    ("POST", "/api/v1/approvals/{approval_id}", 404, "operator", {"approval_id": 999}),
    ("POST", "/api/v1/approvals/{approval_id}", 409, "operator", {"approval_id": 2}),
    ("POST", "/api/v1/approvals/{approval_id}", 413, "operator", {"approval_id": 1, "data": BIG, "headers": JSON}),
    ("POST", "/api/v1/approvals/{approval_id}", 422, "operator", {"approval_id": 1, "json": {"decision": "reject"}}),
    ("GET", "/api/v1/revisions", 200, "viewer", {}),
    ("GET", "/api/v1/revisions", 401, "bad", {}),
    ("GET", "/api/v1/workers", 200, "viewer", {}),
    ("GET", "/api/v1/workers", 401, "bad", {}),
    ("GET", "/api/v1/metrics", 200, "viewer", {}),
    ("GET", "/api/v1/metrics", 401, "none", {}),
    ("POST", "/api/v1/hooks/git", 202, "none", {"data": b"{}", "headers": signed(b"{}")}),
    ("POST", "/api/v1/hooks/git", 401, "none", {"data": b"{}", "headers": {"X-Hub-Signature-256": "sha256=00"}}),
    ("POST", "/api/v1/hooks/git", 413, "none", {"data": BIG, "headers": JSON}),
]
# 403 of the webhook (no secret) and 429 (an address past its failures) need an app of their own: below.
SEPARATELY = {("POST", "/api/v1/hooks/git", 403)} | {(m, p, 429) for m, p, *_ in PROVOKED}


def send(client, tokens, method, path, who, kwargs):
    kwargs = dict(kwargs)
    values = {key: kwargs.pop(key) for key in ("name", "run_id", "approval_id") if key in kwargs}
    headers = dict(kwargs.pop("headers", {}))
    if who in tokens:
        headers["Authorization"] = f"Bearer {tokens[who]}"
    elif who == "bad":
        headers["Authorization"] = "Bearer not-a-token"
    return client.open(path.format(**values), method=method, headers=headers, **kwargs)


def test_each_documented_status_code_is_answered_and_matches_its_schema(api_app, api_schema, tokens):
    client = api_app.test_client()
    queued = client.post("/api/v1/runs", json={"kind": "check", "limit": "db1"},
                         headers={"Authorization": f"Bearer {tokens['operator']}"}).get_json()["run"]["id"]
    for method, path, status, who, kwargs in PROVOKED:
        if kwargs.get("run_id") == "queued":
            kwargs = {**kwargs, "run_id": queued}
        answer = send(client, tokens, method, path, who, kwargs)
        assert answer.status_code == status, (method, path, who, answer.get_data(as_text=True)[:300])
        assert_documented(api_schema, method, path, answer)


def test_the_table_provokes_every_status_code_the_document_lists(api_schema):
    provoked = {(method, path, status) for method, path, status, *_ in PROVOKED}
    documented = {(method.upper(), path, int(code))
                  for path, item in api_schema.raw_schema["paths"].items()
                  for method, operation in item.items() for code in operation["responses"]}
    assert documented - SEPARATELY == provoked


def test_without_a_secret_the_webhook_is_403_and_past_20_bad_tokens_every_operation_is_429(tmp_path, api_schema):
    root = tmp_path / "plain"  # a second app, without a webhook secret, on a store of its own
    settings = load_settings(flags={"repo": str(root), "data_dir": str(root / "data")}, environ={}, cwd=root)
    client = create_app(settings).test_client()
    answer = client.post("/api/v1/hooks/git", data=b"{}", headers=signed(b"{}"))
    assert answer.status_code == 403
    assert_documented(api_schema, "POST", "/api/v1/hooks/git", answer)
    for _ in range(20):
        assert send(client, {}, "GET", "/api/v1/hosts", "bad", {}).status_code == 401
    for method, path, status, *_ in sorted(SEPARATELY):
        if status == 429:
            values = {"name": "web1", "run_id": 1, "approval_id": 1}
            answer = send(client, {}, method, path.format(**values), "bad", {})
            assert answer.status_code == 429 and answer.headers["Retry-After"], (method, path)
            assert_documented(api_schema, method, path, answer)


def test_the_document_is_readable_without_a_token_and_names_bearer_auth(api_app):
    document = api_app.test_client().get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]
    routes = {rule.rule for rule in api_app.url_map.iter_rules() if rule.rule.startswith("/api/v1")}
    described = {path.replace("{run_id}", "<int:run_id>").replace("{approval_id}", "<int:approval_id>")
                 .replace("{name}", "<name>") for path in document["paths"]}
    assert routes == described


def assert_documented(api_schema, method: str, path: str, answer) -> None:
    """The answer's status is listed for the operation and its body matches the listed schema."""
    operation = api_schema[path][method]
    codes = operation.definition.raw["responses"]
    assert str(answer.status_code) in codes, f"{method} {path} answered {answer.status_code}, not documented"
    if answer.mimetype == "application/json":
        api_schema.validate_response(operation, schemathesis.Response.from_wsgi(answer))


def test_the_documents_bounds_are_the_apis():
    """web/openapi.py stays pure, so it repeats a few numbers; they must stay the ones the API enforces."""
    assert (openapi.MAX_PAGE, openapi.MAX_LIMIT_CHARS) == (api.MAX_PAGE, api.MAX_LIMIT_CHARS)
    assert openapi.OUTPUT_PAGE_CHUNKS == queries.OUTPUT_PAGE_CHUNKS
