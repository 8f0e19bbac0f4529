"""The JSON API under /api/v1 through Flask's test client, with a real SQLite store."""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, insert, select, update

from fleet.settings import load_settings
from fleet.store import accounts, queries, records
from fleet.store.db import db
from fleet.store.models import (
    Approval, AuditEntry, ControllerState, Host, HostLock, Revision, Run, RunHost, RunOutput, SourceState,
    TaskResultRow,
)
from fleet.web import create_app

API = "/api/v1"
SHA_A, SHA_B = "a" * 40, "b" * 40
CHECKED_AT = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def make_app(root):
    settings = load_settings(flags={"repo": str(root), "data_dir": str(root / "data")}, environ={}, cwd=root)
    return create_app(settings)


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def tokens(app):
    """A token per role; their identities are token:viewer, token:operator, token:admin."""
    with app.app_context():
        return {role: accounts.create_token(role, role, "test") for role in accounts.ROLES}


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def get(client, path, token, headers=None, **kwargs):
    return client.get(API + path, headers={**bearer(token), **(headers or {})}, **kwargs)


def post(client, path, token, headers=None, **kwargs):
    return client.post(API + path, headers={**bearer(token), **(headers or {})}, **kwargs)


# --- seeding: rows written straight through the models -----------------------------------

def add(app, *rows) -> list[int]:
    with app.app_context():
        db.session.add_all(rows)
        db.session.commit()
        return [getattr(row, "id", None) for row in rows]


def add_run(app, kind="check", status="successful", limit="", **fields) -> int:
    return add(app, Run(kind=kind, trigger="manual", status=status, limit=limit, **fields))[0]


def run_row(app, run_id) -> Run:
    with app.app_context():
        run = db.session.get(Run, run_id)
        db.session.expunge(run)
        return run


def count_rows(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def audit_entries(app, action) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [(e.actor, e.target, e.detail) for e in db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == action))]


def seed_history(app, runs: int, hosts=("db1", "web1", "web2"), tasks_per_host=3) -> list[int]:
    """`runs` finished checks, each with a verdict and task rows per host, and output; hosts point at the last."""
    with app.app_context():
        db.session.execute(insert(Run), [
            {"kind": "check" if i % 2 else "converge", "trigger": "schedule", "status": "successful",
             "limit": "", "revision_sha": SHA_A, "started_at": CHECKED_AT, "finished_at": CHECKED_AT,
             "hosts_total": len(hosts)} for i in range(runs)])
        ids = list(db.session.scalars(select(Run.id).order_by(Run.id)))
        db.session.execute(insert(RunHost), [
            {"run_id": run_id, "host": host, "status": "drifted", "ok": 1, "changed": 1, "unverified": 1}
            for run_id in ids for host in hosts])
        db.session.execute(insert(TaskResultRow), [
            {"run_id": run_id, "seq": seq * len(hosts) + h, "host": host, "task": f"task {seq}",
             "action": "ansible.builtin.copy", "status": "changed" if seq == 0 else "ok",
             "diff": "--- before\n+++ after\n" if seq == 0 else ""}
            for run_id in ids for h, host in enumerate(hosts) for seq in range(tasks_per_host)])
        db.session.execute(insert(RunOutput), [
            {"run_id": run_id, "seq": seq, "text": f"line {seq}"} for run_id in ids for seq in range(5)])
        db.session.execute(insert(Host), [
            {"name": host, "groups": "web" if host.startswith("web") else "db", "status": "drifted",
             "last_check_run_id": ids[-1], "last_check_at": CHECKED_AT, "drifted_tasks": 1,
             "verified_tasks": 2, "total_tasks": 3} for host in hosts])
        db.session.commit()
        return ids


# --- authentication and roles ------------------------------------------------------------

READ_PATHS = ["/hosts", "/hosts/web1", "/runs", "/runs/1", "/approvals", "/revisions", "/metrics"]


@pytest.mark.parametrize("path", READ_PATHS)
def test_reading_without_credentials_is_401_with_a_bearer_challenge(client, path):
    answer = client.get(API + path)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer" in answer.get_json()["error"]


@pytest.mark.parametrize("token", [
    pytest.param("flt_not-a-real-token", id="unknown token"),
    pytest.param("something-else", id="token without the fleet prefix"),
])
@pytest.mark.parametrize("path", READ_PATHS)
def test_reading_with_a_bad_token_is_401(client, path, token):
    answer = get(client, path, token)
    assert answer.status_code == 401
    assert answer.get_json()["error"]


def test_a_revoked_token_is_401(app, client, tokens):
    assert get(client, "/hosts", tokens["viewer"]).status_code == 200
    with app.app_context():
        accounts.revoke_token("viewer")
    assert get(client, "/hosts", tokens["viewer"]).status_code == 401


def test_posting_without_credentials_queues_nothing(app, client):
    # 403 today: the CSRF check answers before the role check when nobody is logged in.
    answer = client.post(API + "/runs", json={"kind": "check"})
    assert answer.status_code in (401, 403)
    assert answer.get_json()["error"]
    assert count_rows(app, Run) == 0


@pytest.mark.parametrize("path,body", [
    pytest.param("/runs", {"kind": "check"}, id="request a run"),
    pytest.param("/runs/{run}/cancel", None, id="cancel a run"),
    pytest.param("/approvals/{approval}", None, id="approve drift"),
])
def test_a_viewer_cannot_change_anything(app, client, tokens, path, body):
    run_id = add_run(app, status="queued")
    with app.app_context():
        approval_id = records.open_approval("web1", run_id, SHA_A, "f" * 64, "motd").id
    answer = post(client, path.format(run=run_id, approval=approval_id), tokens["viewer"], json=body)
    assert answer.status_code == 403
    assert "operator" in answer.get_json()["error"]
    assert count_rows(app, Run) == 1
    assert run_row(app, run_id).status == "queued"
    with app.app_context():
        assert db.session.get(Approval, approval_id).status == "pending"


def test_healthz_needs_no_credentials(client):
    answer = client.get(API + "/healthz")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ok", "controller": {
        "heartbeat_age_seconds": None, "leader": None, "standby": False},
        "kept_processes": []}, "no controller ever ran on this store, no kept Ansible process"


def test_healthz_names_the_leader_its_heartbeat_age_and_whether_this_process_waits(app, client):
    from fleet.controller import ControllerStatus
    from fleet.store import leases

    with app.app_context():
        leases.hold_leadership(leases.Holder("box-a", 4242, "t"), 30)
        seven_seconds_ago = datetime.now(timezone.utc) - timedelta(seconds=7)
        db.session.execute(update(ControllerState).values(heartbeat_at=seven_seconds_ago))
        db.session.commit()
    app.extensions["fleet.controller"] = ControllerStatus(standby=True)
    health = client.get(API + "/healthz").get_json()
    assert health["status"] == "ok"
    assert health["controller"]["leader"] == {"pid": 4242, "host": "box-a"}
    assert 7 <= health["controller"]["heartbeat_age_seconds"] < 60
    assert health["controller"]["standby"] is True
    with app.app_context():
        db.session.execute(update(ControllerState).values(leader_expires_at=datetime.now(timezone.utc) - timedelta(1)))
        db.session.commit()
    assert client.get(API + "/healthz").get_json()["controller"]["leader"] is None, "a lapsed lock leads nobody"


# --- sessions and CSRF -------------------------------------------------------------------

@pytest.fixture
def session_client(app, client):
    with app.app_context():
        user_id = accounts.add_user("alice", "correct horse battery", "operator").id
        sid = accounts.start_session(user_id, timedelta(hours=1))
    with client.session_transaction() as session:
        session["sid"] = sid
        session["csrf"] = "the-csrf-token"
    return client


def test_a_session_reads_without_a_csrf_token(session_client):
    answer = session_client.get(API + "/runs")
    assert answer.status_code == 200
    assert answer.get_json() == {"runs": [], "next_cursor": None}


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no csrf token"),
    pytest.param({"X-CSRF-Token": "a-stale-token"}, id="wrong csrf token"),
])
def test_a_session_post_without_the_csrf_token_is_403(app, session_client, headers):
    answer = session_client.post(API + "/runs", json={"kind": "check"}, headers=headers)
    assert answer.status_code == 403
    assert "CSRF" in answer.get_json()["error"]
    assert count_rows(app, Run) == 0


def test_a_session_post_with_the_csrf_token_queues_the_run(app, session_client):
    answer = session_client.post(API + "/runs", json={"kind": "check"}, headers={"X-CSRF-Token": "the-csrf-token"})
    assert answer.status_code == 202
    run = run_row(app, answer.get_json()["run"]["id"])
    assert (run.status, run.requested_by) == ("queued", "alice")
    assert audit_entries(app, "run.request")[0][0] == "alice"


# --- POST /runs ------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["operator", "admin"])
def test_requesting_a_check_queues_it_and_answers_202(app, client, tokens, role):
    answer = post(client, "/runs", tokens[role], json={"kind": "check", "limit": " web1 "})
    assert answer.status_code == 202
    data = answer.get_json()
    assert data["joined"] is False
    assert answer.headers["Location"] == f"{API}/runs/{data['run']['id']}"
    run = run_row(app, data["run"]["id"])
    assert (run.kind, run.status, run.trigger, run.limit) == ("check", "queued", "manual", "web1")
    assert run.requested_by == f"token:{role}"
    # The same record whichever door the request came in by (fleet.actions): the hosts, then kind and run.
    assert audit_entries(app, "run.request") == [(f"token:{role}", "web1", f"check, run {run.id}")]


def test_an_identical_queued_check_is_joined(app, client, tokens):
    first = post(client, "/runs", tokens["operator"], json={"kind": "check", "limit": "web1"}).get_json()
    second = post(client, "/runs", tokens["operator"], json={"kind": "check", "limit": "web1"})
    assert second.status_code == 202
    assert second.get_json()["joined"] is True
    assert second.get_json()["run"]["id"] == first["run"]["id"]
    assert count_rows(app, Run) == 1


def test_a_limit_of_exactly_1024_characters_is_accepted(app, client, tokens):
    limit = ",".join(["web1"] * 205)[:1024]
    answer = post(client, "/runs", tokens["operator"], json={"kind": "check", "limit": limit})
    assert answer.status_code == 202
    assert run_row(app, answer.get_json()["run"]["id"]).limit == limit


@pytest.mark.parametrize("active,locks,limit,expected", [
    pytest.param([("converge", "queued", "web1")], [], "web1", 409, id="same limit queued"),
    pytest.param([("converge", "running", "web1,web2")], [], "web1,web2", 409, id="same limit running"),
    pytest.param([("converge", "queued", "")], [], "db1", 409, id="a queued converge of every host"),
    pytest.param([("converge", "running", "web1")], [], "", 409, id="every host while one converge runs"),
    pytest.param([("converge", "running", "web*")], ["web2"], "db1, web2", 409, id="named host locked by a converge"),
    pytest.param([("converge", "running", "web*")], ["web2"], "db1:web2", 409, id="colon-separated names"),
    pytest.param([("check", "running", "web2")], ["web2"], "web2", 202, id="host locked by a check"),
    pytest.param([("converge", "successful", "web1")], [], "web1", 202, id="finished converge of the same hosts"),
    pytest.param([("converge", "running", "web1")], ["web1"], "web2", 202, id="other hosts"),
    pytest.param([("converge", "running", "web*")], ["web2"], "web", 202, id="a group name is not resolved"),
    pytest.param([], [], "", 202, id="nothing active"),
])
def test_a_converge_that_may_overlap_another_is_409(app, client, tokens, active, locks, limit, expected):
    run_ids = [add_run(app, kind, status, run_limit) for kind, status, run_limit in active]
    add(app, *[HostLock(host=host, run_id=run_ids[0]) for host in locks])
    answer = post(client, "/runs", tokens["operator"], json={"kind": "converge", "limit": limit})
    assert answer.status_code == expected, answer.get_json()
    assert count_rows(app, Run) == len(active) + (expected == 202)
    if expected == 409:
        assert f"run {run_ids[0]}" in answer.get_json()["error"]


def test_a_check_is_never_409_even_while_the_same_hosts_converge(app, client, tokens):
    add_run(app, "converge", "running", "web1")
    answer = post(client, "/runs", tokens["operator"], json={"kind": "check", "limit": "web1"})
    assert answer.status_code == 202


@pytest.mark.parametrize("kwargs,status,word", [
    pytest.param({}, 400, "JSON", id="no body"),
    pytest.param({"data": "kind=check", "content_type": "application/x-www-form-urlencoded"}, 400, "JSON",
                 id="a form body"),
    pytest.param({"data": "{kind: check", "content_type": "application/json"}, 400, "JSON", id="broken JSON"),
    pytest.param({"json": ["check"]}, 422, "object", id="a JSON array"),
    pytest.param({"json": {}}, 422, "kind", id="no kind"),
    pytest.param({"json": {"kind": "reboot"}}, 422, "kind", id="unknown kind"),
    pytest.param({"json": {"kind": "check", "limit": 5}}, 422, "limit", id="limit not a string"),
    pytest.param({"json": {"kind": "check", "limit": "w" * 1025}}, 422, "limit", id="limit too long"),
    pytest.param({"json": {"kind": "check", "limit": "web1\nweb2"}}, 422, "limit", id="limit with a newline"),
    pytest.param({"json": {"kind": "check", "limits": "web1"}}, 422, "limits", id="unknown field"),
])
def test_a_malformed_run_request_is_refused(app, client, tokens, kwargs, status, word):
    answer = post(client, "/runs", tokens["operator"], **kwargs)
    assert answer.status_code == status
    assert word in answer.get_json()["error"]
    assert count_rows(app, Run) == 0


def test_a_body_over_one_mebibyte_is_413(app, client, tokens):
    answer = post(client, "/runs", tokens["operator"], data=b" " * (1024 * 1024 + 1), content_type="application/json")
    assert answer.status_code == 413
    assert answer.get_json()["error"]
    assert count_rows(app, Run) == 0


# --- cancel -----------------------------------------------------------------------------------

def test_canceling_a_queued_run_cancels_it_at_once(app, client, tokens):
    run_id = add_run(app, status="queued")
    answer = post(client, f"/runs/{run_id}/cancel", tokens["operator"])
    assert answer.status_code == 202
    assert answer.get_json()["run"]["status"] == "canceled"
    run = run_row(app, run_id)
    assert (run.status, run.cancel_reason) == ("canceled", "canceled by token:operator")
    assert audit_entries(app, "run.cancel") == [("token:operator", f"run {run_id}", "check, was queued")]


def test_canceling_a_running_run_asks_the_controller_to_stop_it(app, client, tokens):
    run_id = add_run(app, status="running")
    answer = post(client, f"/runs/{run_id}/cancel", tokens["operator"])
    assert answer.status_code == 202
    run = run_row(app, run_id)
    assert (run.status, run.cancel_requested) == ("running", True)


@pytest.mark.parametrize("status", ["successful", "failed", "canceled", "interrupted", "timeout"])
def test_canceling_a_finished_run_is_409(app, client, tokens, status):
    run_id = add_run(app, status=status)
    answer = post(client, f"/runs/{run_id}/cancel", tokens["operator"])
    assert answer.status_code == 409
    assert status in answer.get_json()["error"]
    assert run_row(app, run_id).cancel_requested is False
    assert audit_entries(app, "run.cancel") == []


# --- approvals ---------------------------------------------------------------------------------

@pytest.fixture
def approval_id(app):
    run_id = add_run(app)
    with app.app_context():
        return records.open_approval("web1", run_id, SHA_A, "f" * 64, "baseline : motd").id


def test_approving_pending_drift(app, client, tokens, approval_id):
    listed = get(client, "/approvals?status=pending", tokens["viewer"]).get_json()
    assert [(a["id"], a["host"], a["status"]) for a in listed["approvals"]] == [(approval_id, "web1", "pending")]
    answer = post(client, f"/approvals/{approval_id}", tokens["operator"])
    assert answer.status_code == 200
    approval = answer.get_json()["approval"]
    assert (approval["status"], approval["decided_by"]) == ("approved", "token:operator")
    with app.app_context():
        assert db.session.get(Approval, approval_id).status == "approved"
    assert audit_entries(app, "approval.approve") == [
        ("token:operator", "web1",
         f"approval {approval_id}; kind=drift revision={SHA_A[:12]} check_run=1 drift={'f' * 12}")]
    assert get(client, "/approvals?status=pending", tokens["viewer"]).get_json()["approvals"] == []


def test_one_approval_releases_a_rollout_an_inventory_jump_held(app, client, tokens):
    run_id = add_run(app)
    reason = "inventory went from 4 to 40 hosts (+36), above max_inventory_change 25%"
    with app.app_context():
        held = records.open_inventory_approval(SHA_B, [f"web{i}" for i in range(40)], run_id, reason)
    listed = get(client, "/approvals?status=pending", tokens["viewer"]).get_json()["approvals"]
    assert [(a["id"], a["kind"], a["host"], a["reason"], a["revision"]) for a in listed] == [
        (held.id, "inventory", "", reason, SHA_B)]
    answer = post(client, f"/approvals/{held.id}", tokens["operator"])
    assert answer.status_code == 200 and answer.get_json()["approval"]["status"] == "approved"
    with app.app_context():
        assert queries.revision_inventory(SHA_B).accepted, "the inventory is accepted: the controller goes on"
    assert audit_entries(app, "approval.approve") == [
        ("token:operator", f"revision {SHA_B[:12]}",
         f"approval {held.id}; kind=inventory revision={SHA_B[:12]} check_run={run_id} drift=-")]


def test_approving_twice_is_409(client, tokens, approval_id):
    assert post(client, f"/approvals/{approval_id}", tokens["operator"]).status_code == 200
    again = post(client, f"/approvals/{approval_id}", tokens["operator"])
    assert again.status_code == 409
    assert "approved" in again.get_json()["error"]


def test_an_explicit_approve_decision_is_accepted(client, tokens, approval_id):
    answer = post(client, f"/approvals/{approval_id}", tokens["operator"], json={"decision": "approve"})
    assert answer.status_code == 200
    assert answer.get_json()["approval"]["status"] == "approved"


def test_any_other_decision_is_422_and_never_approves(app, client, tokens, approval_id):
    answer = post(client, f"/approvals/{approval_id}", tokens["operator"], json={"decision": "reject"})
    assert answer.status_code == 422
    with app.app_context():
        assert db.session.get(Approval, approval_id).status == "pending"


def test_approvals_page_by_cursor_and_reject_unknown_status(app, client, tokens):
    run_id = add_run(app)
    with app.app_context():
        ids = [records.open_approval(f"web{i}", run_id, SHA_A, "f" * 64, "").id for i in range(5)]
    first = get(client, "/approvals?limit=3", tokens["viewer"]).get_json()
    second = get(client, f"/approvals?limit=3&cursor={first['next_cursor']}", tokens["viewer"]).get_json()
    assert [a["id"] for a in first["approvals"] + second["approvals"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert get(client, "/approvals?status=maybe", tokens["viewer"]).status_code == 400


# --- 404 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("get", "/hosts/nope"), ("get", "/runs/999"), ("post", "/runs/999/cancel"), ("post", "/approvals/999"),
    ("get", "/no-such-endpoint"),
])
def test_unknown_things_are_404_in_json(client, tokens, method, path):
    answer = getattr(client, method)(API + path, headers=bearer(tokens["operator"]))
    assert answer.status_code == 404
    assert answer.mimetype == "application/json"
    assert answer.get_json()["error"]


# --- hosts -----------------------------------------------------------------------------------------

@pytest.fixture
def fleet_hosts(app):
    """web1 drifted with a diff and an unverified task, proxy1 in a look-alike group, db1 in sync, old1 removed."""
    run_id = add_run(app)
    add(app,
        Host(name="web1", groups="web", status="drifted", address="10.0.0.1", last_check_run_id=run_id,
             last_check_at=CHECKED_AT, last_check_sha=SHA_A, drifted_tasks=1, verified_tasks=2, total_tasks=3,
             os="Debian 12", virtualization="kvm", message="1 drifted task"),
        Host(name="proxy1", groups="webproxy", status="in_sync"),
        Host(name="db1", groups="db", status="in_sync"),
        Host(name="old1", groups="web", status="drifted", in_inventory=False),
        RunHost(run_id=run_id, host="web1", status="drifted", ok=1, changed=1, unverified=1),
        TaskResultRow(run_id=run_id, seq=1, host="web1", task="baseline : motd", action="ansible.builtin.template",
                      status="changed", diff="--- before: /etc/motd\n+++ after: /etc/motd\n", cause="local"),
        TaskResultRow(run_id=run_id, seq=2, host="web1", task="baseline : sshd", action="ansible.builtin.copy",
                      status="ok"),
        TaskResultRow(run_id=run_id, seq=3, host="web1", task="baseline : sshd -t", action="ansible.builtin.command",
                      status="skipped", unverified=True, note="check mode", reason="check mode skipped it"),
        TaskResultRow(run_id=run_id, seq=4, host="web1", task="baseline : probe", action="ansible.builtin.command",
                      status="ok", executed=True))
    return run_id


@pytest.mark.parametrize("query,names", [
    pytest.param("", ["db1", "proxy1", "web1"], id="every inventory host"),
    pytest.param("?status=drifted", ["web1"], id="by status"),
    pytest.param("?group=web", ["web1"], id="by group, whole names only"),
    pytest.param("?group=webproxy&status=in_sync", ["proxy1"], id="group and status"),
    pytest.param("?group=%25", [], id="a LIKE wildcard is a plain character"),
])
def test_hosts_filter_by_status_and_group(client, tokens, fleet_hosts, query, names):
    answer = get(client, "/hosts" + query, tokens["viewer"])
    assert answer.status_code == 200
    assert [h["name"] for h in answer.get_json()["hosts"]] == names


def test_hosts_reject_an_unknown_status_filter(client, tokens):
    answer = get(client, "/hosts?status=sleepy", tokens["viewer"])
    assert answer.status_code == 400
    assert "in_sync" in answer.get_json()["error"]


def test_a_host_shows_its_drift_coverage_facts_and_history_links(client, tokens, fleet_hosts):
    host = get(client, "/hosts/web1", tokens["viewer"]).get_json()["host"]
    assert host["status"] == "drifted"
    assert (host["groups"], host["address"], host["message"]) == (["web"], "10.0.0.1", "1 drifted task")
    assert host["coverage"] == {"verified": 2, "total": 3}
    assert host["facts"] == {"os": "Debian 12", "virtualization": "kvm"}
    assert (host["last_check_revision"], host["last_check_at"]) == (SHA_A, CHECKED_AT.isoformat())
    assert host["key_blocked"] is False
    assert host["changed_tasks"] == [{"task": "baseline : motd", "action": "ansible.builtin.template",
                                      "diff": "--- before: /etc/motd\n+++ after: /etc/motd\n", "cause": "local",
                                      "flapping": False}]
    assert host["unverified_tasks"] == [{"task": "baseline : sshd -t", "action": "ansible.builtin.command",
                                         "reason": "check mode skipped it", "accepted": False}]
    assert host["executed_in_check"] == [{"task": "baseline : probe", "action": "ansible.builtin.command",
                                          "changed": False}]
    assert host["flapping_tasks"] == []
    assert host["links"]["runs"] == f"{API}/runs?host=web1"
    history = get(client, host["links"]["runs"].removeprefix(API), tokens["viewer"]).get_json()
    assert [r["id"] for r in history["runs"]] == [fleet_hosts]


def test_the_hosts_list_carries_each_hosts_drift(client, tokens, fleet_hosts):
    hosts = {h["name"]: h for h in get(client, "/hosts", tokens["viewer"]).get_json()["hosts"]}
    assert [t["task"] for t in hosts["web1"]["changed_tasks"]] == ["baseline : motd"]
    assert hosts["db1"]["changed_tasks"] == []


# --- runs: keyset pages and detail ---------------------------------------------------------------------

def walk_pages(client, token, query: str) -> tuple[list[int], int]:
    """Follow next_cursor to the end; return every id seen and the number of pages."""
    seen, cursor, pages = [], None, 0
    while True:
        answer = get(client, f"/runs?{query}" + (f"&cursor={cursor}" if cursor else ""), token)
        assert answer.status_code == 200
        data = answer.get_json()
        seen += [run["id"] for run in data["runs"]]
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            return seen, pages


@pytest.mark.parametrize("runs,pages", [
    pytest.param(23, 5, id="a short last page"),
    pytest.param(20, 4, id="a full last page is the last"),
])
def test_run_pages_have_no_gaps_or_duplicates(app, client, tokens, runs, pages):
    ids = seed_history(app, runs)
    seen, walked = walk_pages(client, tokens["viewer"], "limit=5")
    assert seen == sorted(ids, reverse=True)
    assert walked == pages


def test_run_pages_keep_their_filters(app, client, tokens):
    ids = seed_history(app, 12)
    add_run(app, "check", "failed")
    seen, _ = walk_pages(client, tokens["viewer"], "limit=2&kind=converge&status=successful")
    with app.app_context():
        converges = [r for r in ids if db.session.get(Run, r).kind == "converge"]
    assert seen == sorted(converges, reverse=True)


def test_runs_filter_by_host(app, client, tokens):
    ids = seed_history(app, 3, hosts=("web1",))
    add_run(app)  # no verdict for web1
    data = get(client, "/runs?host=web1", tokens["viewer"]).get_json()
    assert [r["id"] for r in data["runs"]] == ids[::-1]
    assert data["runs"][0]["hosts"]["total"] == 1


@pytest.mark.parametrize("query", [
    "kind=deploy", "status=done", "cursor=abc", "cursor=0", "limit=0", "limit=201", "limit=-1",
])
def test_bad_run_list_parameters_are_400(client, tokens, query):
    answer = get(client, f"/runs?{query}", tokens["viewer"])
    assert answer.status_code == 400
    assert query.split("=")[0] in answer.get_json()["error"]


@pytest.fixture
def live_run(app):
    """A running check: web1's tasks at seq 2, 4, 6 and an output chunk per seq 1..6."""
    run_id = add_run(app, status="running", revision_sha=SHA_A, started_at=CHECKED_AT)
    add(app, *[TaskResultRow(run_id=run_id, seq=seq, host="web1", task=f"task {seq}", action="ansible.builtin.copy",
                             status="changed" if seq == 4 else "ok", diff="+x\n" if seq == 4 else "",
                             duration=0.5) for seq in (2, 4, 6)],
        *[RunOutput(run_id=run_id, seq=seq, text=f"line {seq}") for seq in range(1, 7)])
    return run_id


def test_a_run_shows_its_hosts_tasks_and_output(app, client, tokens, live_run):
    add(app, RunHost(run_id=live_run, host="web1", status="drifted", ok=2, changed=1, unverified=1, verified=3))
    data = get(client, f"/runs/{live_run}", tokens["viewer"]).get_json()
    assert (data["run"]["id"], data["run"]["status"], data["run"]["revision"]) == (live_run, "running", SHA_A)
    assert data["hosts"] == [{"name": "web1", "status": "drifted", "message": None,
                              "coverage": {"verified": 3, "total": 4}, "ok": 2, "changed": 1, "failed": 0,
                              "skipped": 0, "unreachable": 0, "unverified": 1, "accepted": 0, "executed": 0,
                              "changed_tasks": [{"task": "task 4", "action": "ansible.builtin.copy", "diff": "+x\n",
                                                 "cause": None, "flapping": False}],
                              "unverified_tasks": [], "flapping_tasks": [], "executed_in_check": []}]
    assert [t["seq"] for t in data["tasks"]] == [2, 4, 6]
    assert data["tasks"][1] == {"seq": 4, "host": "web1", "task": "task 4", "action": "ansible.builtin.copy",
                                "status": "changed", "unverified": False, "note": None, "diff": "+x\n",
                                "duration": 0.5, "path": None, "reason": None, "accepted": False,
                                "executed": False, "rescued": False, "handler": False, "cause": None,
                                "flapping": False}
    assert data["stdout"] == "\n".join(f"line {i}" for i in range(1, 7))
    assert data["last_seq"] == 6


@pytest.mark.parametrize("after,task_seqs,stdout", [
    pytest.param(3, [4, 6], "line 4\nline 5\nline 6", id="only what came after"),
    pytest.param(6, [], "", id="nothing new"),
    pytest.param(60, [], "", id="ahead of the run"),
])
def test_after_seq_returns_only_newer_tasks_and_output(client, tokens, live_run, after, task_seqs, stdout):
    data = get(client, f"/runs/{live_run}?after_seq={after}", tokens["viewer"]).get_json()
    assert [t["seq"] for t in data["tasks"]] == task_seqs
    assert data["stdout"] == stdout
    assert data["last_seq"] == max(6, after)


def test_after_seq_must_be_a_number(client, tokens, live_run):
    assert get(client, f"/runs/{live_run}?after_seq=x", tokens["viewer"]).status_code == 400


# --- revisions ----------------------------------------------------------------------------------------

def test_revisions_show_the_source_and_each_commit(app, client, tokens):
    add(app,
        SourceState(id=1, repo="https://git.example.com/ops/fleet.git", desired_sha=SHA_A, head_sha=SHA_B,
                    stale=True, last_error="could not resolve host git.example.com", last_fetch_at=CHECKED_AT),
        Revision(sha=SHA_A, status="valid", author="Tess Ter", authored_at=CHECKED_AT, message="motd",
                 signature="good"),
        Revision(sha=SHA_B, status="rejected", error="inventory/hosts.yml:3: bad indentation", message="oops",
                 rewrites_history=True))
    data = get(client, "/revisions", tokens["viewer"]).get_json()
    assert data["source"] == {"repo": "https://git.example.com/ops/fleet.git", "desired": SHA_A, "head": SHA_B,
                              "stale": True, "error": "could not resolve host git.example.com",
                              "last_fetch_at": CHECKED_AT.isoformat()}
    newest, older = data["revisions"]
    assert (newest["sha"], newest["status"], newest["desired"], newest["rewrites_history"]) == (
        SHA_B, "rejected", False, True)
    assert newest["error"] == "inventory/hosts.yml:3: bad indentation"
    assert (older["sha"], older["desired"], older["signature"], older["author"]) == (SHA_A, True, "good", "Tess Ter")
    assert older["authored_at"] == CHECKED_AT.isoformat()


def test_revisions_before_the_first_fetch_write_nothing(app, client, tokens, tmp_path):
    data = get(client, "/revisions", tokens["viewer"]).get_json()
    assert data == {"source": {"repo": str(tmp_path), "desired": None, "head": None, "stale": False, "error": None,
                               "last_fetch_at": None}, "revisions": []}
    assert count_rows(app, SourceState) == 0


# --- metrics --------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+|\+Inf)$')


def parse_metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


def test_metrics_in_prometheus_text_format(app, client, tokens):
    add(app,
        Host(name="web1", status="drifted", last_check_at=CHECKED_AT),
        Host(name="web2", status="drifted"), Host(name="db1", status="in_sync"),
        Host(name="old1", status="drifted", in_inventory=False),
        SourceState(id=1, stale=True),
        *[Run(kind="check", trigger="schedule", status="successful") for _ in range(3)],
        Run(kind="converge", trigger="manual", status="failed"),
        *[Run(kind="check", trigger="manual", status="queued") for _ in range(2)])
    answer = get(client, "/metrics", tokens["viewer"])
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = answer.get_data(as_text=True)
    assert 'fleet_hosts{group="all",status="drifted"} 2.0\n' in text
    samples = parse_metrics(text)
    assert samples['fleet_hosts{group="all",status="in_sync"}'] == 1
    assert samples['fleet_hosts{group="all",status="unknown"}'] == 0
    assert samples['fleet_runs_total{kind="check",status="successful"}'] == 3
    assert samples['fleet_runs_total{kind="converge",status="failed"}'] == 1
    assert 'fleet_runs_total{kind="check",status="queued"}' not in samples  # not a counter: it would go down
    assert samples["fleet_queue_depth"] == 2
    assert samples["fleet_source_stale"] == 1
    assert samples["fleet_last_check_timestamp_seconds"] == CHECKED_AT.timestamp()
    assert "# TYPE fleet_runs_total counter" in text


def test_metrics_of_an_empty_store(client, tokens):
    samples = parse_metrics(get(client, "/metrics", tokens["viewer"]).get_data(as_text=True))
    assert samples["fleet_last_check_timestamp_seconds"] == 0
    assert samples["fleet_source_stale"] == 0
    assert samples['fleet_hosts{group="all",status="drifted"}'] == 0


# --- JSON stays JSON -------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'


def test_hostile_text_comes_back_as_json_data_never_html(app, client, tokens):
    add(app, Host(name=HOSTILE, status="failed", message=HOSTILE))
    answer = get(client, "/hosts", tokens["viewer"], headers={"Accept": "text/html"})
    assert answer.mimetype == "application/json"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.get_json()["hosts"][0]["message"] == HOSTILE


@pytest.mark.parametrize("method,path", [
    pytest.param("get", f"/hosts/{HOSTILE}", id="404 naming hostile text"),
    pytest.param("delete", "/runs", id="405"),
    pytest.param("get", "/runs?kind=<b>", id="400 echoing hostile text"),
])
def test_errors_are_json_even_when_a_browser_asks_for_html(client, tokens, method, path):
    answer = getattr(client, method)(API + path, headers={**bearer(tokens["viewer"]), "Accept": "text/html"})
    assert answer.status_code >= 400
    assert answer.mimetype == "application/json"
    assert not answer.get_data(as_text=True).lstrip().startswith("<")
    assert answer.get_json()["error"]


# --- a fixed number of queries per request -----------------------------------------------------------------

@contextmanager
def counted_queries(app):
    statements: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


QUERY_COUNT_PATHS = [
    "/hosts", "/hosts/web1", "/runs", "/runs?host=web1", "/runs?kind=check&status=successful&limit=20",
    "/runs/{last}", "/runs/{last}?after_seq=4", "/approvals", "/revisions", "/metrics", "/workers",
]
MAX_QUERIES = 8  # token lookup and its last-used write included
MAX_QUERIES_OF = {"/metrics": 10,  # seven reads: the metrics view's docstring lists them
                  "/runs/{last}": 9, "/runs/{last}?after_seq=4": 9}  # five reads and the run's shards


def queries_per_path(app, runs: int) -> dict[str, int]:
    ids = seed_history(app, runs)
    with app.app_context():
        token = accounts.create_token("counter", "viewer", "test")
        for run_id in ids[-60:]:
            records.open_approval("web1", run_id, SHA_A, f"{run_id:064d}", "")
    client = app.test_client()
    counts = {}
    for path in QUERY_COUNT_PATHS:
        with counted_queries(app) as statements:
            answer = get(client, path.format(last=ids[-1]), token)
        assert answer.status_code == 200, (path, answer.get_json())
        counts[path] = len(statements)
    return counts


def test_a_page_costs_the_same_queries_for_5_or_200_runs(tmp_path):
    small = queries_per_path(make_app(tmp_path / "small"), 5)
    large = queries_per_path(make_app(tmp_path / "large"), 200)
    assert small == large
    assert all(count <= MAX_QUERIES_OF.get(path, MAX_QUERIES) for path, count in large.items()), large
