"""Paged output and tasks: a run with 20,000 output chunks or thousands of task results, on the run page and the API.

The runs are recorded through `records.RunRecorder` into a real SQLite store, as
a real run writes them; every page is read through Flask's test client.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from fleet.drift import HostVerdict, TaskResult
from fleet.store import accounts, queries, records
from fleet.store.db import db
from tests.web.conftest import make_app
from tests.web.test_ui import login

CHUNKS = 20_000
LINE = "ok: [web{host}] => (item=package-{seq:05d}) some chatter that Ansible prints for every item"
MAX_PAGE_QUERIES = 12
MAX_PAGE_BYTES = 400 * 1024  # the run page, with a 256 KiB output page and its HTML around it


def chunk(seq: int) -> str:
    return LINE.format(host=seq % 7, seq=seq)


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, (("vera", "viewer"),))


@pytest.fixture
def viewer(app):
    return login(app, "vera")


@pytest.fixture
def token(app):
    with app.app_context():
        return accounts.create_token("reader", "viewer", "test")


def record_run(app, chunks: int = CHUNKS, tasks: int = 0, status: str = "successful", same_seq: int = 1) -> int:
    """A run recorded as a real one is: output and task results through a RunRecorder, in batches.

    `same_seq` task results share each event (as a meta task ending a play gives one result per host).
    """
    with app.app_context():
        run = records.create_run("check", "manual", "a" * 40, "", "test", None)
        recorder = records.RunRecorder(run.id)
        for seq in range(1, chunks + 1):
            recorder.add_output(seq, chunk(seq))
        for n in range(tasks):
            recorder.add_task(TaskResult(seq=chunks + 1 + n // same_seq, host=f"web{n % same_seq}",
                                         task=f"task {n}", action="copy", status="ok"))
        recorder.flush()
        if status != "running":
            hosts = sorted({f"web{n % same_seq}" for n in range(tasks)})
            records.finish_run(run.id, status, [HostVerdict(name, "in_sync") for name in hosts])
        return run.id


@contextmanager
def counted_queries(app):
    statements: list[str] = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def output_of(page: str) -> str:
    """The text of the page's output box, unescaped as the browser shows it."""
    found = re.search(r'<pre class="output"[^>]*>(.*?)</pre>', page, re.S)
    text = found.group(1) if found else ""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&#39;", "'").replace(
        "&amp;", "&")


# --- the run page ------------------------------------------------------------------------------

def test_a_run_page_of_20000_output_chunks_is_bounded_in_queries_and_size(app, viewer):
    small, large = record_run(app, chunks=3), record_run(app)
    counts, sizes = {}, {}
    for run_id in (small, large):
        with counted_queries(app) as statements:
            answer = viewer.get(f"/runs/{run_id}")
        assert answer.status_code == 200
        counts[run_id], sizes[run_id] = len(statements), len(answer.data)
    assert counts[small] == counts[large] <= MAX_PAGE_QUERIES, counts
    assert sizes[large] <= MAX_PAGE_BYTES, sizes
    print(f"\nrun page: {counts[large]} queries, {sizes[large] // 1024} KiB for {CHUNKS} chunks")
    page = answer.get_data(as_text=True)
    shown = output_of(page).split("\n")
    assert shown[0] == chunk(1) and len(shown) < CHUNKS  # the first page, not everything
    more = re.search(r'href="/runs/\d+/output\?after=(\d+)" id="output-more"', page)
    assert more and int(more.group(1)) == len(shown)
    assert "the first" in page


def test_more_output_pages_walk_the_whole_output_once_in_order(app, viewer):
    run_id = record_run(app)
    page = viewer.get(f"/runs/{run_id}").get_data(as_text=True)
    lines = output_of(page).split("\n")
    after = re.search(r'id="output-more"', page) and int(re.search(r"output\?after=(\d+)", page).group(1))
    visits = 0
    while after:
        with counted_queries(app) as statements:
            answer = viewer.get(f"/runs/{run_id}/output?after={after}")
        assert answer.status_code == 200 and len(statements) <= MAX_PAGE_QUERIES
        assert len(answer.data) <= MAX_PAGE_BYTES
        text = answer.get_data(as_text=True)
        lines += output_of(text).split("\n")
        found = re.search(r'output\?after=(\d+)" id="output-more"', text)
        after = int(found.group(1)) if found else None
        visits += 1
    assert lines == [chunk(seq) for seq in range(1, CHUNKS + 1)]  # nothing lost, nothing twice
    assert visits >= 5
    assert "End of the output." in text


def test_a_live_run_page_starts_from_the_end_of_its_output(app, viewer):
    run_id = record_run(app, status="running")
    page = viewer.get(f"/runs/{run_id}").get_data(as_text=True)
    shown = output_of(page).split("\n")
    assert shown[-1] == chunk(CHUNKS) and len(shown) < CHUNKS
    assert f'data-after-output="{CHUNKS}"' in page
    assert 'id="output-earlier"' in page and f'href="/runs/{run_id}/output"' in page
    live = viewer.get(f"/runs/{run_id}/live?after_output=0&after_task=0").get_json()
    assert live["more"] is True and sum(len(text) + 1 for text in live["output"]) <= 256 * 1024


def test_a_run_with_thousands_of_tasks_pages_them(app, viewer):
    run_id = record_run(app, chunks=1, tasks=2500)
    shown, path = [], f"/runs/{run_id}"
    while path:
        with counted_queries(app) as statements:
            page = viewer.get(path).get_data(as_text=True)
        assert len(statements) <= MAX_PAGE_QUERIES
        shown.append(re.findall(r'<td class="num muted">(\d+)</td>', page))
        more = re.search(r'href="(/runs/\d+\?tasks_after=\d+)#h-tasks" id="tasks-more"', page)
        path = more and more.group(1)
    assert [len(seqs) for seqs in shown] == [1000, 1000, 500]
    assert [int(seq) for seqs in shown for seq in seqs] == list(range(2, 2502))
    with app.app_context():
        pages, after = [], 0
        while after is not None:
            page = queries.tasks_page(run_id, after, size=1000)
            pages.append(page.items)
            after = page.cursor("seq")
    assert [len(items) for items in pages] == [1000, 1000, 500]
    assert [t.task for items in pages for t in items] == [f"task {n}" for n in range(2500)]


def test_a_page_of_tasks_never_splits_one_event(app):
    run_id = record_run(app, chunks=0, tasks=30, same_seq=4)  # events of 4 results each
    with app.app_context():
        first = queries.tasks_page(run_id, 0, size=10)
        second = queries.tasks_page(run_id, first.cursor("seq"), size=10)
        crowded = queries.tasks_page(run_id, 0, size=3)  # one event holds more than a page
    assert len(first) == 8 and first.more and len({t.seq for t in first}) == 2
    assert [t.task for t in second][:2] == ["task 8", "task 9"]
    assert len(crowded) == 4 and crowded.more


# --- the API -------------------------------------------------------------------------------------

def api(client, path: str, token: str):
    return client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})


def test_the_api_answers_a_run_a_page_at_a_time_and_after_seq_walks_the_rest(app, token):
    run_id = record_run(app, tasks=1500)
    client = app.test_client()
    stdout, tasks, after, answers = [], [], 0, 0
    while True:
        answer = api(client, f"/runs/{run_id}?after_seq={after}", token)
        assert answer.status_code == 200 and len(answer.data) <= 512 * 1024
        data = answer.get_json()
        stdout += data["stdout"].split("\n") if data["stdout"] else []
        tasks += [t["task"] for t in data["tasks"]]
        answers += 1
        if not data["more"]:
            assert data["output_next"] is None and data["links"]["output"] is None
            break
        assert data["output_next"] == data["tasks_next"] == data["last_seq"] > after
        after = data["last_seq"]
    assert stdout == [chunk(seq) for seq in range(1, CHUNKS + 1)]
    assert tasks == [f"task {n}" for n in range(1500)]
    assert answers >= 5


def test_the_output_endpoint_pages_by_seq(app, token):
    run_id = record_run(app, chunks=25)
    client = app.test_client()
    first = api(client, f"/runs/{run_id}/output?limit=10", token).get_json()
    assert [c["seq"] for c in first["output"]] == list(range(1, 11)) and first["next"] == 10
    last = api(client, f"/runs/{run_id}/output?after=20&limit=10", token).get_json()
    assert [c["text"] for c in last["output"]] == [chunk(seq) for seq in range(21, 26)] and last["next"] is None
    assert api(client, f"/runs/{run_id}/output?limit=0", token).status_code == 400
    assert api(client, "/runs/999/output", token).status_code == 404


# --- the whole output, streamed ----------------------------------------------------------------------

def test_the_whole_stdout_streams_in_batches_not_one_query_or_string(app):
    run_id = record_run(app, chunks=1200)
    with app.app_context(), counted_queries(app) as statements:
        pieces = list(queries.iter_run_stdout(run_id, rows=500))
    assert "".join(pieces) == "\n".join(chunk(seq) for seq in range(1, 1201))
    assert len(pieces) == 1200 and len(statements) == 3  # 500 + 500 + 200 rows


def test_a_page_of_tasks_is_bounded_by_the_size_of_their_diffs_too(app, token):
    with app.app_context():
        run = records.create_run("check", "manual", "a" * 40, "", "test", None)
        recorder = records.RunRecorder(run.id)
        for seq in range(1, 101):  # 100 drifted tasks, each with a diff just under the cap
            recorder.add_task(TaskResult(seq=seq, host="web1", task=f"big {seq}", action="copy", status="changed",
                                         diff="+" + "y" * 60_000 + "\n"))
        recorder.flush()
        records.finish_run(run.id, "successful", [HostVerdict("web1", "drifted", changed=100)])
        page = queries.tasks_page(run.id)
    assert 10 <= len(page) <= 20 and page.more
    data = api(app.test_client(), f"/runs/{run.id}", token).get_json()
    assert len(json.dumps(data["tasks"])) < 1.2 * 1024 * 1024 and data["more"] is True
    assert data["last_seq"] == data["tasks_next"] == data["tasks"][-1]["seq"] < 100


def test_the_output_page_of_an_unknown_run_is_404_and_a_bad_cursor_400(app, viewer):
    run_id = record_run(app, chunks=3)
    assert viewer.get("/runs/999/output").status_code == 404
    assert viewer.get(f"/runs/{run_id}/output?after=x").status_code == 400
    last = viewer.get(f"/runs/{run_id}/output?after=3").get_data(as_text=True)
    assert "No more output after event 3." in last and 'id="output-more"' not in last
