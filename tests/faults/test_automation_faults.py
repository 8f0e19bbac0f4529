"""Automation that must not act on doubt (issue 11, points 1 to 3), provoked on real processes.

A real `fleet serve` follows a real bare git remote; a lab host in an `auto` group is converged to
commit A, then to commit B; then someone force-pushes the branch back to A. fleet must not roll the
host back by itself: the host keeps B's file (read over real SSH), no converge runs at A, and an
approval names the reason. Approving it (one `fleet approve`) is what rolls the host back.

An approval covers one revision and its exact drift: approved at A, it converges nothing once B (same
drift plus a `command:` task check mode cannot verify) is desired; a new approval asks again.

Likewise a commit that takes the inventory from 1 host to 5 holds the auto converge of the drifted
host until one approval of the inventory change releases it; checks still run meanwhile.
"""

from __future__ import annotations

import time

import pytest
import yaml

from tests.conftest import FleetCli, ServeProcess, git, lab_ssh, make_source, wait_for
from tests.faults.conftest import HealthWatch

pytestmark = pytest.mark.lab

SUBNET = 26  # this suite's lab subnet: one host, web1 on 127.0.26.1
POLL_SECONDS = 2
ADDRESS = "127.0.26.1"
MARKER = "/etc/fleet-automation-marker"
PLAYBOOK = """\
- name: Automation faults
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the revision marker
      ansible.builtin.copy:
        dest: {marker}
        content: "{content}\\n"
"""
POLICY = """\
remediation:
  - {group: all, mode: auto}
rollout: {canary: 1, batch: 100%}
"""


@pytest.fixture
def remote(tmp_path):
    """A lab host, a bare git remote holding commit A, a clone to push from, and `fleet` bound to the remote."""
    cli = FleetCli(tmp_path / "data", tmp_path / "remote.git", tmp_path)
    up = cli("lab", "up", "--hosts", "1", "--subnet", str(SUBNET))
    try:
        assert up.code == 0, up.stderr
        inventory = yaml.safe_load((tmp_path / "data" / "lab" / "hosts.yml").read_text())
        assert set(inventory["all"]["children"]["web"]["hosts"]) == {"web1"}
        work = make_source(tmp_path / "work", yaml.safe_dump(inventory))
        (work / "fleet.yml").write_text(POLICY)
        commit(work, "A")
        git(tmp_path, "clone", "-q", "--bare", str(work), str(cli.repo))
        git(work, "remote", "add", "origin", str(cli.repo))
        cli.work = work
        yield cli
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def commit(work, content: str, extra: str = "") -> str:
    (work / "playbooks" / "site.yml").write_text(PLAYBOOK.format(marker=MARKER, content=content) + extra)
    git(work, "add", "-A")
    git(work, "commit", "-qm", f"marker {content}")
    return git(work, "rev-parse", "HEAD").strip()


def runs(cli) -> list[dict]:
    return cli("runs", "--json", "--count", "100").json()["runs"]


def converged_to(cli, sha: str) -> bool:
    """web1 converged to `sha` and the rollout's verifying check ended."""
    listed = runs(cli)
    converged = any(r["kind"] == "converge" and r["revision"] == sha and r["status"] == "successful" for r in listed)
    return converged and not any(r["status"] in ("queued", "running") for r in listed)


def tick_after(serve: ServeProcess, moment: float) -> bool:
    """Did the controller write its heartbeat (it does at the start of every tick) after `moment`?"""
    status, body = serve.get("/api/v1/healthz")
    age = (body.get("controller") or {}).get("heartbeat_age_seconds") if status == 200 else None
    return age is not None and time.time() - age > moment + 0.2  # the age is rounded to tenths


def marker(cli) -> str:
    return lab_ssh(cli, ADDRESS, f"cat {MARKER}").strip()


def test_a_force_push_back_to_an_already_converged_commit_rolls_nothing_back(remote):
    cli, work = remote, remote.work
    a = git(work, "rev-parse", "HEAD").strip()
    serve = ServeProcess(cli, POLL_SECONDS)
    serve.start()
    try:
        wait_for(lambda: converged_to(cli, a), 240, "the auto rollout of A")
        assert marker(cli) == "A"
        b = commit(work, "B")
        git(work, "push", "-q", "origin", "main")
        wait_for(lambda: converged_to(cli, b), 240, "the auto rollout of B")
        assert marker(cli) == "B"
        before = max(r["id"] for r in runs(cli))

        with HealthWatch(serve, "force-push back to a converged commit") as watch:
            git(work, "reset", "-q", "--hard", a)
            git(work, "push", "-q", "--force", "origin", "main")
            held = wait_for(lambda: [x for x in cli("approvals", "--json").json()["approvals"]
                                     if x["status"] == "pending" and x["revision"] == a], 240,
                            "an approval for the rollback")
            assert any(r["id"] > before and r["kind"] == "check" and r["trigger"] == "commit"
                       and r["revision"] == a and r["status"] == "successful" for r in runs(cli))
            # A rollout would follow the check's remediation in the same tick: a later tick proves none came.
            seen = time.time()
            wait_for(lambda: tick_after(serve, seen), 60, "a controller tick after the hold")
            status_after = cli("status", "--json").json()["hosts"][0]
        assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"

        assert [r for r in runs(cli) if r["id"] > before and r["kind"] == "converge"] == [], "nothing rolled back"
        assert marker(cli) == "B", "the host still carries B"
        assert status_after["last_converge_revision"] == b
        [approval] = held
        assert approval["host"] == "web1" and approval["kind"] == "drift"
        assert approval["reason"] == (f"desired revision {a[:12]} does not descend from {b[:12]}, which this host "
                                      "was converged to: history was rewritten or rolled back")
        listed = cli("approvals")
        assert "history was rewritten or rolled back" in listed.stdout
        revisions = {r["sha"]: r for r in cli("revisions", "--json").json()["revisions"]}
        assert revisions[a]["rewrites_history"] is True
        assert "history was rewritten or rolled back" in (cli.data_dir.parent / "serve.log").read_text()

        # An operator decides: one `fleet approve` rolls web1 back to A, re-checked first.
        with HealthWatch(serve, "approved rollback") as watch:
            assert cli("approve", str(approval["id"])).code == 0
            wait_for(lambda: converged_to(cli, a), 240, "the approved converge of A")
        assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"
        assert marker(cli) == "A"
        decided = next(x for x in cli("approvals", "--json").json()["approvals"] if x["id"] == approval["id"])
        assert decided["status"] == "applied" and decided["decided_by"]
    finally:
        serve.stop()


COMMAND_TASK = """\
    - name: Migrate the schema
      ansible.builtin.command: /bin/true
"""


def test_an_approval_of_drift_at_one_revision_converges_nothing_at_the_next(remote):
    cli, work = remote, remote.work
    (work / "fleet.yml").write_text("remediation:\n  - {group: all, mode: approve}\n")
    a = commit(work, "A")
    git(work, "push", "-q", "--force", "origin", "main")
    serve = ServeProcess(cli, POLL_SECONDS)
    serve.start()
    try:
        [asked] = wait_for(lambda: [x for x in cli("approvals", "--json").json()["approvals"]
                                    if x["status"] == "pending" and x["revision"] == a], 240, "an approval at A")
    finally:
        serve.stop()
    # While the controller is down: the drift at A is approved, and B lands with the same drift plus a
    # command task. A `fleet check` makes B desired, so the controller finds both when it starts again.
    assert cli("approve", str(asked["id"])).code == 0
    b = commit(work, "A", COMMAND_TASK)
    git(work, "push", "-q", "origin", "main")
    checked = cli("check", "--json", "--limit", "web1")
    assert checked.code == 2 and checked.json()["run"]["revision"] == b, checked.stdout + checked.stderr
    [host] = checked.json()["hosts"]
    assert [t["task"] for t in host["unverified_tasks"]] == ["Migrate the schema"]

    serve = ServeProcess(cli, POLL_SECONDS)
    serve.start()
    try:
        with HealthWatch(serve, "approval of A's drift when B is desired") as watch:
            again = wait_for(lambda: [x for x in cli("approvals", "--json").json()["approvals"]
                                      if x["status"] == "pending" and x["revision"] == b], 240, "an approval at B")
            seen = time.time()
            wait_for(lambda: tick_after(serve, seen), 60, "a controller tick after it")
    finally:
        serve.stop()
    assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"

    assert [r for r in runs(cli) if r["kind"] == "converge"] == [], "nothing converged"
    assert lab_ssh(cli, ADDRESS, f"cat {MARKER} 2>/dev/null || echo absent").strip() == "absent"
    old = next(x for x in cli("approvals", "--json").json()["approvals"] if x["id"] == asked["id"])
    assert old["status"] == "superseded"
    assert old["note"] == (f"the desired revision changed since it was approved ({a[:12]} -> {b[:12]}); "
                           "asking again")
    [new] = again
    assert new["host"] == "web1" and new["summary"] == "Write the revision marker; unverified: Migrate the schema"


def test_an_inventory_jump_holds_auto_converge_until_one_approval(remote):
    cli, work = remote, remote.work
    a = git(work, "rev-parse", "HEAD").strip()
    serve = ServeProcess(cli, POLL_SECONDS)
    serve.start()
    try:
        wait_for(lambda: converged_to(cli, a), 240, "the auto rollout of A")
        hosts = work / "inventory" / "hosts.yml"
        inventory = yaml.safe_load(hosts.read_text())
        # Four more hosts nobody listens for (loopback, refused at once): the jump, not their drift, is the point.
        inventory["all"]["children"]["web"]["hosts"].update(
            {f"web{i}": {"ansible_host": f"127.0.{SUBNET}.{48 + i}"} for i in range(2, 6)})
        hosts.write_text(yaml.safe_dump(inventory))
        b = commit(work, "B")
        before = max(r["id"] for r in runs(cli))

        with HealthWatch(serve, "inventory jump from 1 to 5 hosts") as watch:
            git(work, "push", "-q", "origin", "main")
            held = wait_for(lambda: [x for x in cli("approvals", "--json").json()["approvals"]
                                     if x["status"] == "pending" and x["kind"] == "inventory"], 240,
                            "an approval of the inventory change")
            seen = time.time()
            wait_for(lambda: tick_after(serve, seen), 60, "a controller tick after the hold")
        assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"

        [approval] = held
        assert approval["revision"] == b and approval["host"] == ""
        assert approval["reason"] == "inventory went from 1 to 5 hosts (+4), above max_inventory_change 25%"
        assert [r for r in runs(cli) if r["id"] > before and r["kind"] == "converge"] == [], "held"
        checks = [r for r in runs(cli) if r["id"] > before and r["kind"] == "check" and r["revision"] == b]
        assert checks and checks[0]["trigger"] == "commit", "the check still ran"
        statuses = {h["name"]: h["status"] for h in cli("status", "--json").json()["hosts"]}
        assert statuses["web1"] == "drifted" and statuses["web5"] == "unreachable"
        assert marker(cli) == "A"
        assert "above max_inventory_change 25%" in cli("approvals").stdout

        with HealthWatch(serve, "approved inventory change") as watch:
            answer = cli("approve", str(approval["id"]))
            assert answer.code == 0 and "is accepted" in answer.stdout, answer.stdout + answer.stderr
            wait_for(lambda: converged_to(cli, b), 240, "the released rollout of B")
        assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"
        assert marker(cli) == "B"
        decided = next(x for x in cli("approvals", "--json").json()["approvals"] if x["id"] == approval["id"])
        assert decided["status"] == "applied"
    finally:
        serve.stop()
