"""Keyset pages (fleet.store.pages) over a real SQLite store: order, size, the cursor, `more`, newer pages."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fleet.store.models import Run, RunHost
from fleet.store.pages import Page, keyset_page, newer_page
from tests.unit.store_fixtures import add_runs, temporary_store


@pytest.fixture
def store(tmp_path):
    yield from temporary_store(tmp_path)


def ids(page: Page) -> list[int]:
    return [run.id for run in page]


def test_pages_walk_the_whole_history_newest_first_without_gaps_or_repeats(store):
    made = add_runs(store, 7)
    seen, cursor, pages = [], None, 0
    while True:
        page = keyset_page(select(Run), Run.id, 3, cursor=cursor)
        seen += ids(page)
        pages += 1
        cursor = page.cursor()
        if cursor is None:
            break
    assert seen == sorted(made, reverse=True)
    assert pages == 3  # 3 + 3 + 1


def test_more_is_true_only_when_another_row_exists_past_the_page(store):
    add_runs(store, 4)
    full = keyset_page(select(Run), Run.id, 4)
    assert len(full) == 4 and full.more is False and full.cursor() is None  # exactly one page: no empty second
    short = keyset_page(select(Run), Run.id, 3)
    assert short.more is True and short.cursor() == ids(short)[-1]


def test_an_empty_history_is_one_empty_last_page(store):
    page = keyset_page(select(Run), Run.id, 10)
    assert (page.items, page.more, page.cursor()) == ([], False, None)


def test_ascending_pages_start_after_the_cursor(store):
    made = add_runs(store, 5)
    page = keyset_page(select(Run), Run.id, 2, cursor=made[1], descending=False)
    assert ids(page) == [made[2], made[3]] and page.more


def test_the_page_filters_of_the_query_hold_with_the_cursor(store):
    made = add_runs(store, 3, kind="check") + add_runs(store, 3, kind="converge")
    page = keyset_page(select(Run).where(Run.kind == "check"), Run.id, 2, cursor=made[2])
    assert ids(page) == [made[1], made[0]] and page.more is False


def test_a_newer_page_is_the_rows_just_above_the_cursor_shown_newest_first(store):
    made = add_runs(store, 6)
    page = newer_page(select(Run), Run.id, 2, after=made[1])
    assert ids(page) == [made[3], made[2]]  # the two right above made[1], newest first like every page
    assert page.more is True  # newer ones exist still
    top = newer_page(select(Run), Run.id, 5, after=made[1])
    assert ids(top) == list(reversed(made[2:])) and top.more is False


def test_map_converts_each_row_and_keeps_more(store):
    add_runs(store, 3)
    page = keyset_page(select(Run), Run.id, 2).map(lambda run: f"run {run.id}")
    assert page.items == ["run 3", "run 2"] and page.more
    assert keyset_page(select(Run), Run.id, 5).map(str).more is False


def test_rows_keeps_every_entity_of_a_joined_query(store):
    run_id = add_runs(store, 1)[0]
    store.add_all([RunHost(run_id=run_id, host=name, status="in_sync") for name in ("a", "b", "c")])
    store.commit()
    query = select(RunHost, Run).join(Run, Run.id == RunHost.run_id)
    page = keyset_page(query, RunHost.id, 2, rows=True)
    assert [(row.RunHost.host, row.Run.id) for row in page] == [("c", run_id), ("b", run_id)]
    assert page.more
