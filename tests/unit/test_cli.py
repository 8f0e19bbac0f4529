"""The `fleet` command driven in process (click's CliRunner) against a temporary data directory and SQLite store.

What PRODUCT.md promises of the command line: the commands it names, the exit codes of check (0 in sync, 1
could not run, 2 drift, 3 unreachable or failed), `--json` shapes, one clear line and exit 1 for a mistake
the user can fix, click's usage error (exit 2) for arguments that do not parse. Runs that need Ansible go
through the project's FakeRunner at the runner boundary (jobs.default_runner); everything else is real:
the git source, the store, the audit log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from fleet import cli, lab
from fleet.drift import HostVerdict, TaskResult
from fleet.fake_runner import FakeRunner, scripted_events
from fleet.runner import AnsibleRunner, InventoryHost
from fleet.settings import load_settings
from fleet.store import accounts, db, records
from fleet.store.db import open_store
from fleet.store.models import AuditEntry, Run
from tests.conftest import git
from tests.unit.store_fixtures import inventory_entry

WEB1 = InventoryHost("web1", "127.0.99.1", 22, ("web",))


class Fleet:
    """`fleet ARGS` in this process, with its own data directory and the test's git source."""

    def __init__(self, tmp_path: Path, repo: Path):
        self.tmp_path, self.repo = tmp_path, repo
        self.data_dir = tmp_path / "data"
        self.env = {"FLEET_DATA_DIR": str(self.data_dir), "FLEET_REPO": str(repo)}

    def __call__(self, *args: str, input: str | None = None, env: dict | None = None):
        return CliRunner().invoke(cli.main, list(args), input=input, env={**self.env, **(env or {})},
                                  prog_name="fleet")

    def json(self, *args: str) -> dict:
        result = self(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    @contextmanager
    def store(self):
        """The same store the command opens, for the test to fill or read."""
        settings = load_settings(flags={"repo": str(self.repo), "data_dir": str(self.data_dir)}, environ={},
                                 cwd=self.tmp_path)
        with open_store(settings):
            yield db.session


@pytest.fixture
def fleet(tmp_path, tmp_source, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no fleet.toml of the project's checkout is read
    umask = os.umask(0o022)  # the command sets a private umask for the process: give the old one back after
    os.umask(umask)
    yield Fleet(tmp_path, tmp_source)
    os.umask(umask)


def fake_ansible(monkeypatch, outcome: str) -> FakeRunner:
    """Every run the command starts replays one task whose result on web1 is `outcome` (the runner the settings
    would build, wherever it is built, is this fake)."""
    fake = FakeRunner(events=scripted_events({"web1": outcome}), hosts=[WEB1])
    monkeypatch.setattr(AnsibleRunner, "for_settings", classmethod(lambda cls, settings: fake))
    return fake


def record_check(session) -> int:
    """A finished check of web1 (drifted: one changed task with a diff) and db1 (in sync), as jobs writes one."""
    records.sync_hosts([inventory_entry("web1", "web"), inventory_entry("db1", "db")])
    run = records.create_run("check", "manual", "a" * 40, "", "cli:test", None)
    recorder = records.RunRecorder(run.id)
    recorder.add_task(TaskResult(seq=1, host="web1", task="Write the motd", action="ansible.builtin.copy",
                                 status="changed", diff="--- before\n+++ after\n-old\n+new motd\n", cause="local"))
    recorder.add_task(TaskResult(seq=2, host="db1", task="Write the motd", action="ansible.builtin.copy",
                                 status="ok"))
    recorder.add_output(3, "PLAY RECAP *****\nweb1 : ok=0 changed=1\n")
    recorder.flush()
    records.finish_run(run, "successful", [HostVerdict("web1", "drifted", changed=1, verified=1),
                                           HostVerdict("db1", "in_sync", ok=1, verified=1)])
    return run.id


# --- help and argument errors ----------------------------------------------------------------------


def test_help_names_every_command_the_product_promises(fleet):
    result = fleet("--help")
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"check", "converge", "status", "runs", "show", "serve", "lab", "user", "token"} <= listed
    assert fleet("-h").stdout == result.stdout  # -h is the short form


def test_check_help_states_the_exit_codes(fleet):
    text = " ".join(fleet("check", "--help").stdout.split())
    assert "exit 0 in sync, 2 drift, 3 unreachable/failed, 4 unverified" in text
    assert "--limit" in text and "--json" in text


@pytest.mark.parametrize("args,complaint", [
    (("runs", "--kind", "bogus"), "'bogus' is not one of 'check', 'converge'"),
    (("runs", "--count", "0"), "--count"),
    (("show", "seven"), "'seven' is not a valid integer"),
    (("request", "deploy"), "'deploy' is not one of"),
    (("token", "create", "ci"), "Missing option '--role'"),
    (("user", "add", "ann", "--role", "root"), "'root' is not one of 'viewer', 'operator', 'admin'"),
    (("no-such-command",), "No such command"),
])
def test_arguments_that_do_not_parse_are_a_usage_error_with_exit_2(fleet, args, complaint):
    result = fleet(*args)
    assert result.exit_code == 2
    assert complaint in result.stderr and "Usage: fleet" in result.stderr
    assert result.stdout == ""


# --- status / runs / show ------------------------------------------------------------------------


def test_status_of_an_empty_store_says_what_to_do(fleet):
    result = fleet("status")
    assert result.exit_code == 0
    assert "no hosts yet: run `fleet check`" in result.stdout
    assert fleet.json("status", "--json") == {"hosts": [], "kept_processes": []}


def test_status_lists_each_host_with_its_drift(fleet):
    with fleet.store() as session:
        run_id = record_check(session)
    hosts = {h["name"]: h for h in fleet.json("status", "--json")["hosts"]}
    assert set(hosts) == {"web1", "db1"}
    assert hosts["web1"]["status"] == "drifted" and hosts["web1"]["groups"] == ["web"]
    assert hosts["web1"]["last_check_run_id"] == run_id
    assert [(t["task"], t["cause"]) for t in hosts["web1"]["changed_tasks"]] == [("Write the motd", "local")]
    assert hosts["db1"]["status"] == "in_sync" and hosts["db1"]["changed_tasks"] == []

    text = fleet("status", "--diff").stdout
    assert "web1: Write the motd (ansible.builtin.copy) [cause: local]" in text
    assert "+new motd" in text
    assert "+new motd" not in fleet("status").stdout  # the diff only when asked for


def test_runs_of_an_empty_store(fleet):
    assert fleet.json("runs", "--json") == {"runs": [], "next": None}


def test_runs_page_newest_first_and_say_how_to_reach_older_ones(fleet):
    with fleet.store():
        ids = [records.enqueue_run("converge", "manual", f"web{i}", "test")[0].id for i in range(3)]
    first = fleet.json("runs", "--json", "--count", "2")
    assert [r["id"] for r in first["runs"]] == [ids[2], ids[1]]
    assert first["next"] == ids[1]
    second = fleet.json("runs", "--json", "--count", "2", "--before", str(first["next"]))
    assert [r["id"] for r in second["runs"]] == [ids[0]] and second["next"] is None
    assert f"older: fleet runs --before {ids[1]}" in fleet("runs", "--count", "2").stdout
    assert "older:" not in fleet("runs").stdout


def test_runs_filter_by_kind_status_and_host(fleet):
    with fleet.store() as session:
        check_id = record_check(session)
        queued, _ = records.enqueue_run("converge", "manual", "", "test")
    assert [r["id"] for r in fleet.json("runs", "--json", "--kind", "check")["runs"]] == [check_id]
    assert [r["id"] for r in fleet.json("runs", "--json", "--status", "queued")["runs"]] == [queued.id]
    assert [r["id"] for r in fleet.json("runs", "--json", "--host", "db1")["runs"]] == [check_id]
    summary = fleet.json("runs", "--json", "--kind", "check")["runs"][0]["hosts"]
    assert (summary["total"], summary["drifted"], summary["in_sync"]) == (2, 1, 1)


def test_show_of_a_run_that_does_not_exist_is_one_line_and_exit_1(fleet):
    result = fleet("show", "999")
    assert result.exit_code == 1
    assert result.stderr == "fleet: no run with id 999; `fleet runs` lists them\n"
    assert "Traceback" not in result.output


def test_show_json_has_the_shared_run_shape_with_every_task_and_the_output(fleet):
    with fleet.store() as session:
        run_id = record_check(session)
    shown = fleet.json("show", str(run_id), "--json")
    assert {k: shown["run"][k] for k in ("id", "kind", "status", "revision")} == {
        "id": run_id, "kind": "check", "status": "successful", "revision": "a" * 40}
    hosts = {h["name"]: h for h in shown["hosts"]}
    assert hosts["web1"]["status"] == "drifted"
    assert hosts["web1"]["changed_tasks"][0]["diff"].endswith("+new motd\n")
    assert [t["status"] for t in hosts["web1"]["tasks"]] == ["changed"]
    assert [t["host"] for t in hosts["db1"]["tasks"]] == ["db1"]  # each host lists its own tasks only
    assert "PLAY RECAP" in shown["stdout"]
    assert shown["shards"] == []


def test_show_text_has_the_hosts_their_tasks_and_the_diff_and_the_output_only_when_asked(fleet):
    with fleet.store() as session:
        run_id = record_check(session)
    text = fleet("show", str(run_id)).stdout
    assert text.startswith(f"run {run_id}: check at {'a' * 12}, successful")
    assert "by cli:test, limit all" in text
    assert "\nweb1:\n" in text and "\ndb1:\n" in text
    assert "+new motd" in text
    assert "PLAY RECAP" not in text
    assert "PLAY RECAP" in fleet("show", str(run_id), "--stdout").stdout


# --- check / converge through the fake runner ----------------------------------------------------


@pytest.mark.parametrize("outcome,code,status", [
    ("ok", 0, "in_sync"), ("changed", 2, "drifted"), ("unreachable", 3, "unreachable"), ("failed", 3, "failed"),
])
def test_check_exits_with_the_code_of_what_it_found_and_records_the_run(fleet, monkeypatch, outcome, code, status):
    fake_ansible(monkeypatch, outcome)
    result = fleet("check", "--json")
    assert result.exit_code == code, result.output
    report = json.loads(result.stdout)
    assert report["run"]["kind"] == "check"
    assert [(h["name"], h["status"]) for h in report["hosts"]] == [("web1", status)]
    assert fleet.json("show", str(report["run"]["id"]), "--json")["hosts"][0]["status"] == status


def skipped_by_check_mode() -> list[dict]:
    """web1 runs one `raw` task, which check mode skips without a word (raw has no check mode)."""
    events = scripted_events({"web1": "ok"}, task="Probe the kernel")
    result = events[1]
    result["event"] = "runner_on_skipped"
    result["event_data"].update(task_action="ansible.builtin.raw", resolved_action="ansible.builtin.raw",
                                res={"changed": False, "skipped": True})
    return events


def test_a_check_that_could_not_evaluate_a_task_exits_4_unless_fleet_yml_accepts_it(fleet, monkeypatch):
    fake = fake_ansible(monkeypatch, "ok")
    fake.events = skipped_by_check_mode()
    result = fleet("check", "--json")
    assert result.exit_code == 4, result.output
    [host] = json.loads(result.stdout)["hosts"]
    assert host["status"] == "unverified"
    assert [(t["task"], t["accepted"]) for t in host["unverified_tasks"]] == [("Probe the kernel", False)]
    assert "check mode" in host["unverified_tasks"][0]["reason"]

    (fleet.repo / "fleet.yml").write_text('accept_unverified:\n  - "Probe the kernel"\n')
    git(fleet.repo, "add", "fleet.yml")
    git(fleet.repo, "commit", "-qm", "the probe cannot be checked")
    accepted = fleet("check", "--json")
    assert accepted.exit_code == 0, accepted.output
    [host] = json.loads(accepted.stdout)["hosts"]
    assert host["status"] == "in_sync" and host["unverified_tasks"][0]["accepted"] is True


def test_a_check_that_finds_drift_says_which_task_and_where_to_read_more(fleet, monkeypatch):
    fake = fake_ansible(monkeypatch, "changed")
    result = fleet("check", "--limit", "web1")
    assert result.exit_code == 2
    run_id = fleet.json("runs", "--json")["runs"][0]["id"]
    assert "web1: 1 drifted task(s)" in result.stdout
    assert "* Write the motd (ansible.builtin.copy) [cause: new]" in result.stdout
    assert "+new" in result.stdout  # the diff, unless --no-diff
    assert f"fleet show {run_id} has every task" in result.stdout
    assert "+new" not in fleet("check", "--no-diff").stdout
    assert {spec.kind for spec in fake.jobs} == {"check"}  # a check never applies anything


def test_a_check_is_audited_with_who_asked(fleet, monkeypatch):
    fake_ansible(monkeypatch, "ok")
    assert fleet("check", "--limit", "web*").exit_code == 0
    with fleet.store() as session:
        entry = session.scalars(select(AuditEntry)).one()
    assert (entry.action, entry.target) == ("run.request", "web*")
    assert entry.actor.startswith("cli") and entry.detail.startswith("check, run ")


def test_converge_off_a_terminal_without_yes_refuses_and_runs_nothing(fleet, monkeypatch):
    fake = fake_ansible(monkeypatch, "changed")
    result = fleet("converge", input="y\n")
    assert result.exit_code == 1
    assert "pass --yes" in result.stderr
    assert fake.jobs == []
    assert fleet.json("runs", "--json")["runs"] == []


def test_converge_with_yes_applies_and_exits_0(fleet, monkeypatch):
    fake = fake_ansible(monkeypatch, "changed")
    result = fleet("converge", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run"]["kind"] == "converge"
    assert [spec.kind for spec in fake.jobs] == ["converge"]


def test_a_source_that_cannot_be_read_exits_1_with_a_message_and_no_traceback(fleet, monkeypatch):
    fake_ansible(monkeypatch, "ok")
    result = fleet("check", env={"FLEET_REPO": str(fleet.tmp_path / "no-such-repo")})
    assert result.exit_code == 1
    assert result.stderr.startswith("fleet: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_a_check_of_a_pattern_that_matches_no_host_says_so(fleet, monkeypatch):
    fake = fake_ansible(monkeypatch, "ok")
    result = fleet("check", "--limit", "db*")
    assert result.exit_code == 1
    assert result.stderr.startswith("fleet: ") and "db*" in result.stderr
    assert fake.jobs == []


# --- the queue, cancel, approvals ----------------------------------------------------------------


def test_request_queues_a_check_and_a_second_one_joins_it(fleet):
    first = fleet.json("request", "check", "--json")
    second = fleet.json("request", "check", "--json")
    assert first["run"]["status"] == "queued" and first["joined"] is False
    assert second["joined"] is True and second["run"]["id"] == first["run"]["id"]
    assert fleet("request", "check").stdout == f"run {first['run']['id']} already queued; joined it\n"
    converge = fleet("request", "converge", "--limit", "web1")
    assert converge.stdout == f"run {first['run']['id'] + 1} queued\n"
    with fleet.store() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert (entries[0].action, entries[0].target, entries[0].detail) == (
        "run.request", "all hosts", f"check, run {first['run']['id']}")
    assert (entries[-1].target, entries[-1].detail) == ("web1", f"converge, run {first['run']['id'] + 1}")


def test_cancel_stops_a_queued_run_and_refuses_one_that_ended(fleet):
    queued = fleet.json("request", "converge", "--json")["run"]["id"]
    result = fleet("cancel", str(queued))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"run {queued}: canceled")
    with fleet.store() as session:
        assert session.get(Run, queued).status == "canceled"
    again = fleet("cancel", str(queued))
    assert again.exit_code == 1
    assert f"run {queued} is canceled; only queued or running runs can be canceled" in again.stderr


def test_approve_of_an_unknown_approval_exits_1(fleet):
    result = fleet("approve", "41")
    assert result.exit_code == 1 and result.stderr.startswith("fleet: ")
    assert "41" in result.stderr


def test_lists_of_an_empty_store(fleet):
    assert fleet.json("approvals", "--json") == {"approvals": []}
    assert fleet("notifications").stdout.startswith("no notification sent yet")
    revisions = fleet.json("revisions", "--json")
    assert revisions["revisions"] == [] and revisions["source"]["desired"] is None
    assert fleet("workers").stdout.startswith("no worker has reported yet")


def test_releasing_a_host_without_a_kept_lock_says_there_is_none(fleet):
    result = fleet("hosts", "release", "web1")
    assert result.exit_code == 1
    assert "web1 has no kept lock" in result.stderr


# --- accounts and tokens -------------------------------------------------------------------------


def test_user_add_reads_the_password_from_stdin_and_user_list_shows_it(fleet):
    result = fleet("user", "add", "ann", "--role", "operator", "--password-stdin", input="a long password\n")
    assert result.exit_code == 0 and result.stdout == "user ann (operator) saved\n"
    with fleet.store():
        assert accounts.authenticate("ann", "a long password").name == "ann"
    assert fleet.json("user", "list", "--json") == {"users": [{"name": "ann", "role": "operator",
                                                               "disabled": False}]}
    assert fleet("user", "list", "--role", "admin").exit_code == 1  # no admin: scripts can test for one


def test_a_short_password_is_refused_and_no_user_is_made(fleet):
    result = fleet("user", "add", "bob", "--role", "admin", "--password-stdin", input="short\n")
    assert result.exit_code == 1
    assert "at least 10 characters" in result.stderr
    assert fleet("user", "list").exit_code == 1


def test_a_token_is_printed_alone_on_the_last_line_and_acts_with_its_role(fleet):
    result = fleet("token", "create", "ci", "--role", "viewer", "--expires", "30d")
    assert result.exit_code == 0
    secret = result.stdout.splitlines()[-1]
    assert secret.startswith(accounts.TOKEN_PREFIX) and " " not in secret
    with fleet.store():
        holder = accounts.token_identity(secret)
    assert (holder.name, holder.role, holder.owner) == ("ci", "viewer", None)
    assert fleet("token", "create", "ci", "--role", "viewer").exit_code == 1  # names are unique


def test_a_token_lifetime_that_does_not_parse_is_refused(fleet):
    result = fleet("token", "create", "ci", "--role", "admin", "--expires", "soon")
    assert result.exit_code == 1
    assert "looks like 30d, 12h or 1d12h" in result.stderr


# --- the database ----------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_db_current_before_and_after_upgrade(fleet):
    missing = fleet("db", "current")
    assert missing.exit_code == 1 and "no database at" in missing.stderr
    created = fleet("db", "upgrade")
    assert created.exit_code == 0 and created.stdout.startswith("database created at schema ")
    current = fleet.json("db", "current", "--json")
    assert current["up_to_date"] is True and current["current"] == current["head"]
    assert fleet("db", "upgrade").stdout.startswith("database already at schema")


# --- pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds,text", [
    (None, "never"), (0, "0s ago"), (59.9, "59s ago"), (60, "1m ago"), (3599, "59m ago"), (3600, "1h ago"),
    (86400 * 2 + 5, "2d ago"), (-3, "0s ago"),
])
def test_a_heartbeat_age_in_its_largest_whole_unit(seconds, text):
    assert cli._age(seconds) == text


def test_a_task_line_names_its_cause_and_marks():
    class Task:
        task, action, cause, flapping, accepted = "Restart app", "service", "commit", True, False

    assert cli.task_line(Task()) == "Restart app (service) [cause: commit, flapping: not idempotent]"
    Task.cause, Task.flapping = "", False
    assert cli.task_line(Task()) == "Restart app (service)"


# --- start-up ----------------------------------------------------------------------------------------

# What commands import when they run; `fleet --help` and a usage error need none of it.
HEAVY_MODULES = ("sqlalchemy", "alembic", "paramiko", "git", "yaml", "werkzeug", "ansible_runner", "fleet.store",
                 "fleet.jobs", "fleet.actions", "fleet.hostkeys", "fleet.source", "fleet.lab", "fleet.settings")


def test_the_option_values_cli_copies_are_their_modules_values():
    assert cli.ROLES == accounts.ROLES
    assert cli.LAB_DEFAULT_SUBNET == lab.DEFAULT_SUBNET


def test_help_and_usage_errors_import_none_of_what_commands_use():
    """Every command's help and a command line that does not parse, in a fresh interpreter: nothing heavy."""
    script = """
import sys
import click
from fleet.cli import main

def paths(group, prefix):
    for name, command in group.commands.items():
        yield [*prefix, name]
        if isinstance(command, click.Group):
            yield from paths(command, [*prefix, name])

lines = [*(p + ["--help"] for p in [[], *paths(main, [])]), ["bogus"], ["runs", "--count", "x"], ["show"]]
codes = []
for args in lines:
    try:
        main(args, prog_name="fleet")
    except SystemExit as exc:
        codes.append(exc.code)
print(len(lines), sorted(set(codes)))
print(" ".join(m for m in %r if m in sys.modules))
""" % (HEAVY_MODULES,)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    counted, imported = done.stdout.splitlines()[-2:]
    assert counted.endswith("[0, 2]"), done.stdout  # help exits 0, the three usage errors 2
    assert imported == ""
