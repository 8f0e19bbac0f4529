"""Terminal rendering: tables, coloured status words and diffs, durations."""

import re
from datetime import datetime, timedelta

import pytest

from fleet.output import colour_diff, duration, paint, table

ANSI = re.compile(r"\033\[[0-9;]*m")
HEADERS = ["HOST", "STATUS", "NOTE"]
ROWS = [["web1", "in_sync", "ok"], ["database1", "drifted", "2 tasks"]]
PLAIN = (
    "HOST       STATUS   NOTE\n"
    "web1       in_sync  ok\n"
    "database1  drifted  2 tasks"
)


def test_table_aligns_columns():
    assert table(HEADERS, ROWS) == PLAIN


def test_table_without_colour_has_no_escape_codes():
    assert "\033" not in table(HEADERS, ROWS, colour=False, status_column=1)


def test_coloured_table_has_the_same_layout():
    coloured = table(HEADERS, ROWS, colour=True, status_column=1)
    assert ANSI.sub("", coloured) == PLAIN


def test_colour_only_on_the_status_column():
    lines = table(HEADERS, ROWS, colour=True, status_column=1).splitlines()
    assert "\033" not in lines[0]
    assert lines[1] == "web1       \033[32min_sync\033[0m  ok"
    assert lines[2] == "database1  \033[33mdrifted\033[0m  2 tasks"


def test_status_column_is_padded_by_its_plain_width():
    rows = [["web1", "ok", "x"], ["web2", "unreachable", "y"]]
    lines = table(["HOST", "STATUS", "NOTE"], rows, colour=True, status_column=1).splitlines()
    assert [ANSI.sub("", line).index(note) for line, note in zip(lines[1:], "xy")] == [19, 19]


def test_last_column_has_no_trailing_spaces():
    text = table(["A", "B"], [["x", ""], ["yy", "long"]])
    assert all(line == line.rstrip() for line in text.splitlines())


def test_unknown_status_word_is_not_painted():
    assert paint("weird", True) == "weird"
    assert paint("failed", False) == "failed"
    assert paint("failed", True) == "\033[31mfailed\033[0m"


DIFF = "--- /etc/motd\n+++ /etc/motd\n@@ -1 +1 @@\n-old\n+hello\n same\n"


def test_colour_diff_without_colour_is_unchanged():
    assert colour_diff(DIFF, False) == DIFF


def test_colour_diff_paints_each_kind_of_line():
    assert colour_diff(DIFF, True).splitlines() == [
        "\033[1m--- /etc/motd\033[0m",
        "\033[1m+++ /etc/motd\033[0m",
        "\033[36m@@ -1 +1 @@\033[0m",
        "\033[31m-old\033[0m",
        "\033[32m+hello\033[0m",
        " same",
    ]


@pytest.mark.parametrize("text", ["+a\n", "+a"], ids=["with trailing newline", "without trailing newline"])
def test_colour_diff_keeps_the_trailing_newline_as_it_was(text):
    assert colour_diff(text, True).endswith("\n") == text.endswith("\n")


START = datetime(2025, 1, 1, 12, 0, 0)
DURATION_CASES = {
    "no start": (None, START, "-"),
    "no end": (START, None, "-"),
    "seconds": (START, START + timedelta(seconds=5), "5.0s"),
    "just under two minutes": (START, START + timedelta(seconds=119.9), "119.9s"),
    "two minutes": (START, START + timedelta(seconds=120), "2.0m"),
    "an hour and a half": (START, START + timedelta(minutes=90), "90.0m"),
}


@pytest.mark.parametrize(("start", "end", "text"), DURATION_CASES.values(), ids=DURATION_CASES.keys())
def test_duration(start, end, text):
    assert duration(start, end) == text


def test_a_duration_mixes_a_naive_stored_moment_with_an_aware_one():
    from datetime import timezone

    start = datetime(2026, 11, 1, 12, 0)  # SQLite's naive UTC
    assert duration(start, start.replace(tzinfo=timezone.utc) + timedelta(seconds=3)) == "3.0s"


def test_when_reads_a_naive_moment_as_utc():
    from datetime import timezone

    from fleet.output import when

    naive = datetime(2026, 11, 1, 12, 0)
    assert when(naive) == when(naive.replace(tzinfo=timezone.utc))
    assert when(None) == "never"
