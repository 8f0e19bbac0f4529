"""The git source under faults, on a real `fleet serve`: a remote that accepts and never answers, an unsafe URL.

The controller must go on answering healthz, running queued checks of the
last good revision and writing its heartbeat while a fetch hangs; the
source turns stale with the reason once FLEET_GIT_TIMEOUT kills git (and
every helper it started); SIGTERM stops fleet at once, killing the hanging
git with it.
"""

from __future__ import annotations

import signal
import time

from tests.conftest import FleetCli, ServeProcess, git, wait_for
from tests.faults.conftest import HealthWatch
from tests.integration.test_source import StalledRemote, processes_mentioning

FINAL = {"successful", "failed", "canceled", "interrupted", "timeout"}


def source_state(cli: FleetCli) -> dict:
    result = cli("revisions", "--json")
    assert result.code == 0, result.stderr
    return result.json()["source"]


def run_of(cli: FleetCli, run_id: int) -> dict:
    result = cli("show", str(run_id), "--json")
    assert result.code == 0, result.stderr
    return result.json()["run"]


def test_a_stalled_remote_leaves_the_controller_serving_and_the_source_stale(tmp_path, tmp_source):
    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    good = git(tmp_source, "rev-parse", "HEAD").strip()
    first = ServeProcess(cli, poll_seconds=2)
    first.start()
    try:
        wait_for(lambda: source_state(cli)["desired"] == good, 120, "the good local source to become desired")
    finally:
        first.stop()

    with StalledRemote() as remote:
        stalled = remote.url("http")
        serve = ServeProcess(cli, poll_seconds=2, env={"FLEET_REPO": stalled, "FLEET_GIT_TIMEOUT": "20"})
        serve.start()
        try:
            with HealthWatch(serve, "source: stalled git remote (fetch hangs 20s, then SIGTERM)") as watch:
                wait_for(lambda: remote.open_connections >= 1, 60, "a fetch to hang on the stalled remote")
                requested = cli("request", "check", "--json")
                assert requested.code == 0, requested.stderr
                run_id = requested.json()["run"]["id"]
                run = wait_for(lambda: (r := run_of(cli, run_id))["status"] in FINAL and r, 120,
                               "the requested check to run while the fetch hangs")
                assert remote.open_connections >= 1, "the check ran while the fetch was still hanging"
                assert run["revision"] == good, "it ran from the last good revision"

                state = wait_for(lambda: (s := source_state(cli))["stale"] and s, 120, "the source to go stale")
                assert f"git fetch of {stalled} timed out after 20s" in state["error"]
                assert state["desired"] == good, "the last good revision stays desired"

                wait_for(lambda: remote.open_connections >= 1, 120, "the retry to hang again")
                started = time.monotonic()
                serve.proc.send_signal(signal.SIGTERM)
                code = serve.proc.wait(timeout=10)
                stopped_in = time.monotonic() - started
            assert code == 0
            assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"
            if watch.longest_heartbeat_age is not None:
                assert watch.longest_heartbeat_age < 10, "the heartbeat went on while fetches hung"
            wait_for(lambda: remote.open_connections == 0, 10, "the killed git's connections to close")
            assert "timed out after 20s" in source_state(cli)["error"], "a fetch cut short by SIGTERM records nothing"
            assert processes_mentioning(f"127.0.0.1:{remote.port}") == [], "no git or helper outlived fleet"
            print(f"SIGTERM during a hanging fetch: fleet serve exited in {stopped_in:.2f}s")
        finally:
            serve.stop()
        log = serve.log.read_text()
        assert log.count("timed out after 20s") == 1, "a failing fetch is logged once, not every retry"
        assert "Traceback" not in log


def test_an_unsafe_url_under_serve_is_logged_once_and_shown_as_the_stale_reason(tmp_path):
    canary = tmp_path / "pwned"
    cli = FleetCli(tmp_path / "data", f"ext::sh -c touch% {canary}", tmp_path)
    serve = ServeProcess(cli, poll_seconds=1)
    serve.start()
    try:
        with HealthWatch(serve, "source: unsafe ext:: URL under serve") as watch:
            state = wait_for(lambda: (s := source_state(cli))["stale"] and s, 60, "the source to go stale")
            assert "the source URL uses the unsafe transport ext::, which can run commands" in state["error"]
            # Two more fetch attempts (1s, then 2s later: the backoff grows), each failing the same way.
            for attempt in ("second", "third"):
                seen = source_state(cli)["last_fetch_at"]
                wait_for(lambda: source_state(cli)["last_fetch_at"] != seen, 30, f"a {attempt} fetch attempt")
        assert watch.longest_silence < 5
    finally:
        serve.stop()
    log = serve.log.read_text()
    assert log.count("unsafe transport ext::") == 1, log
    assert "Traceback" not in log
    assert not canary.exists()
