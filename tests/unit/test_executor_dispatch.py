"""executor.dispatch: the controller's pure decisions (how many shards, which hosts each, what a shard's end
proves) and the verdicts' trip through the store."""

from __future__ import annotations

import json

import pytest

from fleet.drift import HostVerdict
from fleet.executor.dispatch import shard_count, shard_verdicts, split_hosts, verdicts_from_json, verdicts_to_json
from fleet.store.shards import ShardView
from fleet.vocabulary import HostStatus, ShardStatus


@pytest.mark.parametrize("hosts,max_hosts,capacity,expected", [
    pytest.param(20, 50, 2, 2, id="one shard per free worker slot"),
    pytest.param(20, 50, 0, 1, id="no worker online yet: one shard, sent when one comes"),
    pytest.param(200, 50, 2, 4, id="no shard above the host cap"),
    pytest.param(3, 50, 8, 3, id="never more shards than hosts"),
    pytest.param(1, 1, 0, 1, id="one host"),
])
def test_shard_count(hosts, max_hosts, capacity, expected):
    assert shard_count(hosts, max_hosts, capacity) == expected


def test_split_deals_every_host_once_in_near_equal_groups():
    names = [f"h{i:02}" for i in range(11)]
    groups = split_hosts(list(reversed(names)), 3)
    assert sorted(n for g in groups for n in g) == names
    assert sorted(len(g) for g in groups) == [3, 4, 4]


def test_verdicts_survive_the_store_as_json():
    verdict = HostVerdict(name="web1", status=HostStatus.DRIFTED, message="m", ok=3, changed=1, verified=4,
                          facts={"os": "Debian 12"}, flapping={"b", "a"})
    again = verdicts_from_json(verdicts_to_json([verdict]))
    assert again == [verdict]
    assert json.loads(verdicts_to_json([verdict]))[0]["flapping"] == ["a", "b"]


def shard(status: str, verdicts: list[HostVerdict] = (), reason: str = "") -> ShardView:
    return ShardView(id=1, run_id=1, index=0, hosts=json.dumps(["a", "b"]), status=status, attempt=1, worker="w1",
                     reason=reason, outcome="successful", strategy="", verdicts=verdicts_to_json(list(verdicts)),
                     history="", token="", lease_expires_at=None, sent_at=None, started_at=None, finished_at=None)


def test_a_shard_its_worker_stopped_keeps_the_verdicts_it_settled():
    found = shard_verdicts(shard(ShardStatus.CANCELED, [HostVerdict(name="a", status=HostStatus.DRIFTED),
                                                        HostVerdict(name="b", status=HostStatus.INCOMPLETE)]))
    assert [(v.name, v.status) for v in found] == [("a", HostStatus.DRIFTED), ("b", HostStatus.INCOMPLETE)]


def test_a_done_shard_gives_its_workers_verdicts_and_a_host_it_lacks_is_not_proven():
    found = shard_verdicts(shard(ShardStatus.DONE, [HostVerdict(name="a", status=HostStatus.IN_SYNC)]))
    assert [(v.name, v.status) for v in found] == [("a", HostStatus.IN_SYNC), ("b", HostStatus.INCOMPLETE)]


@pytest.mark.parametrize("status,reason,expected,message", [
    pytest.param(ShardStatus.INTERRUPTED, "worker w1 lost mid-converge", HostStatus.INCOMPLETE,
                 "interrupted: worker w1 lost mid-converge", id="interrupted converge: incomplete, said so"),
    pytest.param(ShardStatus.FAILED, "revision does not validate", HostStatus.FAILED, "revision does not validate",
                 id="failed on the worker: failed with the reason"),
    pytest.param(ShardStatus.CANCELED, "", HostStatus.INCOMPLETE, "the run stopped before", id="never started"),
])
def test_a_shard_that_did_not_finish_proves_nothing_in_sync(status, reason, expected, message):
    found = shard_verdicts(shard(status, [], reason))
    assert {v.status for v in found} == {expected}
    assert all(v.message.startswith(message) for v in found)


@pytest.mark.parametrize("status", [ShardStatus.INTERRUPTED, ShardStatus.FAILED])
def test_verdicts_of_a_shard_that_did_not_finish_are_never_used(status):
    found = shard_verdicts(shard(status, [HostVerdict(name="a", status=HostStatus.IN_SYNC)], "lost"))
    assert HostStatus.IN_SYNC not in {v.status for v in found}
