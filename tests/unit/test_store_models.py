"""The store's tables (fleet.store.models) in a real SQLite file: defaults, unique keys, cascades."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from fleet.store.models import (
    ApiToken, HostKey, Host, HostLock, NotifiedHost, Run, RunHost, RunOutput, Shard, TaskResultRow, User,
    WebSession,
)
from fleet.vocabulary import utcnow
from tests.unit.store_fixtures import add_runs, temporary_store


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def count(store, model) -> int:
    return store.scalar(select(func.count()).select_from(model))


def refused(store, *rows) -> bool:
    store.add_all(rows)
    try:
        store.commit()
    except IntegrityError:
        store.rollback()
        return True
    return False


def test_a_new_host_is_unknown_on_port_22_in_the_inventory(store):
    store.add(Host(name="web1"))
    store.commit()
    host = store.scalar(select(Host))
    assert (host.status, host.port, host.in_inventory, host.key_blocked) == ("unknown", 22, True, False)
    assert (host.drifted_tasks, host.verified_tasks, host.total_tasks, host.flapping) == (0, 0, 0, "")
    assert host.group_list == []


def test_a_host_name_is_unique_and_may_be_of_any_length(store):
    long_name = "h" * 5000
    store.add(Host(name=long_name))
    store.commit()
    assert refused(store, Host(name=long_name))
    assert count(store, Host) == 1


def test_a_run_holds_one_verdict_per_host(store):
    run_id = add_runs(store, 1)[0]
    store.add(RunHost(run_id=run_id, host="web1", status="in_sync"))
    store.commit()
    assert refused(store, RunHost(run_id=run_id, host="web1", status="drifted"))


def test_a_run_s_verdicts_tasks_output_and_shards_go_with_it(store):
    keep, gone = add_runs(store, 2)
    for run_id in (keep, gone):
        store.add_all([RunHost(run_id=run_id, host="web1", status="in_sync"),
                       TaskResultRow(run_id=run_id, seq=1, host="web1", task="t", action="copy", status="ok"),
                       RunOutput(run_id=run_id, seq=1, text="ok: [web1]"),
                       Shard(run_id=run_id, index=0, status="done")])
    store.commit()
    store.execute(delete(Run).where(Run.id == gone))
    store.commit()
    for model in (RunHost, TaskResultRow, RunOutput, Shard):
        assert store.scalars(select(model.run_id)).all() == [keep], model.__name__


def test_a_row_of_a_run_that_does_not_exist_is_refused(store):
    assert refused(store, TaskResultRow(run_id=999, seq=1, host="web1", task="t", action="copy", status="ok"))


def test_a_host_has_one_lock_holder_at_a_time(store):
    first, second = add_runs(store, 2, status="running")
    store.add(HostLock(host="web1", run_id=first))
    store.commit()
    assert refused(store, HostLock(host="web1", run_id=second))
    lock = store.get(HostLock, "web1")
    assert lock.run_id == first and lock.kept_reason == "" and lock.acquired_at is not None


def test_a_deleted_user_takes_their_tokens_and_sessions(store):
    ann, bob = User(name="ann", password_hash="x", role="admin"), User(name="bob", password_hash="x", role="viewer")
    store.add_all([ann, bob])
    store.flush()
    now = utcnow()
    store.add_all([ApiToken(name="ann-ci", token_hash="1" * 64, role="admin", owner_id=ann.id),
                   ApiToken(name="cli", token_hash="2" * 64, role="viewer"),
                   WebSession(digest="3" * 64, user_id=ann.id, expires_at=now),
                   WebSession(digest="4" * 64, user_id=bob.id, expires_at=now)])
    store.commit()
    store.execute(delete(User).where(User.name == "ann"))
    store.commit()
    assert store.scalars(select(ApiToken.name)).all() == ["cli"]
    assert store.scalars(select(WebSession.user_id)).all() == [bob.id]


def test_a_token_reads_its_owner_with_it(store):
    ann = User(name="ann", password_hash="x", role="operator")
    store.add(ann)
    store.flush()
    store.add(ApiToken(name="t", token_hash="5" * 64, role="viewer", owner_id=ann.id))
    store.commit()
    store.expire_all()
    token = store.scalar(select(ApiToken))
    assert token.owner.name == "ann" and token.revoked is False and token.expires_at is None


def test_one_pin_per_name_and_key_type_and_one_shard_per_index(store):
    store.add(HostKey(name="[127.0.0.1]:2201", key_type="ssh-ed25519", key_b64="AAAA"))
    store.commit()
    assert not refused(store, HostKey(name="[127.0.0.1]:2201", key_type="ssh-rsa", key_b64="BBBB"))
    assert refused(store, HostKey(name="[127.0.0.1]:2201", key_type="ssh-ed25519", key_b64="CCCC"))
    run_id = add_runs(store, 1)[0]
    store.add(Shard(run_id=run_id, index=0, status="pending"))
    store.commit()
    assert refused(store, Shard(run_id=run_id, index=0, status="pending"))
    shard = store.scalar(select(Shard))
    assert (shard.attempt, shard.hosts, shard.verdicts) == (1, "[]", "")


def test_what_was_notified_is_one_row_per_host(store):
    store.add(NotifiedHost(host="web1", condition="drift"))
    store.commit()
    assert store.scalar(select(NotifiedHost)).tasks == "[]"
    assert refused(store, NotifiedHost(host="web1", condition="failed"))
