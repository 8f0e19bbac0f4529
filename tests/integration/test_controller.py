"""A real `fleet serve` process against lab hosts and a real git source."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import socket
import time

import pytest
import yaml

from tests.ansible_processes import ansible_processes, host_interpreters
from tests.conftest import FleetCli, ServeProcess, git, make_source, ssh_masters, wait_for

pytestmark = pytest.mark.lab

SUBNET = 50
POLL_SECONDS = 2
SECRET = "test-webhook-secret"
POLICY = """\
remediation:
  - group: legacy      # first match wins: db2 is in db too, but only reported
    mode: report
  - group: web
    mode: auto
  - group: db
    mode: approve
rollout:
  canary: 1
  batch: 50%
"""


def runs(cli) -> list[dict]:
    return cli("runs", "--json", "--count", "100").json()["runs"]


def hosts(cli) -> dict:
    return {h["name"]: h for h in cli("status", "--json").json()["hosts"]}


def approvals(cli) -> list[dict]:
    return cli("approvals", "--json").json()["approvals"]


def idle(cli) -> bool:
    return not any(r["status"] in ("queued", "running") for r in runs(cli))


@pytest.fixture(scope="module")
def controller_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("controller")
    cli = FleetCli(root / "data", root / "source", root)
    assert cli("lab", "up", "--hosts", "4", "--subnet", str(SUBNET)).code == 0
    inventory = yaml.safe_load((root / "data" / "lab" / "hosts.yml").read_text())
    inventory["all"]["children"]["legacy"] = {"hosts": {"db2": None}}
    make_source(root / "source", yaml.safe_dump(inventory))
    (root / "source" / "fleet.yml").write_text(POLICY)
    git(root / "source", "add", "fleet.yml")
    git(root / "source", "commit", "-qm", "remediation policy")
    service = ServeProcess(cli, POLL_SECONDS, {"FLEET_WEBHOOK_SECRET": SECRET})
    service.start()
    yield cli, service
    service.stop()
    cli("lab", "down")


def wait_for_the_first_rollout(cli) -> None:
    """The commit check of the first revision, then the auto converge of the web group it starts."""
    wait_for(lambda: any(r["kind"] == "check" and r["trigger"] == "commit" and r["status"] == "successful"
                         for r in runs(cli)), 240, "the first commit check")
    # Wait for the rollout's verifying check to end: between two runs of a rollout the queue is empty
    # for a moment, so "idle and web2 in sync" alone can come true before that check starts.
    wait_for(lambda: idle(cli) and any(r["kind"] == "check" and r["trigger"] == "policy"
                                       and r["limit"] == "web1,web2" for r in runs(cli)), 300, "the web rollout")


def test_policy_per_group_auto_converges_approve_waits_report_only_shows(controller_env):
    cli, service = controller_env
    wait_for_the_first_rollout(cli)

    history = list(reversed(runs(cli)))
    converges = [r for r in history if r["kind"] == "converge"]
    assert [r["limit"] for r in converges] == ["web1", "web2"], "canary alone first, then the next batch"
    assert all(r["trigger"] == "policy" for r in converges)
    verify = [r for r in history if r["kind"] == "check" and r["trigger"] == "policy"]
    assert verify and verify[-1]["limit"] == "web1,web2" and verify[-1]["status"] == "successful"

    state = hosts(cli)
    assert state["web1"]["status"] == state["web2"]["status"] == "in_sync"
    assert state["db1"]["status"] == "drifted" and state["db2"]["status"] == "drifted"
    pending = [a for a in approvals(cli) if a["status"] == "pending"]
    assert [a["host"] for a in pending] == ["db1"], "db2 is in a report group: no approval, no converge"
    assert not any("db" in (r["limit"] or "") for r in converges)

    assert cli("approve", str(pending[0]["id"])).code == 0
    wait_for(lambda: next(a for a in approvals(cli) if a["id"] == pending[0]["id"])["status"] == "applied",
             240, "the approved converge")
    state = hosts(cli)
    assert state["db1"]["status"] == "in_sync"
    assert state["db2"]["status"] == "drifted", "a report group is only shown, never converged"


def test_requested_converge_ends_with_a_verifying_check(controller_env):
    cli, service = controller_env
    wait_for_the_first_rollout(cli)  # so no policy run slips in between, even when this test runs alone
    queued = cli("request", "converge", "--limit", "db2", "--json").json()["run"]
    wait_for(lambda: idle(cli) and any(r["id"] > queued["id"] for r in runs(cli)), 240,
             "the converge and its verifying check")
    after = [r for r in reversed(runs(cli)) if r["id"] >= queued["id"]]
    assert [(r["kind"], r["trigger"], r["limit"]) for r in after[:2]] == [
        ("converge", "manual", "db2"), ("check", "policy", "db2")]
    assert after[1]["status"] == "successful"
    assert hosts(cli)["db2"]["status"] == "in_sync"
    assert hosts(cli)["db2"]["last_check_run_id"] == after[1]["id"]


def test_pushed_commit_starts_a_check_within_the_poll_interval(controller_env):
    cli, service = controller_env
    wait_for(lambda: idle(cli), 300, "the controller to be idle")
    marker = cli.repo / "NOTES.md"
    marker.write_text("a new commit\n")
    git(cli.repo, "add", "NOTES.md")
    git(cli.repo, "commit", "-qm", "new commit")
    sha = git(cli.repo, "rev-parse", "HEAD").strip()
    pushed = time.monotonic()
    run = wait_for(lambda: next((r for r in runs(cli) if r["revision"] == sha and r["trigger"] == "commit"), None),
                   POLL_SECONDS + 30, "a commit check of the new revision")
    assert time.monotonic() - pushed < POLL_SECONDS + 30
    assert run["kind"] == "check" and run["limit"] is None


def oversized_hook_status(port: int, size: int) -> int:
    """The answer to a webhook announcing a `size`-byte body, read before the body is sent.

    The server answers a Content-Length over its limit at once and closes the
    connection, so a client still pushing the body may only see the reset;
    like a client that reads early answers, this one looks before sending.
    """
    head = (f"POST /api/v1/hooks/git HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Gitlab-Token: {SECRET}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = sock.recv(65536)
    return int(answer.split(b" ", 2)[1])


def test_webhook_with_bad_signature_gets_401_and_starts_nothing(controller_env):
    cli, service = controller_env
    wait_for(lambda: idle(cli), 300, "the controller to be idle")
    before = len(runs(cli))
    body = b'{"ref": "refs/heads/main"}'
    status, answer = service.request("POST", "/api/v1/hooks/git", body, {"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert status == 401 and "signature" in answer["error"]
    status, _ = service.request("POST", "/api/v1/hooks/git", body)
    assert status == 401
    assert oversized_hook_status(service.port, 2 * 1024 * 1024) == 413
    time.sleep(POLL_SECONDS * 2)
    assert len(runs(cli)) == before

    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, answer = service.request("POST", "/api/v1/hooks/git", body, {"X-Hub-Signature-256": good})
    assert status == 202 and answer["status"] == "fetch requested"
    status, _ = service.request("POST", "/api/v1/hooks/git", body, {"X-Gitlab-Token": SECRET})
    assert status == 202


def test_disappearing_remote_marks_the_source_stale_and_the_controller_keeps_serving(controller_env):
    cli, service = controller_env
    moved = cli.repo.with_name("source-away")
    cli.repo.rename(moved)
    try:
        source = wait_for(lambda: (s := cli("revisions", "--json").json()["source"])["stale"] and s,
                          60, "the source to be marked stale")
        assert "cannot fetch" in source["error"]
        assert source["desired"], "the last good revision stays desired"
        assert service.get("/api/v1/healthz")[0] == 200
    finally:
        moved.rename(cli.repo)
    wait_for(lambda: not cli("revisions", "--json").json()["source"]["stale"], 120, "the source to recover")


@pytest.fixture
def start_a_check(controller_env):
    """start(): queue a check once the controller is idle and return it while Ansible runs it, held up on a
    hung host: Mitogen's interpreters on db1 (kept from earlier checks) are stopped, so the check lasts
    until the test ends it (a healthy 4-host check ends within seconds). They go on after the test."""
    cli, _service = controller_env
    stopped = []

    def start() -> dict:
        wait_for(lambda: idle(cli), 300, "the controller to be idle")
        if not host_interpreters(cli.data_dir).get("db1"):  # none kept yet: a check starts them
            cli("request", "check")
            wait_for(lambda: idle(cli), 300, "a check that starts Mitogen's interpreters")
        stopped.extend(wait_for(lambda: list(host_interpreters(cli.data_dir).get("db1", {})), 30,
                                "Mitogen's interpreters on db1"))
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        queued = cli("request", "check", "--json").json()["run"]
        wait_for(lambda: run_by_id(cli, queued["id"])["status"] == "running", 60, "the requested check to start")
        wait_for(lambda: ansible_processes(cli.data_dir), 60, "Ansible to run the check")
        time.sleep(2)
        return queued

    yield start
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def run_by_id(cli, run_id: int) -> dict:
    return next(r for r in runs(cli) if r["id"] == run_id)


def test_cancel_stops_a_running_run_and_keeps_its_partial_results(controller_env, start_a_check):
    cli, service = controller_env
    queued = start_a_check()
    assert cli("cancel", str(queued["id"])).code == 0
    run = wait_for(lambda: (r := next(r for r in runs(cli) if r["id"] == queued["id"]))["status"] != "running" and r,
                   60, "the run to stop")
    assert run["status"] == "canceled" and run["error"].startswith("canceled by")
    shown = cli("show", str(run["id"]), "--json").json()
    assert shown["stdout"], "partial output is kept"
    assert not any(h["status"] == "in_sync" for h in shown["hosts"]), "a stopped run proves no host in sync"
    assert cli("cancel", str(run["id"])).code == 1, "a finished run cannot be canceled again"
    assert service.get("/api/v1/healthz")[0] == 200


def test_kill_9_during_a_run_leaves_it_interrupted_after_restart(controller_env, start_a_check):
    cli, service = controller_env
    queued = start_a_check()
    service.stop(signal.SIGKILL)
    service.start()
    run = wait_for(lambda: (r := next(r for r in runs(cli) if r["id"] == queued["id"]))["status"] != "running" and r,
                   30, "the run to be closed")
    assert run["status"] == "interrupted"
    assert "stopped while this run was running" in run["error"]
    shown = cli("show", str(run["id"]), "--json").json()
    assert shown["stdout"], "output recorded before the crash is kept"


def test_sigterm_cancels_the_running_run_and_stops(controller_env, start_a_check):
    cli, service = controller_env
    queued = start_a_check()
    assert service.stop(signal.SIGTERM) == 0
    run = next(r for r in runs(cli) if r["id"] == queued["id"])
    assert run["status"] == "canceled" and "SIGTERM" in run["error"]
    leftovers = ansible_processes(cli.data_dir)
    assert leftovers == [], f"Ansible processes outlived the run: {leftovers}"
    wait_for(lambda: ssh_masters(cli.data_dir) == {}, 10, "the stopped controller's SSH connections to close")
    service.start()
