"""Every decision of the controller's loop, as tables of named cases: no git, no SSH, no database."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest

from fleet import plan
from fleet.plan import (
    AcceptInventory, ApplyApproval, ApprovedDrift, CloseApproval, ConvergeApproved, ConvergeBatch, Desired,
    FetchSource, FinishedRun, Hold, HostOutcome, InventoryChange, Observed, OpenApproval, OpenInventoryApproval,
    QueueCheck, QueuedRun, RolloutProgress, StartRun, VerifyCheck,
)
from fleet.policy import DEFAULT_POLICY, Rollout, parse_policy, rollout_batches

NOW = datetime(2026, 3, 2, 10, 7, tzinfo=timezone.utc)  # a Monday, 10:07 UTC
SHA, OLD = "a" * 40, "b" * 40
MINUTE = timedelta(minutes=1)


# --- the source: when to fetch --------------------------------------------------


@pytest.mark.parametrize("observed, fetch", [
    pytest.param(Observed(), True, id="first tick: never fetched"),
    pytest.param(Observed(next_fetch_at=NOW + MINUTE), False, id="interval not elapsed"),
    pytest.param(Observed(next_fetch_at=NOW), True, id="interval just elapsed"),
    pytest.param(Observed(next_fetch_at=NOW - MINUTE), True, id="interval elapsed"),
    pytest.param(Observed(fetch_requested=True, next_fetch_at=NOW + MINUTE), True, id="webhook requested"),
    pytest.param(Observed(next_fetch_at=(NOW + MINUTE).replace(tzinfo=None)), False,
                 id="naive time from SQLite"),
])
def test_plan_fetch(observed, fetch):
    assert plan.plan_fetch(observed, NOW) == (FetchSource() if fetch else None)


@pytest.mark.parametrize("interval, failures, delay", [
    pytest.param(60, 0, timedelta(seconds=60), id="fetch succeeded: the poll interval"),
    pytest.param(60, 1, timedelta(seconds=60), id="first failure: the poll interval"),
    pytest.param(60, 3, timedelta(seconds=240), id="third failure in a row: doubled twice"),
    pytest.param(60, 12, timedelta(minutes=15), id="backoff capped at 15 minutes"),
    pytest.param(3600, 5, timedelta(hours=1), id="interval above the cap: the interval"),
])
def test_next_fetch_backs_off(interval, failures, delay):
    assert plan.next_fetch_at(NOW, interval, failures) == NOW + delay


@pytest.mark.parametrize("failures, outcome, expected", [
    pytest.param(0, "fetched", plan.FetchSchedule(NOW + MINUTE, 0), id="fetched: the poll interval"),
    pytest.param(3, "fetched", plan.FetchSchedule(NOW + MINUTE, 0), id="remote back: failures forgotten"),
    pytest.param(0, "rejected", plan.FetchSchedule(NOW + MINUTE, 0), id="rejected revision: the remote works"),
    pytest.param(2, "stale", plan.FetchSchedule(NOW + 4 * MINUTE, 3), id="remote down again: back off"),
])
def test_after_fetch(failures, outcome, expected):
    assert plan.after_fetch(Observed(fetch_failures=failures), outcome, 60, NOW) == expected


# --- the loop's plan: checks, approvals, the queue ---------------------------------

HOURLY = parse_policy('schedule: "0 * * * *"\n')
QUEUED = QueuedRun(7, "converge", "manual", "web1")
APPROVED = ApprovedDrift(3, "db1", "sig")


@pytest.mark.parametrize("desired, observed, queue, approvals, expected", [
    pytest.param(Desired(None), Observed(), [], [], [], id="no desired revision: nothing to check"),
    pytest.param(Desired(None), Observed(), [QUEUED], [], [StartRun(7)],
                 id="no desired revision: the queue still runs"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=OLD), [], [], [QueueCheck("commit", SHA)],
                 id="unobserved commit"),
    pytest.param(Desired(SHA), Observed(), [], [], [QueueCheck("commit", SHA)],
                 id="first revision ever"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=SHA, last_scheduled_check_at=NOW - MINUTE), [], [], [],
                 id="observed commit, schedule not due"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=SHA, last_scheduled_check_at=NOW - 2 * MINUTE * 30),
                 [], [], [QueueCheck("schedule", SHA)], id="schedule due"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=SHA), [], [], [QueueCheck("schedule", SHA)],
                 id="never checked on schedule"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=OLD, last_scheduled_check_at=NOW - timedelta(days=1)),
                 [], [], [QueueCheck("commit", SHA)], id="commit check stands in for a due schedule"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=OLD), [QUEUED], [],
                 [QueueCheck("commit", SHA), StartRun(7)], id="unobserved commit and a queued run"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=SHA, last_scheduled_check_at=NOW), [QUEUED], [],
                 [StartRun(7)], id="queued run"),
    pytest.param(Desired(SHA), Observed(commit_checked_sha=SHA, last_scheduled_check_at=NOW), [QUEUED],
                 [APPROVED, ApprovedDrift(4, "db2", "x")], [ApplyApproval(APPROVED)],
                 id="approved drift before the queue, one at a time"),
])
def test_plan(desired, observed, queue, approvals, expected):
    assert plan.plan(desired, observed, queue, approvals, DEFAULT_POLICY, NOW) == expected


def test_plan_reads_the_schedule_of_the_policy():
    observed = Observed(commit_checked_sha=SHA, last_scheduled_check_at=NOW - 6 * MINUTE)  # 10:01
    every_five = parse_policy('schedule: "*/5 * * * *"\n')
    assert plan.plan(Desired(SHA), observed, [], [], every_five, NOW) == [QueueCheck("schedule", SHA)], "10:05"
    assert plan.plan(Desired(SHA), observed, [], [], HOURLY, NOW) == [], "hourly: next at 11:00"


# --- after a run from the queue: remediation ---------------------------------------

POLICY = parse_policy("""\
remediation:
  - {group: legacy, mode: report}
  - {group: web, mode: auto}
  - {group: db, mode: approve}
rollout: {canary: 1, batch: 50%}
""")
NIGHTLY = parse_policy("""\
remediation: [{group: all, mode: auto}]
windows: [{allow: "0 2 * * *", duration: 2h}]
""")


def drifted(name: str, *groups: str, drift=("motd",), flapping=(), diverged="") -> HostOutcome:
    return HostOutcome(name, "drifted", groups, tuple(drift), tuple(flapping), diverged)


def check(*hosts: HostOutcome, status="successful", trigger="commit", kind="check", limit="",
          inventory=None) -> FinishedRun:
    return FinishedRun(id=10, kind=kind, trigger=trigger, status=status, limit=limit, sha=SHA, hosts=hosts,
                       inventory=inventory)


ROLLED_BACK = (f"desired revision {SHA[:12]} does not descend from {OLD[:12]}, which this host was converged to: "
               "history was rewritten or rolled back")


def first_batch(*hosts: str, rollout=POLICY.rollout) -> ConvergeBatch:
    batches = tuple(tuple(b) for b in rollout_batches(rollout, hosts))
    return ConvergeBatch(RolloutProgress(rollout, batches))


WEB = (drifted("web1", "web"), drifted("web2", "web"))


@pytest.mark.parametrize("run, rules, now, stopping, expected", [
    pytest.param(None, POLICY, NOW, False, [], id="run could not start"),
    pytest.param(check(*WEB, trigger="policy"), POLICY, NOW, False, [], id="policy's own run"),
    pytest.param(check(*WEB, status="canceled"), POLICY, NOW, False, [], id="canceled check"),
    pytest.param(check(*WEB, status="interrupted"), POLICY, NOW, False, [], id="interrupted check"),
    pytest.param(check(HostOutcome("web1", "in_sync", ("web",))), POLICY, NOW, False, [], id="all in sync"),
    pytest.param(check(*WEB), DEFAULT_POLICY, NOW, False, [], id="no remediation rules: report"),
    pytest.param(check(drifted("db2", "db", "legacy")), POLICY, NOW, False, [],
                 id="report group: first match wins"),
    pytest.param(check(drifted("db1", "db")), POLICY, NOW, False, [OpenApproval("db1", 10, SHA)],
                 id="approve group"),
    pytest.param(check(*reversed(WEB)), POLICY, NOW, False, [first_batch("web1", "web2")],
                 id="auto group: canary first, sorted"),
    pytest.param(check(*WEB, status="failed"), POLICY, NOW, False, [first_batch("web1", "web2")],
                 id="failed check with drift is remediated"),
    pytest.param(check(drifted("db1", "db"), *WEB, drifted("db2", "db", "legacy")), POLICY, NOW, False,
                 [OpenApproval("db1", 10, SHA), first_batch("web1", "web2")], id="mixed groups"),
    pytest.param(check(*WEB), POLICY, NOW, True, [], id="stopping before the rollout"),
    pytest.param(check(drifted("web1", "web", drift=("stamp",), flapping=("stamp",))), POLICY, NOW, False,
                 [Hold(("web1",), "drift on web1 is only in tasks that are not idempotent (stamp): "
                                  "not converged by policy")], id="only flapping drift"),
    pytest.param(check(drifted("web1", "web", drift=("stamp", "motd"), flapping=("stamp",))), POLICY, NOW, False,
                 [first_batch("web1")], id="flapping beside real drift"),
    pytest.param(check(drifted("web1", "web", diverged=OLD), drifted("web2", "web")), POLICY, NOW, False,
                 [Hold(("web1",), f"auto converge of web1 held: {ROLLED_BACK}; it waits for an approval", warn=True),
                  OpenApproval("web1", 10, SHA, ROLLED_BACK), first_batch("web2")],
                 id="force-push back: the rolled-back auto host waits, the other goes on"),
    pytest.param(check(drifted("db1", "db", diverged=OLD)), POLICY, NOW, False,
                 [OpenApproval("db1", 10, SHA, ROLLED_BACK)], id="force-push back: an approve host's approval says why"),
    pytest.param(check(drifted("db2", "db", "legacy", diverged=OLD)), POLICY, NOW, False, [],
                 id="force-push back, report only: nothing to hold"),
    pytest.param(check(*WEB), NIGHTLY, NOW, False,
                 [Hold(("web1", "web2"), "auto converge of web1, web2 waits for the next allow window")],
                 id="window closed"),
    pytest.param(check(*WEB), NIGHTLY, NOW.replace(hour=3, minute=59), False,
                 [first_batch("web1", "web2", rollout=NIGHTLY.rollout)], id="window open"),
    pytest.param(check(kind="converge", trigger="manual", limit="db2"), POLICY, NOW, False, [VerifyCheck("db2")],
                 id="requested converge ends with a verifying check"),
    pytest.param(check(kind="converge", trigger="manual", limit="db2"), POLICY, NOW, True, [],
                 id="requested converge while stopping"),
    pytest.param(check(kind="converge", trigger="manual", status="failed"), POLICY, NOW, False, [VerifyCheck("")],
                 id="failed converge of every host is verified too"),
])
def test_after_run(run, rules, now, stopping, expected):
    assert plan.after_run(run, rules, now, stopping) == expected


# --- rollout: canary, batches, stop rules ---------------------------------------------

FOUR = ("h1", "h2", "h3", "h4")


def progress(rollout: Rollout, index=0, attempted=0, failed=0, converged=(), hosts=FOUR) -> RolloutProgress:
    batches = tuple(tuple(b) for b in rollout_batches(rollout, hosts))
    return RolloutProgress(rollout, batches, index, attempted, failed, tuple(converged))


def converge(*results: tuple[str, str]) -> FinishedRun:
    return FinishedRun(id=20, kind="converge", trigger="policy", status="successful",
                       hosts=tuple(HostOutcome(name, status) for name, status in results))


CANARY = Rollout(canary=1, batch="50%", max_fail_percentage=20)  # batches: h1 | h2 h3 | h4
LENIENT = Rollout(canary=1, batch="1", max_fail_percentage=50)   # batches: h1 | h2 | h3 | h4
NO_CANARY = Rollout(canary=0, batch="2", max_fail_percentage=50)  # batches: h1 h2 | h3 h4


@pytest.mark.parametrize("before, run, stopping, expected", [
    pytest.param(progress(CANARY), converge(("h1", "in_sync")), False,
                 [ConvergeBatch(progress(CANARY, 1, 1, 0, ["h1"]))], id="canary converged: next batch"),
    pytest.param(progress(CANARY), converge(("h1", "failed")), False,
                 [Hold(("h2", "h3", "h4"), "rollout stopped, the canary failed: 1 of 1 hosts failed (max 20%)",
                       warn=True)], id="canary failed"),
    pytest.param(progress(CANARY), None, False,
                 [Hold(("h2", "h3", "h4"), "rollout stopped, the canary failed: 1 of 1 hosts failed (max 20%)",
                       warn=True)], id="canary could not start"),
    pytest.param(progress(CANARY, 1, 1, 0, ["h1"]), converge(("h2", "in_sync"), ("h3", "unreachable")), False,
                 [Hold(("h4",), "rollout stopped, too many hosts failed: 1 of 3 hosts failed (max 20%)", warn=True),
                  VerifyCheck("h1,h2")], id="above max_fail_percentage: stop, verify the converged"),
    pytest.param(progress(LENIENT, 1, 1, 0, ["h1"]), converge(("h2", "failed")), False,
                 [ConvergeBatch(progress(LENIENT, 2, 2, 1, ["h1"]))], id="at max_fail_percentage: go on"),
    pytest.param(progress(NO_CANARY), converge(("h1", "failed"), ("h2", "in_sync")), False,
                 [ConvergeBatch(progress(NO_CANARY, 1, 2, 1, ["h2"]))],
                 id="no canary: a failed first batch is judged by percentage"),
    pytest.param(progress(CANARY, 2, 3, 0, ["h1", "h2", "h3"]), converge(("h4", "in_sync")), False,
                 [VerifyCheck("h1,h2,h3,h4")], id="last batch: verify every converged host"),
    pytest.param(progress(CANARY, 1, 1, 0, ["h1"]), converge(("h2", "in_sync"), ("h3", "in_sync")), True,
                 [], id="stopping between batches: no more batches, no verify"),
    pytest.param(progress(LENIENT, 3, 3, 1, ["h1", "h3"]), converge(("h4", "in_sync")), False,
                 [VerifyCheck("h1,h3,h4")], id="a failed host is not verified"),
])
def test_after_batch(before, run, stopping, expected):
    assert plan.after_batch(before, run, stopping) == expected


@pytest.mark.parametrize("hosts, rollout, stopping, expected", [
    pytest.param(("h1", "h2"), Rollout(canary=1), False, [ConvergeBatch(progress(Rollout(canary=1), hosts=("h1", "h2")))],
                 id="rollout starts with the canary"),
    pytest.param((), Rollout(), False, [], id="no hosts: no rollout"),
    pytest.param(("h1",), Rollout(), True, [], id="stopping: no rollout"),
])
def test_start_rollout(hosts, rollout, stopping, expected):
    assert plan.start_rollout(hosts, rollout, stopping) == expected


# --- approvals ------------------------------------------------------------------------------

APPROVAL = ApprovedDrift(5, "db1", "sig-approved", SHA)


def recheck(status="drifted", run_status="successful", sha=SHA, diverged="") -> FinishedRun:
    return FinishedRun(id=30, kind="check", trigger="policy", status=run_status, sha=sha,
                       hosts=(HostOutcome("db1", status, ("db",), ("motd",), (), diverged),))


@pytest.mark.parametrize("run, signature, expected", [
    pytest.param(None, "", [CloseApproval(5, "failed", "the re-check before converging did not finish")],
                 id="re-check could not start"),
    pytest.param(recheck(run_status="canceled"), "sig-approved",
                 [CloseApproval(5, "failed", "the re-check before converging did not finish")], id="re-check canceled"),
    pytest.param(recheck("in_sync"), plan.drift_signature(SHA, []),
                 [CloseApproval(5, "superseded", "no drift left to converge when re-checked")],
                 id="approved drift vanished"),
    pytest.param(recheck("unreachable"), "", [CloseApproval(5, "superseded", "no drift left to converge when re-checked")],
                 id="host unreachable on re-check"),
    pytest.param(FinishedRun(id=30, kind="check", trigger="policy", status="successful"), "",
                 [CloseApproval(5, "superseded", "no drift left to converge when re-checked")],
                 id="host gone from the inventory"),
    pytest.param(recheck(), "sig-other",
                 [CloseApproval(5, "superseded", "the drift changed since it was approved; asking again"),
                  OpenApproval("db1", 30, SHA)], id="approved drift changed"),
    pytest.param(recheck(), "sig-approved", [ConvergeApproved(APPROVAL)], id="approved drift unchanged: apply"),
    pytest.param(recheck(sha=OLD), "sig-approved",
                 [CloseApproval(5, "superseded", f"the desired revision changed since it was approved "
                                                 f"({SHA[:12]} -> {OLD[:12]}); asking again"),
                  OpenApproval("db1", 30, OLD)], id="same drift at another revision: asking again"),
    pytest.param(recheck(sha=OLD, diverged=SHA), "sig-other",
                 [CloseApproval(5, "superseded", f"the desired revision changed since it was approved "
                                                 f"({SHA[:12]} -> {OLD[:12]}); asking again"),
                  OpenApproval("db1", 30, OLD, f"desired revision {OLD[:12]} does not descend from {SHA[:12]}, "
                                               "which this host was converged to: history was rewritten or "
                                               "rolled back")],
                 id="rolled back since it was approved: the new approval says why"),
])
def test_after_recheck(run, signature, expected):
    assert plan.after_recheck(APPROVAL, run, signature) == expected


@pytest.mark.parametrize("run, expected", [
    pytest.param(converge(("db1", "in_sync")),
                 [CloseApproval(5, "applied", "converged and verified", 20), VerifyCheck("db1")],
                 id="approved converge succeeded: applied, then verified"),
    pytest.param(converge(("db1", "failed")), [CloseApproval(5, "failed", "the converge did not succeed", 20)],
                 id="approved converge failed"),
    pytest.param(None, [CloseApproval(5, "failed", "the converge did not succeed", None)],
                 id="approved converge could not start"),
])
def test_after_approved_converge(run, expected):
    assert plan.after_approved_converge(APPROVAL, run) == expected


# --- drift fingerprints and flapping --------------------------------------------------


@dataclass
class Task:
    task: str
    action: str
    diff: str = ""
    reason: str = ""
    path: str = "playbooks/site.yml:12"


MOTD = Task("motd", "template", "-old\n+new\n")
USERS = Task("users", "user")
PROBE = Task("Probe the app", "command", reason="a command would have run; check mode cannot tell")


@pytest.mark.parametrize("other", [
    pytest.param(plan.drift_signature(SHA, [USERS, MOTD], [PROBE]), id="order of the changed tasks"),
    pytest.param(plan.drift_signature(SHA, [MOTD, USERS], [Task(PROBE.task, PROBE.action, reason=PROBE.reason,
                                                                path="playbooks/site.yml:40")]),
                 id="a task that moved lines in its file"),
])
def test_drift_signature_ignores(other):
    assert plan.drift_signature(SHA, [MOTD, USERS], [PROBE]) == other


@pytest.mark.parametrize("other", [
    pytest.param(plan.drift_signature(OLD, [MOTD, USERS], [PROBE]), id="another revision"),
    pytest.param(plan.drift_signature(SHA, [MOTD], [PROBE]), id="one changed task fewer"),
    pytest.param(plan.drift_signature(SHA, [MOTD, Task("users", "user", "+bob\n")], [PROBE]), id="another diff"),
    pytest.param(plan.drift_signature(SHA, [MOTD, USERS]), id="no unverified task"),
    pytest.param(plan.drift_signature(SHA, [MOTD, USERS], [PROBE, Task("Run migration", "command", reason="x")]),
                 id="a new unverified task"),
    pytest.param(plan.drift_signature(SHA, [MOTD, USERS], [Task(PROBE.task, PROBE.action, reason="async")]),
                 id="unverified for another reason"),
    pytest.param(plan.drift_signature(SHA, [MOTD, USERS], [Task(PROBE.task, PROBE.action, reason=PROBE.reason,
                                                                path="playbooks/other.yml:12")]),
                 id="a task of the same name in another file"),
    pytest.param(plan.drift_signature(SHA, [MOTD, USERS, PROBE]), id="a task changed instead of unverified"),
])
def test_drift_signature_tells_apart(other):
    assert plan.drift_signature(SHA, [MOTD, USERS], [PROBE]) != other


# --- the inventory guard --------------------------------------------------------------------

FOUR_HOSTS = tuple(f"h{i}" for i in range(4))
FORTY_HOSTS = tuple(f"h{i}" for i in range(40))


def jump(hosts=FORTY_HOSTS, previous=4, added=36, removed=0, accepted=False, baseline=OLD, baseline_limit="25%"):
    return InventoryChange(SHA, hosts, baseline, previous, added, removed, accepted, baseline_limit)


GUARDED = parse_policy("remediation: [{group: web, mode: auto}, {group: db, mode: approve}]\n"
                       "rollout: {canary: 1, batch: 50%}\n")
OFF = parse_policy("remediation: [{group: web, mode: auto}, {group: db, mode: approve}]\n"
                   "rollout: {canary: 1, batch: 50%}\nmax_inventory_change: off\n")
FOUR_TO_FORTY = "inventory went from 4 to 40 hosts (+36), above max_inventory_change 25%"
FORTY_HOLD = Hold(("web1", "web2"), f"auto converge of web1, web2 waits: {FOUR_TO_FORTY}; approve the inventory "
                                    "change to go on", warn=True)


@pytest.mark.parametrize("run, rules, expected", [
    pytest.param(check(*WEB, inventory=jump()), GUARDED, [FORTY_HOLD, OpenInventoryApproval(10, SHA, FORTY_HOSTS,
                                                                                            FOUR_TO_FORTY)],
                 id="4 to 40 hosts: auto converge waits for one approval"),
    pytest.param(check(*WEB, drifted("db1", "db"), inventory=jump()), GUARDED,
                 [FORTY_HOLD, OpenInventoryApproval(10, SHA, FORTY_HOSTS, FOUR_TO_FORTY), OpenApproval("db1", 10, SHA)],
                 id="approve groups still get their approvals"),
    pytest.param(check(drifted("db1", "db"), inventory=jump()), GUARDED, [OpenApproval("db1", 10, SHA)],
                 id="no auto drift: nothing to hold, judged again at the next check"),
    pytest.param(check(*WEB, inventory=jump(FOUR_HOSTS[:3] + ("h9",), 4, 1, 1)), GUARDED,
                 [Hold(("web1", "web2"), "auto converge of web1, web2 waits: inventory went from 4 to 4 hosts "
                                         "(+1, -1), above max_inventory_change 25%; approve the inventory change "
                                         "to go on", warn=True),
                  OpenInventoryApproval(10, SHA, FOUR_HOSTS[:3] + ("h9",), "inventory went from 4 to 4 hosts "
                                        "(+1, -1), above max_inventory_change 25%")],
                 id="a host swapped out of four counts twice"),
    pytest.param(check(*WEB, inventory=jump(FOUR_HOSTS + ("h9",), 4, 1)), GUARDED,
                 [AcceptInventory(SHA, FOUR_HOSTS + ("h9",)), first_batch("web1", "web2")],
                 id="within the limit: the next baseline, and the rollout"),
    pytest.param(check(*WEB, inventory=jump(accepted=True)), GUARDED, [first_batch("web1", "web2")],
                 id="approved jump: the rollout goes on"),
    pytest.param(check(*WEB, inventory=jump(baseline="", previous=0, added=0)), GUARDED,
                 [AcceptInventory(SHA, FORTY_HOSTS), first_batch("web1", "web2")],
                 id="first revision: nothing to compare with"),
    pytest.param(check(*WEB, inventory=jump(baseline_limit=None)), OFF,
                 [AcceptInventory(SHA, FORTY_HOSTS), first_batch("web1", "web2")], id="guard off"),
    pytest.param(check(*WEB, inventory=jump()), OFF,
                 [Hold(("web1", "web2"), f"auto converge of web1, web2 waits: {FOUR_TO_FORTY} (the limit of "
                                         f"{OLD[:12]}, the last accepted revision); approve the inventory change "
                                         "to go on", warn=True),
                  OpenInventoryApproval(10, SHA, FORTY_HOSTS, f"{FOUR_TO_FORTY} (the limit of {OLD[:12]}, the "
                                                             "last accepted revision)")],
                 id="a commit that turns the guard off is still held by the baseline's limit"),
    pytest.param(check(drifted("web1", "web", diverged=OLD), drifted("web2", "web"), inventory=jump()), GUARDED,
                 [Hold(("web2",), f"auto converge of web2 waits: {FOUR_TO_FORTY}; approve the inventory change "
                                  "to go on", warn=True),
                  OpenInventoryApproval(10, SHA, FORTY_HOSTS, FOUR_TO_FORTY),
                  Hold(("web1",), f"auto converge of web1 held: {ROLLED_BACK}; it waits for an approval", warn=True),
                  OpenApproval("web1", 10, SHA, ROLLED_BACK)],
                 id="jump and force-push: each hold has its own approval"),
])
def test_inventory_guard(run, rules, expected):
    assert plan.after_run(run, rules, NOW, False) == expected


INVENTORY_APPROVAL = ApprovedDrift(6, "", "", SHA, "inventory")


@pytest.mark.parametrize("run, expected", [
    pytest.param(None, [CloseApproval(6, "failed", "the check before the rollout did not finish")],
                 id="check could not start"),
    pytest.param(check(*WEB, status="canceled", trigger="policy"),
                 [CloseApproval(6, "failed", "the check before the rollout did not finish")], id="check canceled"),
    pytest.param(replace(check(*WEB, trigger="policy"), sha=OLD),
                 [CloseApproval(6, "superseded", f"the desired revision moved on to {OLD[:12]}; its inventory is "
                                                 "judged on its own")], id="desired revision moved on"),
    pytest.param(check(*WEB, trigger="policy", inventory=jump(accepted=True)),
                 [CloseApproval(6, "applied", f"inventory change of {SHA[:12]} accepted; auto converge goes on", 10),
                  first_batch("web1", "web2")], id="approved: the held rollout starts"),
])
def test_after_inventory_recheck(run, expected):
    assert plan.after_inventory_recheck(INVENTORY_APPROVAL, run, GUARDED, NOW, False) == expected


@pytest.mark.parametrize("host, only", [
    pytest.param(drifted("web1", drift=("stamp",), flapping=("stamp",)), True, id="only a flapping task"),
    pytest.param(drifted("web1", drift=("stamp", "motd"), flapping=("stamp",)), False, id="real drift beside it"),
    pytest.param(drifted("web1", drift=("motd",)), False, id="no flapping task"),
    pytest.param(drifted("web1", drift=()), False, id="no drift at all"),
])
def test_only_flapping(host, only):
    assert plan.only_flapping(host) is only


# --- purity ----------------------------------------------------------------------------------

def test_plan_imports_no_io():
    """The controller observes (git ancestry, inventories, the store) and hands plain data in."""
    import ast
    from pathlib import Path

    source = Path(plan.__file__).read_text()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"hashlib", "__future__", "collections.abc", "dataclasses", "datetime", "fleet",
                        "fleet.drift", "fleet.policy", "fleet.vocabulary"}, imported
    assert "now()" not in source  # the clock is always a parameter
