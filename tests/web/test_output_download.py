"""GET /runs/<id>/output.txt: a run's whole output as a file, streamed from the store, for viewers.

The run is recorded through `records.RunRecorder` into a real SQLite store, as
a real run writes it, and downloaded through Flask's test client.
"""

from __future__ import annotations

import re

import pytest

from fleet.store import queries
from tests.web.conftest import make_app
from tests.web.test_run_output import chunk, record_run
from tests.web.test_ui import login

CHUNKS = 5_000  # well past one read batch of the store (500) and one written block (64 KiB)


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, (("vera", "viewer"),))


@pytest.fixture
def viewer(app):
    return login(app, "vera")


def test_a_run_of_many_chunks_downloads_whole_in_order_as_a_stream(app, viewer):
    run_id = record_run(app, chunks=CHUNKS)
    answer = viewer.get(f"/runs/{run_id}/output.txt", buffered=False)
    assert answer.status_code == 200
    assert answer.is_streamed
    assert answer.mimetype == "text/plain" and answer.mimetype_params["charset"] == "utf-8"
    assert answer.headers["Content-Disposition"] == f"attachment; filename=run-{run_id}.txt"
    blocks = list(answer.response)  # what the server writes, one block at a time
    answer.close()
    assert len(blocks) > 5, "the output came as one piece, not streamed"
    text = b"".join(part if isinstance(part, bytes) else part.encode() for part in blocks).decode()
    assert text == "\n".join(chunk(seq) for seq in range(1, CHUNKS + 1)) + "\n"
    with app.app_context():
        assert text == queries.run_stdout(run_id) + "\n"  # what `fleet show --stdout` prints


def test_colour_codes_are_taken_out_and_masked_values_stay_masked(app, viewer):
    run_id = record_run(app, chunks=0)
    with app.app_context():
        from fleet.store import records
        recorder = records.RunRecorder(run_id)
        recorder.add_output(1, "\x1b[0;33mchanged: [web1]\x1b[0m")
        recorder.add_output(2, "password: ********")
        recorder.flush()
    text = viewer.get(f"/runs/{run_id}/output.txt").get_data(as_text=True)
    assert text == "changed: [web1]\npassword: ********\n"


def test_a_run_without_output_is_an_empty_file(app, viewer):
    run_id = record_run(app, chunks=0)
    answer = viewer.get(f"/runs/{run_id}/output.txt")
    assert answer.status_code == 200 and answer.get_data(as_text=True) == ""


@pytest.mark.parametrize("run_id", [999999, 2**31, 10**30], ids=["unknown", "past INTEGER", "past 64 bits"])
def test_an_unknown_run_is_404(viewer, run_id):
    answer = viewer.get(f"/runs/{run_id}/output.txt")
    assert answer.status_code == 404
    assert "Content-Disposition" not in answer.headers


def test_anonymous_visitors_are_sent_to_log_in(app):
    run_id = record_run(app, chunks=3)
    answer = app.test_client().get(f"/runs/{run_id}/output.txt")
    assert answer.status_code == 302 and "/login" in answer.headers["Location"]


@pytest.mark.parametrize("status", ["successful", "running"])
def test_the_run_page_links_to_the_download(app, viewer, status):
    run_id = record_run(app, chunks=3, status=status)
    page = viewer.get(f"/runs/{run_id}").get_data(as_text=True)
    links = re.findall(r'href="([^"]*output\.txt)"', page)
    assert links == [f"/runs/{run_id}/output.txt"]
    assert viewer.get(links[0]).get_data(as_text=True) == "\n".join(chunk(s) for s in range(1, 4)) + "\n"


def test_a_nul_character_in_a_run_filter_is_400_not_a_database_error(viewer):
    """PostgreSQL refuses NUL in text; the filter never reaches it."""
    assert viewer.get("/runs", query_string={"host": "web\x001"}).status_code == 400
