"""The web UI through Flask's test client, with a real SQLite store seeded directly.

Every page and form: who may see and press what (viewer, operator, admin),
CSRF on every POST, escaping of whatever the store holds, security headers,
and a fixed number of SQL queries per page however long the history is.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select

from fleet.errors import RevisionRejected
from fleet.fake_runner import FakeRunner
from fleet.revisions import sync_source
from fleet.settings import load_settings
from fleet.store import accounts, db, queries, records
from fleet.store.models import (
    Approval, AuditEntry, Host, Revision, Run, RunHost, RunOutput, SourceState, TaskResultRow, User,
)
from fleet.web import create_app
from fleet.web.ui import present
from tests.conftest import git, make_source
from tests.web.conftest import PASSWORD, make_app

XSS = "<script>alert(1)</script>"
MOTD_DIFF = (
    "--- before: /etc/motd\n+++ after: /etc/motd\n@@ -1,2 +1,2 @@\n-Welcome\n+Managed by fleet\n"
    f"+{XSS}\n context line\n"
)
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
SHA = "a" * 40
BAD_SHA = "b" * 40


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    with app.app_context():
        seed_fleet()
    return app


def seed_fleet() -> None:
    """A small fleet: one drifted host (with a nasty task name and diff), others in each status."""
    db.session.add(SourceState(id=1, repo="/srv/fleet-config.git", desired_sha=SHA, head_sha=BAD_SHA,
                               last_fetch_at=NOW, stale=False))
    db.session.add_all([
        Revision(sha=SHA, status="valid", message="Tune sshd\n\nlonger text", author="Tess",
                 authored_at=NOW, fetched_at=NOW),
        Revision(sha=BAD_SHA, status="rejected", message="Broken YAML", author="Tess", authored_at=NOW,
                 fetched_at=NOW, error="playbook syntax check failed: in roles/app/tasks/main.yml, line 7, "
                                       f"column 3: mapping values are not allowed here {XSS}"),
    ])
    check = Run(kind="check", trigger="commit", status="successful", revision_sha=SHA, created_at=NOW,
                started_at=NOW, finished_at=NOW + timedelta(seconds=9), hosts_total=4, hosts_in_sync=1,
                hosts_drifted=1, hosts_unreachable=1, hosts_failed=1, requested_by="controller")
    db.session.add(check)
    db.session.flush()
    db.session.add_all([
        Host(name="web1", address="127.0.10.1", groups="web", status="drifted", last_check_at=NOW,
             last_check_sha=SHA, last_check_run_id=check.id, drifted_tasks=2, verified_tasks=15, total_tasks=17,
             os="Debian 12", virtualization="container"),
        Host(name="db1", address="127.0.11.1", groups="db", status="in_sync", last_check_at=NOW,
             last_check_run_id=check.id, verified_tasks=14, total_tasks=16, os="Debian 12", virtualization="VM"),
        Host(name="web2", address="127.0.10.2", groups="web legacy", status="failed", last_check_run_id=check.id,
             message="Permission denied"),
        Host(name="db2", address="127.0.11.2", groups="db", status="unreachable", message="timed out"),
        Host(name="new1", groups="web_canary", status="unknown"),
    ])
    db.session.add_all([
        RunHost(run_id=check.id, host="web1", status="drifted", ok=13, changed=2, skipped=1, unverified=2),
        RunHost(run_id=check.id, host="db1", status="in_sync", ok=14, unverified=2),
        RunHost(run_id=check.id, host="web2", status="failed", failed=1),
        RunHost(run_id=check.id, host="db2", status="unreachable", unreachable=1),
        TaskResultRow(run_id=check.id, seq=1, host="web1", task="baseline : message of the day",
                      action="ansible.builtin.template", status="changed", diff=MOTD_DIFF),
        TaskResultRow(run_id=check.id, seq=2, host="web1", task=XSS, action="ansible.builtin.copy",
                      status="changed", diff=f"--- before\n+++ after\n-{XSS}\n+safe\n"),
        TaskResultRow(run_id=check.id, seq=3, host="web1", task="restart app", action="ansible.builtin.command",
                      status="skipped", unverified=True, note="would have run if not in check mode"),
        TaskResultRow(run_id=check.id, seq=4, host="web2", task="install packages", action="ansible.builtin.apt",
                      status="failed", note="E: Could not get lock"),
        RunOutput(run_id=check.id, seq=1, text=f"PLAY [all] \x1b[0;32m{XSS}\x1b[0m"),
        Approval(host="web1", check_run_id=check.id, revision_sha=SHA, drift_signature="sig",
                 summary="baseline : message of the day", status="pending", created_at=NOW),
    ])
    db.session.commit()


def csrf_of(client, path: str = "/login") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(app, name: str):
    client = app.test_client()
    answer = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": csrf_of(client)})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


def post(client, path: str, data: dict | None = None):
    """A POST as the page's form sends it: with the session's CSRF token."""
    return client.post(path, data={"csrf_token": csrf_of(client, "/"), **(data or {})})


@pytest.fixture
def viewer(app):
    return login(app, "vera")


@pytest.fixture
def operator(app):
    return login(app, "otto")


@pytest.fixture
def admin(app):
    return login(app, "ada")


def text(answer) -> str:
    return answer.get_data(as_text=True)


def check_run_id(app) -> int:
    with app.app_context():
        return db.session.scalar(select(Run.id).where(Run.kind == "check"))


def audit_actions(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [(e.actor, e.action, e.target) for e in db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


# --- logging in and out ------------------------------------------------------------

def test_login_lands_on_the_dashboard_and_logout_ends_the_session(app):
    client = app.test_client()
    answer = client.post("/login", data={"name": "vera", "password": PASSWORD, "csrf_token": csrf_of(client)})
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert "vera" in text(client.get("/"))
    assert post(client, "/logout").status_code == 302
    assert client.get("/").status_code == 302
    assert ("vera", "logout", "") in audit_actions(app)


def test_wrong_password_is_401_and_audited(app):
    client = app.test_client()
    answer = client.post("/login", data={"name": "vera", "password": "nope-nope-nope", "csrf_token": csrf_of(client)})
    assert answer.status_code == 401
    assert "Wrong name or password" in text(answer)
    assert ("vera", "login.failed", "") in audit_actions(app)


PAGES = ["/", "/hosts", "/hosts?status=drifted&group=web", "/hosts/web1", "/runs", "/runs?kind=check&status=successful",
         "/runs/1", "/runs/1/live", "/revisions", "/approvals"]
ADMIN_PAGES = ["/admin/users", "/admin/tokens", "/admin/audit"]


@pytest.mark.parametrize("path", PAGES + ADMIN_PAGES)
def test_anonymous_visitors_are_sent_to_log_in(app, path):
    answer = app.test_client().get(path)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", PAGES)
def test_a_viewer_reads_every_page(viewer, path):
    assert viewer.get(path).status_code == 200


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_are_403_for_an_operator_and_200_for_an_admin(operator, admin, path):
    assert operator.get(path).status_code == 403
    assert admin.get(path).status_code == 200


def test_the_admin_tab_shows_for_admins_only(operator, admin):
    assert "/admin/users" not in text(operator.get("/"))
    assert "/admin/users" in text(admin.get("/"))


def test_unknown_host_and_run_are_404_pages(viewer):
    assert viewer.get("/hosts/nope").status_code == 404
    assert viewer.get("/runs/999").status_code == 404
    assert viewer.get("/runs?before=abc").status_code == 400


# --- buttons and POSTs by role --------------------------------------------------------

STATE_CHANGING_POSTS = ["/hosts/web1/check", "/hosts/web1/converge", "/runs/check", "/runs/1/cancel",
                        "/approvals/1/approve"]
ADMIN_POSTS = ["/admin/users", "/admin/users/1/disable", "/admin/users/1/enable", "/admin/tokens",
               "/admin/tokens/1/revoke"]


def test_a_viewer_sees_no_buttons(viewer):
    page = text(viewer.get("/hosts/web1"))
    assert "/converge\"" not in page and "/check\"" not in page and ">Converge<" not in page
    assert "Approve converge" not in text(viewer.get("/approvals"))
    assert "Check all hosts" not in text(viewer.get("/"))


def test_an_operator_sees_the_buttons(operator):
    page = text(operator.get("/hosts/web1"))
    assert 'action="/hosts/web1/converge"' in page and 'action="/hosts/web1/check"' in page
    assert 'action="/approvals/1/approve"' in text(operator.get("/approvals"))


@pytest.mark.parametrize("path", STATE_CHANGING_POSTS)
def test_a_viewer_gets_403_on_every_operator_post(app, viewer, path):
    assert post(viewer, path).status_code == 403
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Run)) == 1


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_an_operator_gets_403_on_every_admin_post(operator, path):
    assert post(operator, path, {"name": "x", "role": "viewer"}).status_code == 403


@pytest.mark.parametrize("path", STATE_CHANGING_POSTS + ADMIN_POSTS + ["/logout"])
def test_a_post_without_the_csrf_token_is_403(admin, path):
    answer = admin.post(path, data={"name": "x", "role": "viewer"})
    assert answer.status_code == 403
    assert "CSRF" in text(answer)
    wrong = admin.post(path, data={"csrf_token": "forged", "name": "x", "role": "viewer"})
    assert wrong.status_code == 403


def test_anonymous_posts_are_refused(app):
    client = app.test_client()
    assert client.post("/hosts/web1/converge").status_code == 403  # no session, no CSRF token
    token = csrf_of(client)
    assert client.post("/hosts/web1/converge", data={"csrf_token": token}).status_code == 302  # to log in


def test_operator_converge_queues_a_run_audits_and_redirects_to_it(app, operator):
    answer = post(operator, "/hosts/web1/converge")
    assert answer.status_code == 303
    with app.app_context():
        run = db.session.scalar(select(Run).where(Run.kind == "converge"))
        assert (run.status, run.trigger, run.limit, run.requested_by) == ("queued", "manual", "web1", "otto")
    assert answer.headers["Location"] == f"/runs/{run.id}"
    assert ("otto", "run.request", "web1") in audit_actions(app)
    page = text(operator.get(answer.headers["Location"]))
    assert f"run {run.id} queued" in page
    assert 'id="live"' in page and "run.js" in page  # a queued run shows live


def test_a_second_converge_of_the_same_host_is_refused_with_409(app, operator):
    first = post(operator, "/hosts/web1/converge")
    again = post(operator, "/hosts/web1/converge")
    assert again.status_code == 409
    assert "already being converged by run" in text(again)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Run).where(Run.kind == "converge")) == 1
    assert first.status_code == 303


def test_a_converge_of_every_host_blocks_a_converge_of_one(app, operator):
    with app.app_context():
        db.session.add(Run(kind="converge", trigger="policy", status="running", limit="web*"))
        db.session.commit()
    assert post(operator, "/hosts/web1/converge").status_code == 409
    assert post(operator, "/hosts/db1/converge").status_code == 303


def test_check_buttons_queue_checks_and_join_an_identical_one(app, operator):
    one = post(operator, "/hosts/web1/check")
    two = post(operator, "/hosts/web1/check")
    assert one.status_code == two.status_code == 303
    assert one.headers["Location"] == two.headers["Location"]
    every = post(operator, "/runs/check")
    assert every.status_code == 303
    with app.app_context():
        limits = [r.limit for r in db.session.scalars(select(Run).where(Run.status == "queued"))]
    assert sorted(limits) == ["", "web1"]
    assert [a for a in audit_actions(app) if a[1] == "run.request"] == [  # the joined one too: who asked is kept
        ("otto", "run.request", "web1"), ("otto", "run.request", "web1"), ("otto", "run.request", "all hosts")]


def test_cancel_a_queued_run_and_refuse_to_cancel_a_finished_one(app, operator):
    queued = post(operator, "/hosts/web1/converge").headers["Location"]
    assert post(operator, f"{queued}/cancel").status_code == 303
    with app.app_context():
        run = db.session.scalar(select(Run).where(Run.kind == "converge"))
        assert run.status == "canceled" and run.cancel_reason == "canceled by otto"
    assert ("otto", "run.cancel", f"run {run.id}") in audit_actions(app)
    assert post(operator, f"/runs/{check_run_id(app)}/cancel").status_code == 409


def test_approve_a_pending_approval_once(app, operator):
    assert post(operator, "/approvals/1/approve").status_code == 303
    with app.app_context():
        approval = db.session.get(Approval, 1)
        assert (approval.status, approval.decided_by) == ("approved", "otto")
    assert ("otto", "approval.approve", "web1") in audit_actions(app)
    again = post(operator, "/approvals/1/approve")
    assert again.status_code == 409 and "not pending" in text(again)
    assert post(operator, "/approvals/99/approve").status_code == 404


ROLLED_BACK = (f"desired revision {SHA[:12]} does not descend from {'c' * 12}, which this host was converged to: "
               "history was rewritten or rolled back")
JUMP = "inventory went from 4 to 40 hosts (+36), above max_inventory_change 25%"


def hold_automation(app) -> tuple[int, int]:
    """What the controller leaves for an operator after a force-push back and an inventory jump."""
    with app.app_context():
        run_id = db.session.scalar(select(Run.id))
        rollback = records.open_approval("web2", run_id, SHA, "r" * 64, "baseline : message of the day",
                                         ROLLED_BACK)
        jump = records.open_inventory_approval(SHA, [f"web{i}" for i in range(40)], run_id, JUMP)
        db.session.add(TaskResultRow(run_id=run_id, seq=9, host="web2", task="Migrate the schema",
                                     action="ansible.builtin.command", status="skipped", unverified=True,
                                     reason="check mode skipped it: Command would have run if not in check mode"))
        db.session.commit()
        return rollback.id, jump.id


def test_held_automation_says_why_on_the_dashboard_approvals_and_host_pages(app, viewer):
    rollback, jump = hold_automation(app)
    dashboard = text(viewer.get("/"))
    assert "Auto converge at" in dashboard and f"waits: {JUMP}." in dashboard
    assert f'href="/approvals#approval-{jump}">Approve the inventory change</a>' in dashboard
    page = text(viewer.get("/approvals"))
    assert f"Auto converge waits: {JUMP}" in page and f"Held: {ROLLED_BACK}" in page
    # The unverified task is part of what the approval covers, shown with its reason.
    assert "Migrate the schema" in page and "Unverified: check mode skipped it: Command would have run" in page
    host = text(viewer.get("/hosts/web2"))
    assert f"Not converged automatically:</strong> {ROLLED_BACK}" in host
    assert f'href="/approvals#approval-{rollback}"' in host


def test_one_action_releases_a_held_rollout(app, operator):
    _, jump = hold_automation(app)
    answer = post(operator, f"/approvals/{jump}/approve")
    assert answer.status_code == 303
    with app.app_context():
        assert db.session.get(Approval, jump).status == "approved"
        assert queries.revision_inventory(SHA).accepted
    assert ("otto", "approval.approve", f"revision {SHA[:12]}") in audit_actions(app)
    assert "Auto converge at" not in text(operator.get("/"))


# --- admin -------------------------------------------------------------------------------

def test_token_creation_shows_the_secret_once(app, admin):
    answer = post(admin, "/admin/tokens", {"name": "ci", "role": "operator"})
    assert answer.status_code == 200
    secret = re.search(r'<code id="secret">(flt_[^<]+)</code>', text(answer)).group(1)
    with app.app_context():
        assert accounts.token_identity(secret).name == "ci"
    assert secret not in text(admin.get("/admin/tokens"))
    assert "fleet_session" not in answer.headers.get("Set-Cookie", "") or secret not in answer.headers["Set-Cookie"]
    assert ("ada", "token.create", "ci") in audit_actions(app)
    assert post(admin, "/admin/tokens", {"name": "ci", "role": "viewer"}).status_code == 400  # name taken
    assert admin.get("/api/v1/healthz", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_revoke_a_token(app, admin):
    post(admin, "/admin/tokens", {"name": "ci", "role": "viewer"})
    with app.app_context():
        token_id = accounts.list_tokens()[0].id
    assert post(admin, f"/admin/tokens/{token_id}/revoke").status_code == 303
    with app.app_context():
        assert accounts.list_tokens()[0].revoked
    assert ("ada", "token.revoke", "ci") in audit_actions(app)


def test_add_a_user_with_a_generated_password_shown_once(app, admin):
    answer = post(admin, "/admin/users", {"name": "nina", "role": "operator", "password": ""})
    assert answer.status_code == 200
    password = re.search(r'<code id="secret">([^<]+)</code>', text(answer)).group(1)
    with app.app_context():
        assert accounts.authenticate("nina", password).role == "operator"
    assert ("ada", "user.add", "nina") in audit_actions(app)
    assert post(admin, "/admin/users", {"name": "nina", "role": "viewer"}).status_code == 400  # exists
    assert post(admin, "/admin/users", {"name": "bob", "role": "viewer", "password": "short"}).status_code == 400
    assert post(admin, "/admin/users", {"name": "bob", "role": "boss", "password": PASSWORD}).status_code == 400


def test_disable_a_user_ends_their_access_and_admins_cannot_disable_themselves(app, admin, viewer):
    with app.app_context():
        ids = {u.name: u.id for u in db.session.scalars(select(User))}
    assert post(admin, f"/admin/users/{ids['vera']}/disable").status_code == 303
    assert viewer.get("/").status_code == 302  # logged out
    assert post(admin, f"/admin/users/{ids['ada']}/disable").status_code == 400
    assert post(admin, f"/admin/users/{ids['vera']}/enable").status_code == 303
    assert ("ada", "user.disable", "vera") in audit_actions(app)
    assert ("ada", "user.enable", "vera") in audit_actions(app)


def test_the_audit_log_lists_who_did_what_with_keyset_pages(app, admin):
    with app.app_context():
        for n in range(130):
            accounts.audit("bot", "run.request", f"host{n}")
    page = text(admin.get("/admin/audit"))
    assert "host129" in page and "host29" not in page
    older = re.search(r'href="/admin/audit\?before=(\d+)"', page)
    assert "host29" in text(admin.get(f"/admin/audit?before={older.group(1)}"))


# --- what pages show ------------------------------------------------------------------------

def test_store_text_is_escaped_everywhere(viewer):
    for path in ["/hosts/web1", "/runs/1", "/revisions", "/approvals"]:
        page = text(viewer.get(path))
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert "<script>alert" not in page, path


def test_the_host_page_shows_drift_as_a_coloured_diff_with_coverage_and_facts(viewer):
    page = text(viewer.get("/hosts/web1"))
    assert '<span class="dl d-head">+++ after: /etc/motd</span>' in page
    assert '<span class="dl d-add">+Managed by fleet</span>' in page
    assert '<span class="dl d-del">-Welcome</span>' in page
    assert '<span class="dl d-hunk">@@ -1,2 +1,2 @@</span>' in page
    assert "15/17 tasks verified" in page
    assert "would have run if not in check mode" in page  # why a task is unverified
    assert "Debian 12" in page and "container" in page
    assert "≠</span> <span class=\"word\">drifted</span>" in page  # a symbol and a word, not colour alone


def test_hosts_filter_by_status_and_whole_group_names(viewer):
    drifted = text(viewer.get("/hosts?status=drifted"))
    assert 'href="/hosts/web1"' in drifted and 'href="/hosts/db1"' not in drifted
    web = text(viewer.get("/hosts?group=web"))
    assert 'href="/hosts/web1"' in web and 'href="/hosts/web2"' in web
    assert 'href="/hosts/new1"' not in web  # group web_canary is not group web
    assert 'href="/hosts/web2"' in text(viewer.get("/hosts?group=legacy"))
    assert 'href="/hosts/web1"' not in text(viewer.get("/hosts?group=%25"))  # LIKE wildcards are escaped


def test_dashboard_shows_counts_chart_source_and_recent_runs(viewer):
    page = text(viewer.get("/"))
    assert '<svg viewBox=' in page and "1 of 5 hosts drifted" in page
    assert "aaaaaaaaaaaa" in page and "Tune sshd" in page
    assert "bbbbbbbbbbbb" in page  # a newer commit was rejected
    assert "1 approval waiting" in page
    assert 'href="/runs/1"' in page


def test_a_stale_source_says_so(app, viewer):
    with app.app_context():
        state = db.session.get(SourceState, 1)
        state.stale, state.last_error = True, "could not read from remote repository"
        db.session.commit()
    assert "could not read from remote repository" in text(viewer.get("/"))


def test_revisions_show_validation_errors_with_file_and_line(viewer):
    page = text(viewer.get("/revisions"))
    assert "<code>roles/app/tasks/main.yml</code> line 7, column 3" in page


# --- what a real git source brings: commit messages and fleet.yml mistakes -----------------------

COMMIT_SUBJECT = "Tighten sshd on every host"
COMMIT_BODY = "Password logins are turned off.\nRoot may log in with a key only."


def fetch_source(tmp_path, fleet_yml: str | None = None, message: tuple[str, ...] = (COMMIT_SUBJECT, COMMIT_BODY)):
    """An app (one viewer, vera) that fetched a real git source: the example playbooks, then a commit with
    ``message`` (one git -m per paragraph) adding ``fleet_yml`` when given; a head that fails is stored rejected."""
    repo = make_source(tmp_path / "source", "all:\n  hosts: {}\n")
    if fleet_yml is not None:
        (repo / "fleet.yml").write_text(fleet_yml)
        git(repo, "add", "fleet.yml")
    git(repo, "commit", "-q", "--allow-empty", *(arg for paragraph in message for arg in ("-m", paragraph)))
    settings = load_settings(flags={"repo": str(repo), "data_dir": str(tmp_path / "data")}, environ={}, cwd=tmp_path)
    app = create_app(settings)
    with app.app_context():
        accounts.add_user("vera", PASSWORD, "viewer")
        try:
            sync_source(settings, runner=FakeRunner())
        except RevisionRejected:
            pass  # recorded as rejected; what the revisions page shows of it is under test
    return app


def test_the_dashboard_shows_a_commits_subject_and_the_revisions_page_its_whole_message(tmp_path):
    viewer = login(fetch_source(tmp_path), "vera")
    dashboard = text(viewer.get("/"))
    assert COMMIT_SUBJECT in section(dashboard, "h-source")
    assert "Password logins" not in dashboard and "Root may log in" not in dashboard
    revisions = text(viewer.get("/revisions"))
    assert f'<span class="strong">{COMMIT_SUBJECT}</span>' in revisions
    assert f'<pre class="commit-body" tabindex="0">{COMMIT_BODY}</pre>' in revisions


def test_a_commit_of_one_line_shows_no_body(tmp_path):
    viewer = login(fetch_source(tmp_path, message=("Only a subject",)), "vera")
    revisions = text(viewer.get("/revisions"))
    assert "Only a subject" in revisions and "commit-body" not in revisions


def test_every_fleet_yml_mistake_of_a_rejected_revision_is_listed_with_its_line(tmp_path):
    fleet_yml = 'schedule: "every hour"\nremediation:\n  - group: web\n    mode: yolo\n'
    viewer = login(fetch_source(tmp_path, fleet_yml=fleet_yml), "vera")
    revisions = text(viewer.get("/revisions"))
    assert "<code>fleet.yml</code> line 1</li>" in revisions and "<code>fleet.yml</code> line 4</li>" in revisions
    assert "fleet.yml line 1: schedule must be a cron expression" in revisions
    assert "fleet.yml line 4: remediation[0].mode must be one of auto, approve, report, got &#39;yolo&#39;" in revisions


ERROR_PLACES = {
    "Ansible's": ("playbook syntax check failed: in roles/app/tasks/main.yml, line 7, column 3: mapping values",
                  [("roles/app/tasks/main.yml", 7, "3")]),
    "fleet.yml's, one a line, one place per line": (
        "fleet.yml has 3 mistakes:\nfleet.yml line 1: schedule …\nfleet.yml line 4: a …\nfleet.yml line 4: b …",
        [("fleet.yml", 1, None), ("fleet.yml", 4, None)]),
    "fleet.yml's YAML syntax": ("fleet.yml is not valid YAML at line 3, column 2: expected <block end>",
                                [("fleet.yml", 3, "2")]),
    "none": ("inventory path 'hosts/' does not exist", []),
}


@pytest.mark.parametrize(("error", "places"), ERROR_PLACES.values(), ids=ERROR_PLACES.keys())
def test_the_places_a_rejection_names_are_found_in_its_order(error, places):
    assert [(p["file"], p["line"], p["column"]) for p in present.error_locations(error)] == places


def test_the_run_page_shows_hosts_tasks_diffs_and_plain_output(viewer):
    page = text(viewer.get("/runs/1"))
    assert "install packages" in page and "E: Could not get lock" in page
    assert '<span class="dl d-add">+Managed by fleet</span>' in page
    assert "PLAY [all]" in page and "\x1b" not in page
    assert 'id="live"' not in page  # finished: no live view, no script


def test_live_json_returns_what_is_new_since_a_sequence_number(app, viewer):
    with app.app_context():
        run = Run(kind="converge", trigger="manual", status="running", limit="web1", started_at=NOW)
        db.session.add(run)
        db.session.flush()
        db.session.add_all([
            TaskResultRow(run_id=run.id, seq=5, host="web1", task="a", action="copy", status="ok"),
            TaskResultRow(run_id=run.id, seq=9, host="web1", task=XSS, action="copy", status="changed"),
            RunOutput(run_id=run.id, seq=5, text="TASK [a]"), RunOutput(run_id=run.id, seq=9, text="TASK [b]"),
        ])
        db.session.commit()
        run_id = run.id
    data = viewer.get(f"/runs/{run_id}/live?after_task=5&after_output=0").get_json()
    assert data["status"] == "running" and data["done"] is False
    assert [t["task"] for t in data["tasks"]] == [XSS]  # JSON; the page inserts it with textContent
    assert data["output"] == ["TASK [a]", "TASK [b]"]
    assert (data["after_task"], data["after_output"]) == (9, 9)
    page = text(viewer.get(f"/runs/{run_id}"))
    assert 'data-after-task="9"' in page and 'data-after-output="9"' in page


def test_runs_filters_and_keyset_pages(app, viewer):
    seed_runs(app, 220)  # 110 converges: more than two pages
    first = text(viewer.get("/runs?kind=converge"))
    ids = [int(i) for i in re.findall(r'<td><a href="/runs/(\d+)">#', first)]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    older = re.search(r'href="/runs\?before=(\d+)&amp;kind=converge"', first) or \
        re.search(r'href="/runs\?kind=converge&amp;before=(\d+)"', first)
    assert older and int(older.group(1)) == ids[-1]
    second = text(viewer.get(f"/runs?kind=converge&before={ids[-1]}"))
    ids2 = [int(i) for i in re.findall(r'<td><a href="/runs/(\d+)">#', second)]
    assert len(ids2) == 50 and max(ids2) < min(ids)
    back = text(viewer.get(f"/runs?kind=converge&after={ids2[0]}"))
    assert [int(i) for i in re.findall(r'<td><a href="/runs/(\d+)">#', back)] == ids
    by_host = text(viewer.get("/runs?host=db1"))
    assert re.findall(r'<td><a href="/runs/(\d+)">#', by_host) == ["1"]
    assert "No run matches" in text(viewer.get("/runs?trigger=webhook"))


def test_security_headers_and_cookie_flags(app, viewer):
    answer = viewer.get("/")
    csp = answer.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    client = app.test_client()
    login_answer = client.post("/login", data={"name": "vera", "password": PASSWORD, "csrf_token": csrf_of(client)})
    cookie = login_answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_pages_have_no_inline_script_or_style(admin):
    for path in PAGES[:-3] + ADMIN_PAGES + ["/revisions", "/approvals", "/login"]:
        page = text(admin.get(path))
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path
        assert " style=" not in page and "<style" not in page, path
        assert not re.search(r"\son[a-z]+=", page), path


# --- a fixed number of queries per page ---------------------------------------------------

def seed_runs(app, count: int) -> None:
    """`count` more finished runs touching db1 and web1, inserted directly."""
    with app.app_context():
        for n in range(count):
            kind = "check" if n % 2 else "converge"
            run = Run(kind=kind, trigger="schedule", status="successful", revision_sha=SHA, created_at=NOW,
                      started_at=NOW + timedelta(minutes=n), finished_at=NOW + timedelta(minutes=n, seconds=5),
                      hosts_total=2, hosts_drifted=n % 3, hosts_in_sync=2 - n % 3)
            db.session.add(run)
            db.session.flush()
            db.session.add_all([RunHost(run_id=run.id, host="web1", status="in_sync", ok=3),
                                TaskResultRow(run_id=run.id, seq=1, host="web1", task="t", action="copy",
                                              status="ok"),
                                RunOutput(run_id=run.id, seq=1, text="ok")])
        db.session.commit()


@contextmanager
def counting_queries(app):
    counted = []

    def count(*_args):
        counted.append(1)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield counted
    finally:
        event.remove(engine, "before_cursor_execute", count)


def queries_per_page(app, client, paths: dict[str, str]) -> dict[str, int]:
    counts = {}
    for label, path in paths.items():
        with counting_queries(app) as counted:
            assert client.get(path).status_code == 200, path
        counts[label] = len(counted)
    return counts


@pytest.mark.parametrize("small, large", [(5, 300)])
def test_every_page_costs_the_same_number_of_queries_however_long_the_history(tmp_path, small, large):
    counts = []
    for size in (small, large):
        settings = load_settings(flags={"repo": str(tmp_path / str(size)), "data_dir": str(tmp_path / str(size))},
                                 environ={}, cwd=tmp_path)
        app = create_app(settings)
        with app.app_context():
            accounts.add_user("ada", PASSWORD, "admin")
            seed_fleet()
        seed_runs(app, size)
        client = login(app, "ada")
        with app.app_context():
            newest = db.session.scalar(select(func.max(Run.id)))
        paths = {"dashboard": "/", "hosts": "/hosts", "drifted hosts": "/hosts?status=drifted",
                 "unverified hosts": "/hosts?status=unverified",
                 "host": "/hosts/web1", "host history page 2": f"/hosts/web1?before={newest - 3}",
                 "runs page 1": "/runs", "runs of a host": "/runs?host=web1", "deep runs page": "/runs?before=4",
                 "filtered deep runs page": f"/runs?kind=check&trigger=schedule&before={newest - 2}",
                 "first run": "/runs/1", "newest run": f"/runs/{newest}", "live json": "/runs/1/live?after_task=0",
                 "revisions": "/revisions", "approvals": "/approvals", "audit log": "/admin/audit",
                 "workers": "/workers"}
        counts.append(queries_per_page(app, client, paths))
    assert counts[0] == counts[1]
    assert max(counts[1].values()) <= 12, counts[1]


def test_every_page_renders_on_an_empty_store(tmp_path):
    settings = load_settings(flags={"repo": str(tmp_path), "data_dir": str(tmp_path / "data")}, environ={},
                             cwd=tmp_path)
    app = create_app(settings)
    with app.app_context():
        accounts.add_user("ada", PASSWORD, "admin")
    client = login(app, "ada")
    for path in ["/", "/hosts", "/runs", "/revisions", "/approvals"] + ADMIN_PAGES:
        assert client.get(path).status_code == 200, path
    page = text(client.get("/"))
    assert "The source was never fetched" in page and "No runs yet" in page


class FakeRun:
    def __init__(self, run_id, kind="check", limit=""):
        self.id, self.kind, self.limit = run_id, kind, limit
        self.finished_at = self.started_at = self.created_at = NOW


@pytest.mark.parametrize("verdicts, expected", [
    pytest.param([(1, "a", "drifted"), (1, "b", "drifted"), (2, "a", "in_sync"), (3, "a", "in_sync")], [2, 1, 1],
                 id="a converge of one host leaves the other drifted"),
    pytest.param([(1, "a", "drifted"), (2, "a", "incomplete"), (3, "b", "drifted")], [1, 1, 2],
                 id="an incomplete verdict changes nothing; a host counts from its first verdict on"),
    pytest.param([(1, "gone", "drifted"), (2, "a", "drifted"), (3, "a", "in_sync")], [1, 2, 1],
                 id="hosts gone from the inventory are left out; an untouched host keeps its status"),
])
def test_drift_over_time_replays_verdicts_over_the_current_fleet(verdicts, expected):
    from fleet.web.ui import present

    statuses = {"a": "in_sync", "b": "drifted"}
    points = present.drift_timeline([FakeRun(1), FakeRun(2, "converge", "a"), FakeRun(3)], verdicts, statuses)
    assert [p.drifted for p in points] == expected
    assert all(p.total == 2 for p in points)
    chart = present.drift_chart(points)
    assert [bar.run_id for bar in chart.bars] == [1, 2, 3]
    assert "after run 2 (converge of a)" in chart.bars[1].title


def test_hosts_and_host_history_page_by_keyset(app, viewer):
    with app.app_context():
        db.session.add_all([Host(name=f"zz{n:03d}", groups="bulk", status="in_sync") for n in range(205)])
        db.session.commit()
    first = text(viewer.get("/hosts?group=bulk"))
    assert "zz000" in first and "zz199" in first and "zz200" not in first
    assert 'href="/hosts?group=bulk&amp;after=zz199"' in first
    second = text(viewer.get("/hosts?group=bulk&after=zz199"))
    assert "zz200" in second and "zz204" in second and 'href="/hosts/zz199"' not in second
    seed_runs(app, 30)
    history = text(viewer.get("/hosts/web1"))
    shown = [int(i) for i in re.findall(r'<td><a href="/runs/(\d+)">#', history)]
    assert len(shown) == 20 and shown == sorted(shown, reverse=True)
    older = text(viewer.get(f"/hosts/web1?before={shown[-1]}"))
    rest = [int(i) for i in re.findall(r'<td><a href="/runs/(\d+)">#', older)]
    assert rest and max(rest) < min(shown) and 1 in rest


# --- the truth rule on every page: unverified hosts, causes, flapping, tasks that ran for real -------------

SKIP_REASON = "check mode skipped it: Check mode is not supported for this task."
PROBE_REASON = ("skipped because its condition reads `installed`, registered by 'probe', "
                "which check mode could not evaluate")


def seed_truth_rule(app) -> int:
    """A second check: app1 unverified, cache1 in sync only by accept_unverified, web3 drifted for every cause."""
    with app.app_context():
        run = Run(kind="check", trigger="manual", status="successful", revision_sha=SHA, created_at=NOW,
                  started_at=NOW + timedelta(minutes=5), finished_at=NOW + timedelta(minutes=6), hosts_total=3,
                  hosts_in_sync=1, hosts_drifted=1, hosts_unverified=1, requested_by="otto")
        db.session.add(run)
        db.session.flush()
        db.session.add_all([
            Host(name="app1", groups="app", status="unverified", last_check_at=NOW, last_check_sha=SHA,
                 last_check_run_id=run.id, verified_tasks=5, total_tasks=8),
            Host(name="cache1", groups="app", status="in_sync", last_check_at=NOW, last_check_sha=SHA,
                 last_check_run_id=run.id, verified_tasks=4, total_tasks=5),
            Host(name="web3", groups="web", status="drifted", last_check_at=NOW, last_check_sha=SHA,
                 last_check_run_id=run.id, drifted_tasks=3, verified_tasks=6, total_tasks=6),
            RunHost(run_id=run.id, host="app1", status="unverified", ok=4, skipped=3, unverified=3, accepted=1,
                    verified=5, executed=2),
            RunHost(run_id=run.id, host="cache1", status="in_sync", ok=4, skipped=1, unverified=1, accepted=1,
                    verified=4),
            RunHost(run_id=run.id, host="web3", status="drifted", ok=2, changed=3, verified=6, executed=1),
            # app1: unverified for two reasons, one more accepted, two tasks that ran for real
            TaskResultRow(run_id=run.id, seq=10, host="app1", task="probe", action="ansible.builtin.raw",
                          status="skipped", unverified=True, reason=SKIP_REASON, note="skipped"),
            TaskResultRow(run_id=run.id, seq=11, host="app1", task="install app", action="ansible.builtin.apt",
                          status="skipped", unverified=True, reason=PROBE_REASON),
            TaskResultRow(run_id=run.id, seq=12, host="app1", task="Restart app", action="ansible.builtin.command",
                          status="skipped", unverified=True, accepted=True, reason=f"would have run {XSS}"),
            TaskResultRow(run_id=run.id, seq=13, host="app1", task="read version file",
                          action="ansible.builtin.command", status="ok", executed=True),
            TaskResultRow(run_id=run.id, seq=14, host="app1", task="refresh apt cache", action="ansible.builtin.apt",
                          status="changed", executed=True, diff="EXECUTED-DIFF-APP1"),
            # cache1: its only unverified task is accepted
            TaskResultRow(run_id=run.id, seq=20, host="cache1", task="flush cache", action="ansible.builtin.shell",
                          status="skipped", unverified=True, accepted=True, reason="a shell command would have run"),
            # web3: a drifted task per cause, one flapping; a changed task that ran for real; a rescued failure
            TaskResultRow(run_id=run.id, seq=30, host="web3", task="sshd config", action="ansible.builtin.template",
                          status="changed", cause="commit", diff="--- before\n+++ after\n-a\n+b\n"),
            TaskResultRow(run_id=run.id, seq=31, host="web3", task="motd", action="ansible.builtin.copy",
                          status="changed", cause="local", flapping=True, diff="--- before\n+++ after\n-c\n+d\n"),
            TaskResultRow(run_id=run.id, seq=32, host="web3", task="base packages", action="ansible.builtin.apt",
                          status="changed", cause="new"),
            TaskResultRow(run_id=run.id, seq=33, host="web3", task="migrate schema", action="ansible.builtin.command",
                          status="changed", executed=True, diff="EXECUTED-DIFF-WEB3"),
            TaskResultRow(run_id=run.id, seq=34, host="web3", task="try the fast path", action="ansible.builtin.uri",
                          status="failed", rescued=True, note="failed (rescued): connection refused"),
        ])
        db.session.commit()
        return run.id


def section(page: str, heading_id: str) -> str:
    """The HTML of one <section> of a page, found by its heading's id."""
    start = page.index(f'id="{heading_id}"')
    return page[start:page.index("</section>", start)]


def test_the_dashboard_counts_unverified_and_incomplete_hosts_in_their_own_tiles(app, viewer):
    seed_truth_rule(app)
    page = text(viewer.get("/"))
    tile = re.search(r'<li class="tile tile-unsure">\s*<a href="/hosts\?status=unverified" title="([^"]+)">'
                     r'<span class="n">(\d+)</span><span class="pill tone-unsure">', page)
    assert tile and tile.group(2) == "1", page
    assert "could not be checked" in tile.group(1)
    assert 'href="/hosts?status=incomplete"' in page  # a tile, zero for now
    assert re.search(r'title="unverified[^"]*">◐ 1</span>', page)  # the recent run's chips
    assert '<rect class="bar unverified"' in page and "2 of 8 hosts drifted, 1 unverified" in page


def test_hosts_filter_by_unverified_with_a_badge_saying_how_many_tasks_could_not_be_checked(app, viewer):
    seed_truth_rule(app)
    page = text(viewer.get("/hosts?status=unverified"))
    assert 'href="/hosts/app1"' in page
    assert 'href="/hosts/web1"' not in page and 'href="/hosts/cache1"' not in page
    assert ('<span class="pill tone-unsure" title="no drift found, but 3 tasks could not be checked">'
            '<span class="sym" aria-hidden="true">◐</span> <span class="word">unverified</span></span>') in page
    assert '<option value="unverified" selected>' in page
    assert 'href="/hosts?status=unverified" class="tone-unsure"' in text(viewer.get("/hosts"))


def test_an_unverified_host_lists_each_unverified_task_with_its_reason_and_what_ran_for_real(app, viewer):
    seed_truth_rule(app)
    page = text(viewer.get("/hosts/app1"))
    assert '<span class="word">unverified</span>' in page
    assert "No drift found, but 3 tasks could not be checked" in page
    unverified = section(page, "unverified")
    assert '<span class="count">3</span>' in unverified
    assert "check mode skipped it: Check mode is not supported for this task." in unverified
    assert "skipped because its condition reads `installed`, registered by &#39;probe&#39;" in unverified
    assert f"would have run {XSS}" not in page and "would have run &lt;script&gt;" in unverified
    assert unverified.count("accepted by fleet.yml") == 1 and unverified.count("blocks in sync") == 2
    assert "1 of them are accepted" in unverified
    executed = section(page, "h-executed")
    assert "Ran for real during the check" in executed
    assert re.search(r"refresh apt cache.*?changed the host", executed, re.S)
    assert re.search(r"read version file.*?changed nothing", executed, re.S)
    assert "No drift at the last check" in section(page, "h-drift")
    assert "EXECUTED-DIFF-APP1" not in page  # what the check itself changed is no drift to show
    assert "3 unverified</a> (1 accepted)" in page


def test_a_host_whose_unverified_tasks_are_all_accepted_is_in_sync_and_says_so(app, viewer):
    seed_truth_rule(app)
    page = text(viewer.get("/hosts/cache1"))
    assert '<span class="word">in sync</span>' in page
    unverified = section(page, "unverified")
    assert "Every one is listed under <code>accept_unverified</code>" in unverified
    assert "a shell command would have run" in unverified and "accepted by fleet.yml" in unverified
    assert "blocks in sync" not in unverified


def test_drifted_tasks_show_their_cause_and_flapping_and_a_task_that_ran_for_real_is_not_drift(app, viewer):
    seed_truth_rule(app)
    page = text(viewer.get("/hosts/web3"))
    drift = section(page, "h-drift")
    assert '<span class="count">3</span>' in drift
    assert "cause: commit</span> a commit changed this task since the host&#39;s last converge" in drift
    assert "cause: local</span> the host changed since it was converged at this revision" in drift
    assert "cause: new</span> never converged by fleet" in drift
    assert drift.count("flapping — not idempotent, not auto-converged") == 1
    assert re.search(r"<h3>motd</h3>.*flapping", drift, re.S)
    assert "migrate schema" not in drift and "EXECUTED-DIFF-WEB3" not in page
    assert "migrate schema" in section(page, "h-executed")
    assert "Every drifted task here is flapping" not in page  # two of three drifted tasks are real drift
    assert "h-failed" not in page and "connection refused" in section(page, "h-rescued")


def test_the_run_page_marks_each_task_and_counts_unverified_hosts(app, viewer):
    run_id = seed_truth_rule(app)
    page = text(viewer.get(f"/runs/{run_id}"))
    for mark in ("cause: commit", "cause: local", "cause: new", "flapping — not idempotent, not auto-converged",
                 "ran for real: changed the host", "ran for real</span>", "accepted by fleet.yml", "rescued</span>"):
        assert mark in page, mark
    assert page.count('<span class="pill mark tone-unsure"') == 4  # every unverified task, accepted or not
    assert SKIP_REASON in page and "would have run &lt;script&gt;" in page
    assert re.search(r'title="unverified[^"]*">◐ 1</span>', page)  # the run's result chips
    assert '<span class="unverified-count">3</span> <span class="muted small">(1 accepted)</span>' in page
    assert "<td class=\"num\">5/8</td>" in page  # app1's coverage in this run
    changed_rows = re.findall(r'<tr class="row-changed">.*?</tr>', page, re.S)
    assert len(changed_rows) == 3 and not any("migrate schema" in row for row in changed_rows)
    assert "<script>alert" not in page


def test_live_json_carries_each_tasks_marks_and_reason(app, viewer):
    run_id = seed_truth_rule(app)
    tasks = {t["task"]: t for t in viewer.get(f"/runs/{run_id}/live?after_task=0").get_json()["tasks"]}
    assert tasks["probe"]["reason"] == SKIP_REASON and tasks["probe"]["unverified"] is True
    assert [m["word"] for m in tasks["Restart app"]["marks"]] == ["unverified", "accepted by fleet.yml"]
    assert tasks["migrate schema"]["drift"] is False and tasks["migrate schema"]["executed"] is True
    assert [m["word"] for m in tasks["motd"]["marks"]] == [
        "cause: local", "flapping — not idempotent, not auto-converged"]
    assert tasks["motd"]["drift"] is True and tasks["motd"]["reason"] is None
    assert tasks["try the fast path"]["rescued"] is True


def test_truth_rule_pages_keep_to_the_content_security_policy(app, admin):
    run_id = seed_truth_rule(app)
    for path in ["/", "/hosts?status=unverified", "/hosts/app1", "/hosts/web3", "/hosts/cache1", f"/runs/{run_id}"]:
        page = text(admin.get(path))
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path
        assert " style=" not in page and "<style" not in page, path


def test_drift_over_time_counts_unverified_hosts_too():
    from fleet.web.ui import present

    verdicts = [(1, "a", "unverified"), (1, "b", "drifted"), (2, "a", "in_sync"), (3, "b", "unverified")]
    points = present.drift_timeline([FakeRun(1), FakeRun(2), FakeRun(3)], verdicts, {"a": "in_sync", "b": "in_sync"})
    assert [(p.drifted, p.unverified) for p in points] == [(1, 1), (1, 0), (0, 1)]
    bars = present.drift_chart(points).bars
    assert bars[0].title.endswith("1 of 2 hosts drifted, 1 unverified") and bars[1].title.endswith("drifted")
    assert bars[0].unverified_y + bars[0].unverified_height == bars[0].y  # stacked on the drifted part
