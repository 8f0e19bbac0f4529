"""The store's plain views (fleet.store.views): read from real rows, datetimes aware, frozen, their properties."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from fleet.store.models import Host, Revision, Run, RunHost
from fleet.store.views import (
    ApprovalView, HostView, InventoryView, RevisionView, RunHostView, RunView, SourceView, view_of,
)
from fleet.vocabulary import Coverage
from tests.unit.store_fixtures import temporary_store


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def test_a_view_of_a_stored_run_carries_every_column_and_aware_times(store):
    started = datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc)
    run = Run(kind="check", trigger="schedule", status="running", revision_sha="b" * 40, limit="web*",
              started_at=started, pid=4242, strategy="linear")
    store.add(run)
    store.commit()
    store.expire_all()  # read back what the database holds: SQLite gives its datetimes back naive
    view = view_of(RunView, store.get(Run, run.id))
    assert (view.kind, view.trigger, view.limit, view.pid, view.strategy) == ("check", "schedule", "web*", 4242,
                                                                            "linear")
    assert view.started_at == started and view.started_at.tzinfo is not None
    assert view.created_at.tzinfo is not None and view.finished_at is None
    assert view.cancel_requested is False and view.hosts_total == 0  # the model's defaults


def test_naive_datetimes_are_taken_as_utc_and_aware_ones_are_kept():
    naive = datetime(2026, 1, 2, 3, 4, 5)
    elsewhere = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    row = SimpleNamespace(repo="r", desired_sha=None, head_sha="h", last_fetch_at=naive, last_error="", stale=False)
    assert view_of(SourceView, row).last_fetch_at == naive.replace(tzinfo=timezone.utc)
    row.last_fetch_at = elsewhere
    assert view_of(SourceView, row).last_fetch_at.utcoffset() == timedelta(hours=2)  # not rewritten as UTC


def test_a_view_reads_only_its_fields_and_fails_on_a_row_that_lacks_one():
    fields = {f.name: None for f in dataclasses.fields(SourceView)}
    row = SimpleNamespace(**fields, something_else="ignored")
    assert not hasattr(view_of(SourceView, row), "something_else")
    del row.stale
    with pytest.raises(AttributeError):
        view_of(SourceView, row)


def test_views_are_frozen(store):
    store.add(Host(name="web1", groups="web prod"))
    store.commit()
    view = view_of(HostView, store.get(Host, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.status = "in_sync"


def test_a_host_view_splits_its_groups_and_gives_its_coverage(store):
    store.add(Host(name="web1", groups="web  prod", verified_tasks=7, total_tasks=9))
    store.add(Host(name="new"))
    store.commit()
    web1, new = view_of(HostView, store.get(Host, 1)), view_of(HostView, store.get(Host, 2))
    assert web1.group_list == ["web", "prod"]
    assert web1.coverage == Coverage(7, 9) and str(web1.coverage) == "7/9"
    assert new.group_list == [] and new.coverage == Coverage(0, 0) and new.status == "unknown"


def test_a_run_host_view_counts_its_total_as_verified_plus_unverified(store):
    store.add(Run(kind="check", trigger="manual", status="successful"))
    store.flush()
    store.add(RunHost(run_id=1, host="web1", status="unverified", verified=5, unverified=2))
    store.commit()
    view = view_of(RunHostView, store.get(RunHost, 1))
    assert view.coverage == Coverage(5, 7) and view.coverage.unchecked == 2


def test_an_inventory_view_decodes_its_host_names():
    judged = InventoryView(sha="c" * 40, hosts='["web1", "db1"]', accepted=True, judged_at=None)
    assert judged.names == ("web1", "db1")
    assert InventoryView(sha="d" * 40, hosts="", accepted=False, judged_at=None).names == ()


def test_a_revision_and_an_approval_view_read_from_their_rows(store):
    store.add(Revision(sha="e" * 40, status="rejected", error="playbook syntax check failed", message="broken"))
    store.commit()
    revision = view_of(RevisionView, store.get(Revision, 1))
    assert (revision.status, revision.error, revision.signature) == ("rejected", "playbook syntax check failed",
                                                                     "unsigned")
    assert revision.fetched_at.tzinfo is not None
    approval = view_of(ApprovalView, SimpleNamespace(
        id=1, host="web1", check_run_id=3, revision_sha="e" * 40, drift_signature="s", summary="1 task",
        status="pending", created_at=datetime(2026, 1, 1), decided_by="", decided_at=None, converge_run_id=None,
        note="", kind="drift", reason=""))
    assert approval.created_at.tzinfo == timezone.utc and approval.decided_at is None
