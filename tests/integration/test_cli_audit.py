"""Every change made with the real `fleet` command lands in the audit log, as the UI's do.

One `fleet` session (real processes, a real git source, real SQLite) runs each
command that changes something once, then reads the log back with `fleet
audit --json` and on the admin audit page. Reads and refused attempts leave
no row; a check that could not run does, saying why.
"""

from __future__ import annotations

import getpass
import re

import pytest

from tests.conftest import FleetCli, make_source

ACTOR = f"cli:{getpass.getuser()}"
PASSWORD = "audit-pass-0123"

# What each command of the session leaves: (command, exit code, (action, target, detail) or None for no row);
# a detail ending in ";" is the start of the row's detail (the rest is the error's advice).
SESSION = [
    (("check",), 3, ("run.request", "all hosts", "check, run 1")),
    (("converge", "--yes", "--limit", "web1"), 3, ("run.request", "web1", "converge, run 2")),
    (("check", "--limit", "nosuch"), 1,
     ("run.request", "nosuch", "check, did not complete: no inventory host matches --limit 'nosuch';")),
    (("request", "check"), 0, ("run.request", "all hosts", "check, run 3")),
    (("request", "check"), 0, ("run.request", "all hosts", "check, run 3, joined the queued one")),
    (("cancel", "3"), 0, ("run.cancel", "run 3", "check, was queued")),
    (("approve", "1"), 0, ("approval.approve", "web1", "approval 1;")),
    (("approve", "999"), 1, None),  # no such approval: nothing changed, nothing to record
    (("user", "add", "ada", "--role", "admin", "--password-stdin"), 0, ("user.add", "ada", "role=admin")),
    (("token", "create", "ci", "--role", "operator"), 0, ("token.create", "ci", None)),
    (("token", "revoke", "ci"), 0, ("token.revoke", "ci", "")),
    (("status",), 0, None),  # reads are not audited
    (("runs",), 0, None),
    (("audit",), 0, None),
]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The session's commands run in order; yields the CLI, what each answered, and the log as JSON."""
    root = tmp_path_factory.mktemp("audit")
    inventory = "all:\n  children:\n    web:\n      hosts:\n        web1: {ansible_host: 127.0.99.1}\n"
    cli = FleetCli(root / "data", make_source(root / "source", inventory), root)
    answers = []
    for args, _code, _row in SESSION:
        if args == ("approve", "1"):
            _open_approval(cli)
        answers.append(cli(*args, input=PASSWORD + "\n" if "--password-stdin" in args else None))
    log = cli("audit", "--json")
    assert log.code == 0, log.stderr
    return cli, answers, log.json()["entries"]


def _open_approval(cli: FleetCli) -> None:
    """Drift waiting for approval, as the controller opens it after a check in an `approve` group."""
    from fleet.settings import load_settings
    from fleet.store import records
    from fleet.store.db import open_store

    settings = load_settings(flags={"repo": str(cli.repo), "data_dir": str(cli.data_dir)}, environ={},
                             cwd=cli.cwd)
    with open_store(settings):
        approval = records.open_approval("web1", 1, "0" * 40, "drift-signature", "app : Write app.conf")
    assert approval.id == 1


@pytest.mark.parametrize("step", range(len(SESSION)), ids=[" ".join(args) for args, _, _ in SESSION])
def test_each_command_answers_as_expected(session, step):
    _cli, answers, _entries = session
    assert answers[step].code == SESSION[step][1], answers[step].stderr


def test_each_change_leaves_exactly_one_row_in_order_and_nothing_else(session):
    _cli, _answers, entries = session
    expected = [row for _args, _code, row in SESSION if row is not None]
    found = [(e["action"], e["target"], e["detail"]) for e in reversed(entries)]  # the log is newest first
    assert len(found) == len(expected), found
    for (action, target, detail), got in zip(expected, found):
        assert got[:2] == (action, target)
        if detail is not None:
            assert got[2] == detail or detail.endswith(";") and got[2].startswith(detail), got


def test_rows_name_the_os_user_and_no_address(session):
    _cli, _answers, entries = session
    assert {e["actor"] for e in entries} == {ACTOR}
    assert {e["remote_addr"] for e in entries} == {""}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*\+00:00", e["at"]) for e in entries)


def test_the_token_secret_is_not_in_the_log(session):
    _cli, answers, entries = session
    secret = answers[[args for args, _, _ in SESSION].index(("token", "create", "ci", "--role", "operator"))]
    token = secret.stdout.strip().splitlines()[-1]
    assert token.startswith("flt_")
    assert all(token not in e["detail"] for e in entries)


def test_the_log_pages_with_before(session):
    cli, _answers, entries = session
    first = cli("audit", "--json", "--count", "3")
    assert [e["id"] for e in first.json()["entries"]] == [e["id"] for e in entries[:3]]
    older = cli("audit", "--json", "--count", "3", "--before", str(first.json()["next"]))
    assert [e["id"] for e in older.json()["entries"]] == [e["id"] for e in entries[3:6]]


def test_the_admin_audit_page_shows_the_cli_rows(session):
    from fleet.settings import load_settings
    from fleet.web import create_app

    cli, _answers, _entries = session
    settings = load_settings(flags={"repo": str(cli.repo), "data_dir": str(cli.data_dir)}, environ={},
                             cwd=cli.cwd)
    client = create_app(settings).test_client()
    form = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    login = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": csrf})
    assert login.status_code == 302
    page = client.get("/admin/audit").get_data(as_text=True)
    for needle in (ACTOR, "run.request", "check, run 1", "run.cancel", "approval.approve", "approval 1",
                   "token.revoke"):
        assert needle in page, needle


LAB_SUBNET = 32  # this file's own: lab hosts on 127.0.32.x


def test_lab_up_accept_key_and_lab_down_are_audited(tmp_path):
    cli = FleetCli(tmp_path / "data", tmp_path / "source", tmp_path)
    try:
        up = cli("lab", "up", "--hosts", "1", "--subnet", str(LAB_SUBNET))
        assert up.code == 0, up.stderr
        make_source(tmp_path / "source", (tmp_path / "data" / "lab" / "hosts.yml").read_text())
        check = cli("check", "--no-diff")  # the lab works under fleet's private umask: Ansible ran on it
        assert check.code in (0, 2, 4), check.stdout + check.stderr
        accept = cli("hosts", "accept-key", "web1")
        assert accept.code == 0, accept.stderr
    finally:
        down = cli("lab", "down")
    assert down.code == 0, down.stderr
    entries = list(reversed(cli("audit", "--json").json()["entries"]))
    assert [(e["action"], e["target"]) for e in entries] == [
        ("lab.up", "lab"), ("run.request", "all hosts"), ("host.accept_key", "web1"), ("lab.down", "lab")]
    assert entries[0]["detail"] == f"1 host(s) on subnet {LAB_SUBNET}"
    assert entries[2]["detail"].startswith("now trusting SHA256:")
    assert entries[3]["detail"] == "stopped 1 host(s)"
    assert {e["actor"] for e in entries} == {ACTOR}
