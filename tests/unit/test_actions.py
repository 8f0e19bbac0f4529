"""fleet.actions: each operator verb's rule, write and audit record, in one transaction, whatever the door."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from fleet import actions
from fleet.errors import AccessDenied, ConfigError, NotFound
from fleet.store import accounts, queries, records
from fleet.store.db import db, Store
from fleet.store.models import Approval, AuditEntry, Run, User
from tests.conftest import FleetCli
from tests.unit.store_fixtures import add_hosts, add_runs, temporary_store

OTTO = actions.Actor("otto", "192.0.2.7")


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def audit_rows(session) -> list[tuple[str, str, str, str, str]]:
    return [(a.actor, a.action, a.target, a.detail, a.remote_addr)
            for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def runs(session) -> list[tuple[str, str, str]]:
    return [(r.kind, r.status, r.limit) for r in session.scalars(select(Run).order_by(Run.id))]


def test_a_requested_run_is_queued_and_audited_with_who_and_where_from(store):
    add_hosts(store, ("web1", "web"))
    requested = actions.request_run(OTTO, "converge", "web1")
    assert (requested.run.kind, requested.run.status, requested.run.requested_by, requested.joined) == (
        "converge", "queued", "otto", False)
    assert audit_rows(store) == [("otto", "run.request", "web1", f"converge, run {requested.run.id}", "192.0.2.7")]


def test_an_identical_queued_check_is_joined_and_who_asked_is_audited(store):
    first = actions.request_run(OTTO, "check", "web1")
    second = actions.request_run(actions.Actor("ada"), "check", "web1")
    assert second.joined and second.run.id == first.run.id
    assert [row[:4] for row in audit_rows(store)] == [
        ("otto", "run.request", "web1", f"check, run {first.run.id}"),
        ("ada", "run.request", "web1", f"check, run {first.run.id}, joined the queued one")]


def test_a_converge_overlapping_a_queued_one_is_refused_and_leaves_nothing_behind(store):
    add_hosts(store, ("web1", "web"), ("db1", "db"))
    actions.request_run(OTTO, "converge", "web")
    with pytest.raises(actions.Refused, match="converg"):
        actions.request_run(OTTO, "converge", "web1")  # web1 is in group web
    store.rollback()
    assert runs(store) == [("converge", "queued", "web")]
    assert len(audit_rows(store)) == 1
    assert actions.request_run(OTTO, "converge", "db1").run.limit == "db1"  # no overlap: queued


def test_an_unknown_kind_is_refused_before_anything_is_written(store):
    with pytest.raises(Exception, match="unknown run kind"):
        actions.request_run(OTTO, "destroy", "")
    assert runs(store) == []


def test_when_the_audit_record_cannot_be_written_the_run_is_not_queued_either(store, monkeypatch):
    def broken_audit(*_args, **_kwargs):
        db.session.add(AuditEntry(actor="x", action="y", target="z", detail="", remote_addr=""))
        db.session.flush()
        raise RuntimeError("the audit table is full")

    monkeypatch.setattr(accounts, "audit", broken_audit)
    with pytest.raises(RuntimeError):
        actions.request_run(OTTO, "converge", "web1")
    assert runs(store) == [] and audit_rows(store) == []


def test_two_converge_requests_at_once_queue_one(tmp_path, monkeypatch):
    """The conflict rule and the enqueue hold one lock: the second request waits for the first to commit and
    then sees its converge. Without the lock both would pass the rule before either wrote."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    store = Store.open(url)
    with store.bound():
        add_hosts(db.session, ("web1", "web"))
    first_checked, release_first = threading.Event(), threading.Event()
    real_rule = queries.converge_conflict

    def slow_rule(limit):
        found = real_rule(limit)
        if threading.current_thread().name == "first":
            first_checked.set()
            release_first.wait(10)  # the first request holds here, between its rule and its write
        return found

    monkeypatch.setattr(queries, "converge_conflict", slow_rule)
    outcomes: dict[str, object] = {}

    def request(name: str) -> None:
        with store.bound():
            try:
                outcomes[name] = actions.request_run(actions.Actor(name), "converge", "web1").run.id
            except actions.Refused as exc:
                outcomes[name] = exc

    first = threading.Thread(target=request, args=("first",), name="first")
    first.start()
    assert first_checked.wait(10)
    second = threading.Thread(target=request, args=("second",), name="second")
    second.start()
    time.sleep(0.5)
    assert "second" not in outcomes, "the second request must wait for the first's transaction"
    release_first.set()
    first.join(15)
    second.join(15)
    assert isinstance(outcomes["first"], int)
    assert isinstance(outcomes["second"], actions.Refused)
    with store.bound():
        assert runs(db.session) == [("converge", "queued", "web1")]


def test_cancel_of_a_queued_run_cancels_it_and_of_a_finished_one_is_refused(store):
    queued, finished = add_runs(store, 1, status="queued")[0], add_runs(store, 1, status="successful")[0]
    canceled, was = actions.cancel_run(OTTO, queued)
    assert (canceled.status, canceled.cancel_reason, was) == ("canceled", "canceled by otto", "queued")
    with pytest.raises(actions.Refused, match="successful"):
        actions.cancel_run(OTTO, finished)
    with pytest.raises(NotFound):
        actions.cancel_run(OTTO, 999)
    assert [row[1:4] for row in audit_rows(store)] == [("run.cancel", f"run {queued}", "check, was queued")]


def test_an_approval_is_approved_once_then_refused(store):
    check = add_runs(store, 1)[0]
    store.add(Approval(host="web1", revision_sha="a" * 40, check_run_id=check, drift_signature="f" * 64,
                       summary="1 task", status="pending"))
    store.commit()
    approval_id = store.scalar(select(Approval.id))
    assert actions.approve(OTTO, approval_id).status == "approved"
    with pytest.raises(actions.Refused, match="not pending"):
        actions.approve(OTTO, approval_id)
    with pytest.raises(NotFound):
        actions.approve(OTTO, 999)
    assert [row[1:3] for row in audit_rows(store)] == [("approval.approve", "web1")]


def test_releasing_a_host_without_a_kept_lock_is_refused(store):
    add_hosts(store, ("web1", "web"))
    with pytest.raises(actions.Refused, match="no kept lock"):
        actions.release_host(OTTO, "web1")
    assert audit_rows(store) == []


def test_fleet_request_converge_applies_the_same_rule_as_the_api(tmp_path):
    """`fleet request converge` once queued a converge overlapping a queued one; it now refuses, exit 1."""
    cli = FleetCli(tmp_path / "data", tmp_path / "no-source", tmp_path)
    assert cli("request", "converge", "--limit", "web1").code == 0
    refused = cli("request", "converge", "--limit", "web1")
    assert refused.code == 1
    assert "converg" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("request", "check").code == 0
    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'fleet.db'}")
    with store.bound():
        assert runs(db.session) == [("converge", "queued", "web1"), ("check", "queued", "")]
        assert [row[1:3] for row in audit_rows(db.session)] == [("run.request", "web1"),
                                                                ("run.request", "all hosts")]


# --- accounts ---------------------------------------------------------------------------------------

ADA = actions.Actor("ada", "192.0.2.9")
PASSWORD = "a-long-enough-password"


def test_adding_a_user_is_audited_and_an_existing_name_is_refused_unless_replaced(store):
    actions.add_user(ADA, "vera", PASSWORD, "viewer")
    with pytest.raises(actions.Refused, match="exists already"):
        actions.add_user(ADA, "vera", PASSWORD, "admin")
    assert accounts.authenticate("vera", PASSWORD).role == "viewer"
    actions.add_user(ADA, "vera", PASSWORD + "2", "operator", replace=True)  # `fleet user add` resets
    assert accounts.authenticate("vera", PASSWORD + "2").role == "operator"
    assert [row[:4] for row in audit_rows(store)] == [("ada", "user.add", "vera", "role=viewer"),
                                                      ("ada", "user.add", "vera", "role=operator")]


def test_a_password_too_short_adds_nobody_and_audits_nothing(store):
    with pytest.raises(ConfigError):
        actions.add_user(ADA, "vera", "short", "viewer")
    assert not accounts.user_exists("vera") and audit_rows(store) == []


def test_an_admin_cannot_disable_their_own_account_but_may_another(store):
    actions.add_user(ADA, "ada", PASSWORD, "admin")
    actions.add_user(ADA, "vera", PASSWORD, "viewer")
    ada_id, vera_id = (store.scalar(select(User.id).where(User.name == n)) for n in ("ada", "vera"))
    with pytest.raises(actions.Refused, match="your own account"):
        actions.set_user_disabled(ADA, ada_id, True)
    assert actions.set_user_disabled(ADA, vera_id, True) == "vera"
    assert accounts.authenticate("vera", PASSWORD) is None
    with pytest.raises(NotFound):
        actions.set_user_disabled(ADA, 999, True)
    assert [row[1:3] for row in audit_rows(store)][-1] == ("user.disable", "vera")


def test_a_token_is_created_for_its_owner_and_revoked_each_with_its_record(store):
    actions.add_user(ADA, "otto", PASSWORD, "operator")
    secret = actions.create_token(ADA, "ci", "operator", "otto", "30d")
    assert accounts.token_identity(secret).owner == "otto"
    actions.revoke_token(ADA, "ci")
    with pytest.raises(AccessDenied, match="revoked"):
        accounts.token_identity(secret)
    assert [row[1:4] for row in audit_rows(store)][-2:] == [
        ("token.create", "ci", "role=operator owner=otto expires=30d"), ("token.revoke", "ci", "")]
