"""A dynamic inventory (a real executable script in a real git source) is read again by every check of one
`fleet serve`: a host its script starts answering with shows in status and is checked, with no new commit."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import FleetCli, ServeProcess, git, make_source, wait_for

SUBNET = 35  # this file's lab subnet (issue 12's dynamic inventories and collections)

# Ansible's script plugin runs it with --list; the hosts come from a file outside the repository.
SCRIPT = """#!/bin/sh
if [ "$1" = "--list" ]; then cat "$FLEET_TEST_HOSTS_FILE"; else echo '{}'; fi
"""


def script_listing(lab_inventory: dict, names: list[str]) -> dict:
    """The lab's YAML inventory as a script prints it (--list JSON), keeping only `names`."""
    shared = lab_inventory["all"]["vars"]
    listing: dict = {"_meta": {"hostvars": {}}}
    for group, body in lab_inventory["all"]["children"].items():
        kept = [name for name in body["hosts"] if name in names]
        listing[group] = {"hosts": kept}
        for name in kept:
            listing["_meta"]["hostvars"][name] = {**shared, **body["hosts"][name]}
    return listing


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two lab hosts and a source whose inventory is a script reading a hosts file outside the repo."""
    root = tmp_path_factory.mktemp("dynamic")
    cli = FleetCli(root / "data", root / "source", root)
    up = cli("lab", "up", "--hosts", "2", "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        repo = make_source(root / "source", "all:\n  hosts: {}\n")
        script = repo / "inventory" / "cloud.sh"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        git(repo, "add", "inventory/cloud.sh")
        git(repo, "commit", "-qm", "a dynamic inventory")
        yield cli, yaml.safe_load((root / "data" / "lab" / "hosts.yml").read_text())
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def run_check(serve: ServeProcess, bearer: dict) -> dict:
    status, body = serve.request("POST", "/api/v1/runs", json.dumps({"kind": "check"}).encode(),
                                 {**bearer, "Content-Type": "application/json"})
    assert status == 202, body
    run_id = body["run"]["id"]

    def finished():
        code, report = serve.request("GET", f"/api/v1/runs/{run_id}", headers=bearer)
        return report if code == 200 and report["run"]["finished_at"] else None
    return wait_for(finished, 180, f"check run {run_id} to finish")


def hosts_of(serve: ServeProcess, bearer: dict) -> list[dict]:
    code, body = serve.request("GET", "/api/v1/hosts", headers=bearer)
    assert code == 200, body
    return body["hosts"]


def test_a_host_the_script_starts_listing_is_checked_by_the_next_check_without_a_commit(lab, tmp_path):
    cli, lab_inventory = lab
    names = sorted(n for body in lab_inventory["all"]["children"].values() for n in body["hosts"])
    hosts_file = tmp_path / "hosts.json"
    hosts_file.write_text(json.dumps(script_listing(lab_inventory, names[:1])))
    token = cli("token", "create", "ci", "--role", "operator").stdout.strip().splitlines()[-1]
    bearer = {"Authorization": f"Bearer {token}"}
    # Polls rarely: only the checks, not a fetch of a new commit, may bring the new host in.
    serve = ServeProcess(cli, poll_seconds=3600, env={"FLEET_TEST_HOSTS_FILE": str(hosts_file)})
    serve.start()
    try:
        first = run_check(serve, bearer)
        assert sorted(h["name"] for h in hosts_of(serve, bearer)) == names[:1], first
        hosts_file.write_text(json.dumps(script_listing(lab_inventory, names)))
        second = run_check(serve, bearer)
        listed = hosts_of(serve, bearer)
    finally:
        serve.stop()
    assert second["run"]["revision"] == first["run"]["revision"]  # the same commit: no fetch brought the host
    statuses = {h["name"]: h["status"] for h in listed}
    assert sorted(statuses) == names
    # Both checked for real over SSH: a verdict, not "unknown" or "unreachable".
    assert set(statuses.values()) <= {"in_sync", "drifted", "unverified"}, statuses
    assert sorted(h["name"] for h in second["hosts"]) == names, second
