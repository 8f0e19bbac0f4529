"""Notifications from a real `fleet serve`: a host nothing answers on is posted once to a loopback
`json://` receiver (names, counts, a link); a second check finding the same sends nothing; the source
going stale is posted once, not on every retry."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import FleetCli, JsonReceiver, ServeProcess, free_port, git, make_source, wait_for


@pytest.fixture
def receiver():
    server = JsonReceiver()
    yield server
    server.close()


def run_check(serve: ServeProcess, bearer: dict) -> int:
    code, body = serve.request("POST", "/api/v1/runs", json.dumps({"kind": "check"}).encode(),
                               {**bearer, "Content-Type": "application/json"})
    assert code == 202, body
    run_id = body["run"]["id"]

    def finished():
        code, report = serve.request("GET", f"/api/v1/runs/{run_id}", headers=bearer)
        return code == 200 and report["run"]["finished_at"]
    wait_for(finished, 120, f"check run {run_id} to finish")
    return run_id


def last_fetch(serve: ServeProcess, bearer: dict) -> str:
    code, body = serve.request("GET", "/api/v1/revisions", headers=bearer)
    assert code == 200 and body["source"]["stale"], body
    return body["source"]["last_fetch_at"]


def test_an_unreachable_host_is_posted_once_and_a_stale_source_once(tmp_path, receiver):
    closed_port = free_port()  # nothing listens there: the host is unreachable, on loopback only
    source = make_source(tmp_path / "source", "all:\n  hosts:\n    ghost:\n      ansible_host: 127.0.0.1\n"
                                              f"      ansible_port: {closed_port}\n")
    (source / "fleet.yml").write_text(f'notify:\n  - url: "json://127.0.0.1:{receiver.port}/hook"\n'
                                      "    on: [unreachable, stale]\n")
    git(source, "add", "fleet.yml")
    git(source, "commit", "-qm", "notify")
    cli = FleetCli(tmp_path / "data", source, tmp_path)
    token = cli("token", "create", "ci", "--role", "operator").stdout.strip().splitlines()[-1]
    bearer = {"Authorization": f"Bearer {token}"}
    serve = ServeProcess(cli, poll_seconds=1, env={"FLEET_PUBLIC_URL": "https://fleet.example.org"})
    serve.start()
    try:
        wait_for(lambda: receiver.posts, 120, "the commit check's notification")
        [post] = receiver.posts
        assert post["path"] == "/hook"
        assert post["title"].startswith("fleet: 1 host unreachable in check run "), post
        run_id = int(post["title"].rsplit(" ", 1)[1])
        assert post["message"].splitlines() == ["ghost", f"https://fleet.example.org/runs/{run_id}"]
        second = run_check(serve, bearer)
        assert second != run_id
        assert cli("show", str(second), "--json").json()["hosts"][0]["status"] == "unreachable"
        shutil.move(source, tmp_path / "away")  # the next fetches fail: stale, retried with a backoff
        wait_for(lambda: len(receiver.posts) == 2, 60, "the stale source's notification")
        # Retries come 1 s, 2 s, 4 s apart (each notes its time): two more fail, and send nothing more.
        fetched = {last_fetch(serve, bearer)}
        wait_for(lambda: fetched.add(last_fetch(serve, bearer)) or len(fetched) >= 3, 60, "two more failed fetches")
        third = run_check(serve, bearer)  # also proves the loop went on; a check of the last good revision
        assert third > second
    finally:
        serve.stop()
    assert receiver.titles()[1] == "fleet: the source is stale", receiver.titles()
    assert "cannot fetch the source" in receiver.posts[1]["message"]
    assert receiver.posts[1]["message"].endswith("https://fleet.example.org/revisions")
    assert len(receiver.posts) == 2, f"the same unreachable host and the same stale source are no news: " \
                                     f"{receiver.titles()}"
    [target] = cli("notifications", "--json").json()["targets"]
    assert target["target"] == f"json://127.0.0.1:{receiver.port}/hook"
    assert (target["sent"], target["held"], target["last_error"]) == (2, 0, None)
    listed = cli("notifications")
    assert listed.code == 0 and f"json://127.0.0.1:{receiver.port}/hook" in listed.stdout
