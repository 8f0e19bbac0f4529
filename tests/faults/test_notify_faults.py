"""Notifications under faults, on a real `fleet serve`: a receiver that accepts and never answers.

The notifier sends from a thread of its own, so the hanging target holds
only that thread until apprise's read timeout: healthz keeps answering, the
heartbeat stays fresh, a requested check runs to its end meanwhile, and the
target's timeout is kept as its last error (`fleet notifications`) and logged.
"""

from __future__ import annotations

import socket

from tests.conftest import FleetCli, ServeProcess, free_port, git, make_source, wait_for
from tests.faults.conftest import HealthWatch

FINAL = {"successful", "failed", "canceled", "interrupted", "timeout"}


def test_a_receiver_that_never_answers_holds_no_run_and_is_reported(tmp_path):
    silent = socket.socket()  # listens (the kernel completes connections), never accepts nor answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    source = make_source(tmp_path / "source", "all:\n  hosts:\n    ghost:\n      ansible_host: 127.0.0.1\n"
                                              f"      ansible_port: {free_port()}\n")
    (source / "fleet.yml").write_text(f'notify:\n  - url: "json://127.0.0.1:{port}/hook"\n')
    git(source, "add", "fleet.yml")
    git(source, "commit", "-qm", "notify a silent receiver")
    cli = FleetCli(tmp_path / "data", source, tmp_path)
    serve = ServeProcess(cli, poll_seconds=2)
    serve.start()
    try:
        with HealthWatch(serve, "notify: a json:// receiver that never answers") as watch:
            wait_for(lambda: "notification" in serve.log.read_text() or _first_check_done(cli), 120,
                     "the commit check whose notification hangs")
            requested = cli("request", "check", "--json")
            assert requested.code == 0, requested.stderr
            run_id = requested.json()["run"]["id"]
            run = wait_for(lambda: (r := cli("show", str(run_id), "--json").json()["run"])["status"] in FINAL
                           and r, 60, "a requested check to run while the notification hangs")
            assert run["status"] in ("successful", "failed"), run
            target = wait_for(lambda: [t for t in cli("notifications", "--json").json()["targets"]
                                       if t["last_error"]], 60, "the hanging send to time out")[0]
        assert watch.longest_silence < 5, watch.longest_silence
        assert watch.longest_heartbeat_age is not None and watch.longest_heartbeat_age < 10
    finally:
        serve.stop()
        silent.close()
    assert target["target"] == f"json://127.0.0.1:{port}/hook" and target["sent"] == 0
    assert "could not deliver to json://127.0.0.1" in target["last_error"], target
    assert "not sent: could not deliver" in serve.log.read_text()


def _first_check_done(cli: FleetCli) -> bool:
    runs = cli("runs", "--json").json()["runs"]
    return any(r["status"] in FINAL for r in runs)
