"""The controller's wiring: the order it carries out actions in, what it hands the plan, and whole ticks
through the real jobs and store with the fake runner (a real git source, no SSH hosts)."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import update

from fleet import plan, policy
from fleet.controller import Controller, finished_run, observe_inventory
from fleet.drift import HostVerdict, TaskResult
from fleet.fake_runner import FakeRunner, scripted_events
from fleet.runner import InventoryHost
from fleet.settings import replace
from fleet.store import leases, queries, records
from fleet.store.db import db, open_store
from fleet.store.models import Approval, ControllerState, Run
from fleet.vocabulary import utcnow
from tests.conftest import git, settings_for_source, wait_for


class RecordingExecutor:
    """Stands in for ActionExecutor: notes each action and answers with scripted follow-ups."""

    def __init__(self, follow_ups: dict):
        self.follow_ups, self.done = follow_ups, []

    def perform(self, action, now):
        self.done.append(action)
        return self.follow_ups.get(action, [])


def test_follow_ups_run_right_after_their_action_before_the_rest():
    controller = Controller(settings=None, stop=threading.Event(), runner=FakeRunner())
    batch = plan.VerifyCheck("web1")
    controller.actions = RecordingExecutor({
        plan.StartRun(1): [plan.OpenApproval("db1", 1, "a"), batch],
        batch: [plan.Hold(("web2",), "why")],
    })
    assert controller.execute([plan.StartRun(1), plan.StartRun(2)], now=None) is True
    assert controller.actions.done == [plan.StartRun(1), plan.OpenApproval("db1", 1, "a"), batch,
                                       plan.Hold(("web2",), "why"), plan.StartRun(2)]


def test_nothing_to_do_lets_the_loop_sleep():
    controller = Controller(settings=None, runner=FakeRunner())
    controller.actions = RecordingExecutor({})
    assert controller.execute([], now=None) is False


def _drift(host: str, task: str, flapping: bool) -> TaskResult:
    return TaskResult(seq=1, host=host, task=task, action="ansible.builtin.template", status="changed",
                      flapping=flapping)


def test_policy_converges_real_drift_but_leaves_flapping_only_hosts_alone():
    report = SimpleNamespace(
        run=SimpleNamespace(id=9, kind="check", trigger="schedule", status="successful", limit=""),
        verdicts=[HostVerdict("web1", "drifted"), HostVerdict("web2", "drifted")],
        tasks_by_host={"web1": [_drift("web1", "stamp", True)],
                       "web2": [_drift("web2", "stamp", True), _drift("web2", "motd", False)]})
    desired = SimpleNamespace(hosts=[SimpleNamespace(name="web1", groups=("web",)),
                                     SimpleNamespace(name="web2", groups=("web",))],
                              revision=SimpleNamespace(rewrites_history=False, sha="a" * 40))
    finished = finished_run(report, desired)
    assert finished.host("web2") == plan.HostOutcome("web2", "drifted", ("web",), ("stamp", "motd"), ("stamp",))
    rules = policy.parse_policy("remediation:\n  - {group: all, mode: auto}\n")
    actions = plan.after_run(finished, rules, now=None, stopping=False)
    assert [type(a) for a in actions] == [plan.Hold, plan.ConvergeBatch]
    assert actions[0].hosts == ("web1",) and actions[1].progress.batch == ("web2",)


# --- whole ticks: real jobs, real store, real git source, the fake runner ----------------------

NOW = datetime(2026, 3, 2, 10, 7, tzinfo=timezone.utc)
FLEET_YML = """\
remediation:
  - {group: web, mode: auto}
  - {group: db, mode: approve}
rollout: {canary: 1, batch: 50%}
"""
INVENTORY = [InventoryHost("web1", "127.0.99.1", 22, ("web",)), InventoryHost("web2", "127.0.99.2", 22, ("web",)),
             InventoryHost("db1", "127.0.99.3", 22, ("db",))]


class Fleet:
    """Hosts whose motd drifted until a converge writes it; a converge of a host in `failing` fails."""

    def __init__(self):
        self.drifted, self.failing = {"web1", "web2", "db1"}, set()
        self.runner = FakeRunner(events=self.events, hosts=INVENTORY)

    def events(self, spec) -> list[dict]:
        hosts = spec.limit_file.read_text().split()
        if spec.kind == "check":
            return scripted_events({h: "changed" if h in self.drifted else "ok" for h in hosts})
        self.drifted -= set(hosts) - self.failing
        return scripted_events({h: "failed" if h in self.failing else "changed" for h in hosts})


@pytest.fixture
def fleet(tmp_path):
    settings = settings_for_source(tmp_path, FLEET_YML)
    fake = Fleet()
    with open_store(settings):
        fake.controller = Controller(settings, runner=fake.runner)
        yield fake


def runs() -> list[tuple[str, str, str, str]]:
    return [(r.kind, r.trigger, r.limit, r.status) for r in db.session.query(Run).order_by(Run.id)]


def approvals() -> list[tuple[str, str]]:
    return [(a.host, a.status) for a in db.session.query(Approval).order_by(Approval.id)]


def test_a_new_commit_is_checked_then_auto_drift_rolled_out_and_approve_drift_waits(fleet):
    assert fleet.controller.tick(NOW) is True, "the source is fetched and the commit check queued"
    assert runs() == [("check", "commit", "", "queued")]
    assert fleet.controller.tick(NOW) is True, "the check runs, then the policy's follow-ups"
    assert runs() == [("check", "commit", "", "successful"), ("converge", "policy", "web1", "successful"),
                      ("converge", "policy", "web2", "successful"), ("check", "policy", "web1,web2", "successful")]
    assert approvals() == [("db1", "pending")]
    assert {h.name: h.status for h in queries.hosts_named(["web1", "web2", "db1"])} == {
        "web1": "in_sync", "web2": "in_sync", "db1": "drifted"}
    assert fleet.controller.tick(NOW) is False, "nothing left to do until the next fetch"


def test_an_approved_drift_is_rechecked_converged_applied_and_verified(fleet):
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    records.decide_approval(db.session.query(Approval).one().id, "tess")
    assert fleet.controller.tick(NOW) is True
    assert [r[:3] for r in runs()[-3:]] == [("check", "policy", "db1"), ("converge", "policy", "db1"),
                                           ("check", "policy", "db1")]
    assert approvals() == [("db1", "applied")]
    assert queries.hosts_named(["db1"])[0].status == "in_sync"


def test_approved_drift_that_changed_before_the_converge_is_asked_again(fleet):
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    records.decide_approval(db.session.query(Approval).one().id, "tess")
    fleet.runner.events = lambda spec: scripted_events({"db1": "changed"}, task="Another task")
    fleet.controller.tick(NOW)
    assert approvals() == [("db1", "superseded"), ("db1", "pending")]
    assert runs()[-1][:3] == ("check", "policy", "db1"), "re-checked, never converged"


def test_a_failed_canary_stops_the_rollout(fleet):
    fleet.failing = {"web1"}
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    assert [r[:3] for r in runs() if r[0] == "converge"] == [("converge", "policy", "web1")]
    assert not any(r[:2] == ("check", "policy") for r in runs()), "nothing converged, nothing to verify"


def test_a_requested_converge_ends_with_a_verifying_check(fleet):
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    records.enqueue_run("converge", "manual", "db1", "tess")
    assert fleet.controller.tick(NOW) is True
    assert [r[:3] for r in runs()[-2:]] == [("converge", "manual", "db1"), ("check", "policy", "db1")]


def test_a_scheduled_check_is_queued_when_due_and_not_before(fleet):
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    count = len(runs())
    assert fleet.controller.tick(NOW + timedelta(minutes=10)) is False, "the commit check stood in for 10:00"
    assert fleet.controller.tick(NOW + timedelta(minutes=23)) is True, "10:30 came"
    assert runs()[count:] == [("check", "schedule", "", "queued")]


def test_a_remote_that_cannot_be_reached_is_fetched_again_after_a_backoff(fleet):
    controller = fleet.controller
    assert controller.sync_source(NOW) == "fetched"
    assert controller.sync_source(NOW + timedelta(seconds=30)) == "not due"
    repo = Path(controller.settings.repo)
    repo.rename(repo.with_name("away"))
    later = NOW + timedelta(minutes=1)
    assert controller.sync_source(later) == "stale"
    assert controller.sync_source(later + timedelta(seconds=59)) == "not due"
    assert controller.sync_source(later + timedelta(seconds=60)) == "stale"
    assert controller.sync_source(later + timedelta(seconds=60 + 119)) == "not due", "backed off to 2 minutes"
    records.request_fetch()
    assert controller.sync_source(later + timedelta(seconds=61)) == "stale", "a webhook fetches at once"
    assert queries.source_state().desired_sha, "the last good revision stays desired"
    repo.with_name("away").rename(repo)
    assert controller.sync_source(later + timedelta(minutes=10)) == "fetched"


def test_a_restart_interrupts_what_a_dead_controller_left_and_resumes_nothing(fleet):
    dead = records.create_run("check", "manual", None, "", "tess", pid=2 ** 22 + 1)  # above Linux's pid_max
    records.enqueue_run("converge", "manual", "web1", "tess")
    records.enqueue_run("check", "manual", "web2", "tess")
    fleet.controller.recover()
    assert runs() == [("check", "manual", "", "interrupted"), ("converge", "manual", "web1", "interrupted"),
                      ("check", "manual", "web2", "queued")], "a queued check is harmless and still runs"
    assert "stopped while this run was running" in queries.get_run(dead.id).error
    assert queries.controller_state().pid == os.getpid()


# --- two controllers on one store: one leads, the other waits and takes over (issue 11) ---------------------

def test_one_controller_leads_the_other_waits_then_takes_over_when_the_leader_dies(fleet):
    leader = fleet.controller
    standby = Controller(leader.settings, runner=fleet.runner, holder=leases.Holder("other-box", 4242, "b"))
    assert leader.tick(NOW) is True
    assert standby.tick(NOW) is False, "the standby neither fetches nor plans nor runs"
    assert (standby.status.standby, standby.status.leader.pid, standby.status.leader.host) == (
        True, os.getpid(), leader.holder.host)
    assert leader.tick(NOW) is True, "the leader runs the commit check"
    assert {r.lease_holder for r in db.session.query(Run)} == {leader.holder.id}, "every run was started by the leader"

    records.enqueue_run("check", "manual", "web1", "tess")
    db.session.execute(update(ControllerState).values(leader_expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()  # the leader died: it renews its lock no more
    assert standby.tick(NOW) is True, "the standby takes over and runs the queued check"
    assert standby.status.standby is False
    last = db.session.query(Run).order_by(Run.id.desc()).first()
    assert (last.limit, last.status, last.lease_holder) == ("web1", "successful", standby.holder.id)
    assert leader.tick(NOW) is False and leader.status.standby, "the old leader, back, waits"


def test_a_clean_stop_hands_the_lead_over_at_once(fleet):
    stop = threading.Event()
    stop.set()  # run_forever returns at once, as after SIGTERM
    fleet.controller.lead()
    standby = Controller(fleet.controller.settings, runner=fleet.runner, holder=leases.Holder("other-box", 1, "b"))
    assert standby.lead() is False
    Controller(fleet.controller.settings, stop=stop, runner=fleet.runner, holder=fleet.controller.holder)
    fleet.controller.stop.set()
    fleet.controller.run_forever()
    assert standby.lead() is True


def test_a_controller_given_its_store_runs_its_loop_in_a_thread_where_none_is_bound(fleet):
    from fleet.store.db import current_store

    stop = threading.Event()
    controller = Controller(fleet.controller.settings, stop=stop, runner=fleet.runner, store=current_store())
    loop = threading.Thread(target=controller.run_forever)  # a new thread: no store bound in it
    loop.start()
    def checked() -> bool:
        db.session.rollback()  # end this thread's read: the loop's thread writes
        return runs()[:1] == [("check", "commit", "", "successful")]

    wait_for(checked, 30, "the loop's first commit check")
    stop.set()
    loop.join(10)
    assert not loop.is_alive()


def test_the_heartbeat_stays_fresh_while_the_controller_runs_a_long_run(fleet):
    settings = replace(fleet.controller.settings, run_timeout=5)
    hanging = FakeRunner(events=scripted_events({"web1": "ok"}), hosts=INVENTORY, hang_after=1)
    controller = Controller(settings, runner=hanging, holder=fleet.controller.holder)
    controller.tick(NOW)  # fetch, queue the commit check
    started = utcnow()
    controller.tick(NOW)  # the check hangs until the run timeout
    assert db.session.query(Run).one().status == "timeout"
    # Without renewals during the run, the heartbeat would still say `started`; it was renewed every 2 s.
    assert queries.controller_state().heartbeat_at - started >= timedelta(seconds=3)


# --- automation that must not act on doubt (issue 11): rollbacks, pinned approvals, inventory jumps ------------

def fetch(controller, now) -> None:
    """Fetch now (as a webhook asks), waiting out a fetch that runs past one tick's wait."""
    records.request_fetch()
    while controller.sync_source(now) == "fetching":
        pass


def commit(settings, path: str, text: str) -> str:
    repo = Path(settings.repo)
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-qm", f"change {path}")
    return git(repo, "rev-parse", "HEAD").strip()


def converges_since(run_id: int) -> list[tuple[str, str]]:
    return [(r.limit, r.revision_sha) for r in db.session.query(Run).filter(Run.id > run_id, Run.kind == "converge")]


def last_run_id() -> int:
    return db.session.query(Run).order_by(Run.id.desc()).first().id


def test_a_force_push_back_to_an_older_commit_rolls_no_auto_host_back(fleet, caplog):
    settings = fleet.controller.settings
    older = git(Path(settings.repo), "rev-parse", "HEAD").strip()
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)  # A checked; web1 and web2 converged to A by the auto rollout
    newer = commit(settings, "NOTES.md", "B\n")
    fleet.drifted |= {"web1", "web2"}
    fetch(fleet.controller, NOW)
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    assert {h.last_converge_sha for h in queries.hosts_named(["web1", "web2"])} == {newer}, "B converged"
    before = last_run_id()

    git(Path(settings.repo), "reset", "-q", "--hard", older)  # the force-push back to A
    fleet.drifted |= {"web1", "web2"}  # the hosts carry B now; A differs
    fetch(fleet.controller, NOW)
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)

    assert queries.desired_sha() == older
    assert queries.get_revision(older).rewrites_history, "judged again when A became desired again"
    assert runs()[-1][:2] == ("check", "commit") and converges_since(before) == [], "nothing rolled back"
    reason = (f"desired revision {older[:12]} does not descend from {newer[:12]}, which this host was converged to: "
              "history was rewritten or rolled back")
    waiting = {a.host: a for a in db.session.query(Approval).filter_by(status="pending", kind="drift")}
    assert waiting["web1"].reason == reason and waiting["web2"].reason == reason
    assert waiting["web1"].revision_sha == older
    assert f"auto converge of web1 held: {reason}; it waits for an approval" in caplog.text

    records.decide_approval(waiting["web1"].id, "tess")  # an operator decides the rollback of web1 alone
    fleet.controller.tick(NOW)
    assert converges_since(before) == [("web1", older)]
    assert db.session.get(Approval, waiting["web1"].id).status == "applied"
    assert db.session.get(Approval, waiting["web2"].id).status == "pending"


def _unverified_command(host: str) -> dict:
    """A `command:` task check mode could only skip ("would have run"): unverified, not drift."""
    return {"event": "runner_on_skipped", "counter": 90, "event_data": {
        "host": host, "task": "Migrate the schema", "task_action": "ansible.builtin.command",
        "resolved_action": "ansible.builtin.command", "task_uuid": "scripted-migrate",
        "task_path": "playbooks/site.yml:20", "play_uuid": "scripted-play",
        "res": {"changed": False, "skipped": True, "msg": "Command would have run if not in check mode"}}}


def test_an_approval_covers_one_revision_and_its_exact_drift_and_asks_again_for_more(fleet):
    settings = fleet.controller.settings
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    approved = db.session.query(Approval).filter_by(host="db1").one()
    records.decide_approval(approved.id, "tess")  # approves the motd drift at A
    before = last_run_id()

    newer = commit(settings, "playbooks/migrate.yml", "# B adds a command task\n")
    checks = fleet.runner.events

    def with_a_command_task(spec):
        events = checks(spec)
        return events[:-1] + [_unverified_command("db1"), events[-1]] if "db1" in events[1]["event_data"]["host"] \
            else events
    fleet.runner.events = with_a_command_task
    fetch(fleet.controller, NOW)
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)

    assert converges_since(before) == [], "the approval of A's drift does not converge B"
    assert approvals() == [("db1", "superseded"), ("db1", "pending")]
    again = db.session.query(Approval).filter_by(host="db1", status="pending").one()
    assert again.revision_sha == newer and again.drift_signature != approved.drift_signature
    assert again.summary == "Write the motd; unverified: Migrate the schema"
    assert "the desired revision changed since it was approved" in db.session.get(Approval, approved.id).note

    records.decide_approval(again.id, "tess")  # what is there now, approved as such
    fleet.controller.tick(NOW)
    assert converges_since(before) == [("db1", newer)]
    assert db.session.get(Approval, again.id).status == "applied"


def test_a_revision_desired_again_after_another_was_accepted_is_judged_again(fleet):
    settings = fleet.controller.settings
    older, newer = "a" * 40, "b" * 40
    records.accept_inventory(older, ["web1"])
    assert observe_inventory(settings, older, ["web1"]) == plan.InventoryChange(older, ("web1",), accepted=True)
    records.accept_inventory(newer, [f"web{i}" for i in range(1, 11)])
    again = observe_inventory(settings, older, ["web1"])
    assert again == plan.InventoryChange(older, ("web1",), newer, previous=10, added=0, removed=9, accepted=False,
                                         baseline_limit="25%"), "rolled back from 10 hosts to 1: judged again"


def test_an_approved_converge_runs_only_at_the_approved_revision(fleet):
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    approval = db.session.query(Approval).filter_by(host="db1").one()
    jobs_before = len(fleet.runner.jobs)
    # As if a `fleet check` elsewhere had moved the desired revision between the re-check and the converge.
    elsewhere = plan.ApprovedDrift(approval.id, "db1", approval.drift_signature, "f" * 40)
    follow_ups = fleet.controller.actions.converge_approved(plan.ConvergeApproved(elsewhere), NOW)
    assert follow_ups == [plan.CloseApproval(approval.id, "failed", "the converge did not succeed", None)]
    converge = db.session.query(Run).filter_by(kind="converge", limit="db1").one()
    assert converge.status == "failed" and converge.error.startswith(f"the desired revision moved to ")
    assert len(fleet.runner.jobs) == jobs_before, "Ansible never started"
    assert queries.hosts_named(["db1"])[0].status == "drifted"


def _web_hosts(count: int) -> list[InventoryHost]:
    return [InventoryHost(f"web{i}", f"127.0.99.{i}", 22, ("web",)) for i in range(1, count + 1)]


def test_an_inventory_jump_holds_auto_converge_until_one_approval_releases_it(fleet, caplog):
    settings = fleet.controller.settings
    fleet.runner.hosts = _web_hosts(4)
    fleet.drifted = set()
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)  # the first revision: 4 hosts, in sync, the baseline
    before = last_run_id()

    commit(settings, "inventory/hosts.yml", "# 40 hosts now\n")
    fleet.runner.hosts = _web_hosts(40)
    fleet.drifted = {h.name for h in fleet.runner.hosts} - {"web1", "web2", "web3", "web4"}
    fetch(fleet.controller, NOW)
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    assert converges_since(before) == [], "held: no host converged"
    reason = "inventory went from 4 to 40 hosts (+36), above max_inventory_change 25%"
    assert f"auto converge of {', '.join(sorted(fleet.drifted))} waits: {reason}; approve the inventory change " \
           "to go on" in caplog.text

    # A second commit does not carry the jump through: it is compared with the last accepted inventory.
    newest = commit(settings, "inventory/hosts.yml", "# 41 hosts now\n")
    fleet.runner.hosts = _web_hosts(41)
    fleet.drifted.add("web41")
    fetch(fleet.controller, NOW)
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    assert converges_since(before) == []
    held = db.session.query(Approval).filter_by(kind="inventory").order_by(Approval.id).all()
    assert [(a.status, a.host) for a in held] == [("superseded", ""), ("pending", "")]
    assert held[1].revision_sha == newest
    assert held[1].reason == "inventory went from 4 to 41 hosts (+37), above max_inventory_change 25%"
    assert queries.count_hosts_by_status().get("drifted") == 37, "checks still ran"

    records.decide_approval(held[1].id, "tess")  # one action releases the whole rollout
    assert fleet.controller.tick(NOW) is True
    converged = converges_since(before)
    assert converged[0] == ("web10", newest), "canary first (names sorted)"
    assert sorted(h for limit, _ in converged for h in limit.split(",")) == sorted(f"web{i}" for i in range(5, 42))
    assert db.session.get(Approval, held[1].id).status == "applied"
    assert queries.count_hosts_by_status() == {"in_sync": 41}

    # The accepted inventory is the new baseline: one more host is within 25% of 41.
    commit(settings, "inventory/hosts.yml", "# 42 hosts now\n")
    fleet.runner.hosts = _web_hosts(42)
    fleet.drifted = {"web42"}
    after = last_run_id()
    fetch(fleet.controller, NOW)
    fleet.controller.tick(NOW)
    fleet.controller.tick(NOW)
    assert converges_since(after) == [("web42", git(Path(settings.repo), "rev-parse", "HEAD").strip())]


def test_a_long_step_keeps_the_lead_but_a_stuck_loop_loses_it(fleet):
    from fleet.controller import STUCK_SECONDS, _LockKeeper
    from fleet.store.db import current_store

    settings = replace(fleet.controller.settings, lease_seconds=1)
    busy = Controller(settings, runner=fleet.runner, holder=leases.Holder("box", 1, "busy"))
    standby = Controller(settings, runner=fleet.runner, holder=leases.Holder("box", 2, "waiting"))
    keeper = _LockKeeper(busy, current_store())
    try:
        assert busy.lead() is True
        threading.Event().wait(3)  # the loop is busy in one long step, three leases long
        assert standby.lead() is False, "the lock was renewed for the busy loop"
        busy.last_beat -= STUCK_SECONDS + 1  # now its loop has been silent too long
        wait_for(lambda: standby.lead(), 10, "the lock of a stuck loop to lapse")
        assert busy.lead() is False and busy.status.standby, "unstuck, its next tick waits"
    finally:
        keeper.close()
