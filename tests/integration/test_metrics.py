"""The example alert rules (docs/alerts.yml) against a real scrape of a real `fleet serve`.

Two real lab hosts on subnet 34: web1, and the lab's bastion (127.0.34.254) put in the
inventory as a host of its own, so neither needs the db subnet (35 belongs to another
suite). Both are checked; web1 is then stopped, and a second check finds it unreachable
while the bastion is judged again.
"""

from __future__ import annotations

import urllib.request
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select

from fleet import lab
from fleet.store.db import db, Store
from fleet.store.models import Host
from tests.alert_rules import load_alert_rules
from tests.conftest import FleetCli, ServeProcess, make_source

pytestmark = pytest.mark.lab

SUBNET = 34  # this file's lab subnet: web1 on 127.0.34.1 behind the lab's bastion on 127.0.34.254
BASTION = "bastion"


@pytest.fixture
def lab_cli(tmp_path):
    data_dir = tmp_path / "data"
    cli = FleetCli(data_dir, tmp_path / "source", tmp_path)
    try:
        up = cli("lab", "up", "--hosts", "1", "--subnet", str(SUBNET), "--jump")
        assert up.code == 0, up.stderr
        inventory = yaml.safe_load((data_dir / "lab" / "hosts.yml").read_text())
        inventory["all"]["children"]["edge"] = {"hosts": {BASTION: {"ansible_host": f"127.0.{SUBNET}.254"}}}
        make_source(tmp_path / "source", yaml.safe_dump(inventory))
        yield cli
    finally:
        cli("lab", "down")


def statuses(result) -> dict[str, str]:
    return {host["name"]: host["status"] for host in result.json()["hosts"]}


def move_successful_checks_back(cli: FleetCli, hours: float) -> None:
    """Make the checks so far two hours old, as if the schedule had run them then (no waiting in a test)."""
    store = Store.open(f"sqlite:///{cli.data_dir / 'fleet.db'}")
    with store.bound():
        for host in db.session.scalars(select(Host)):  # in Python: SQLite has no datetime arithmetic
            host.last_ok_check_at -= timedelta(hours=hours)
        db.session.commit()


def scrape(serve: ServeProcess, token: str) -> str:
    request = urllib.request.Request(serve.url("/api/v1/metrics"), headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


def test_the_stale_host_alert_fires_for_the_stopped_host_and_not_the_fresh_one(lab_cli):
    cli = lab_cli
    first = cli("check", "--json")
    assert first.code in (0, 2, 4), first.stderr
    assert set(statuses(first).values()) <= {"in_sync", "drifted", "unverified"}, statuses(first)
    move_successful_checks_back(cli, hours=2)

    lab.stop_host(cli.data_dir / "lab", "web1")
    second = cli("check", "--json")
    assert second.code == 3, second.stderr
    assert statuses(second)["web1"] == "unreachable"
    assert statuses(second)[BASTION] in ("in_sync", "drifted", "unverified")

    token = cli("token", "create", "prometheus", "--role", "viewer").stdout.strip().splitlines()[-1]
    serve = ServeProcess(cli)
    serve.start()
    try:
        text = scrape(serve, token)
    finally:
        serve.stop()

    rules = load_alert_rules()
    assert [labels["host"] for labels in rules["FleetHostNotChecked"].firing(text)] == ["web1"]
    assert rules["FleetDriftNotFixed"].firing(text) == []
    assert rules["FleetSourceStale"].firing(text) == []
    assert 'fleet_host_seconds_since_last_check{host="web1"}' in text  # curl /metrics shows each host's age
