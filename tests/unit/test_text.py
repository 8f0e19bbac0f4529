"""fleet.text: every string Ansible hands fleet made storable, faithfully and visibly; nothing else changed."""

from __future__ import annotations

import json
import time

import pytest

from fleet.text import NOT_UTF8_MARK, clean_bytes, clean_event, clean_text, mark_escaped

LATIN1 = b"caf\xe9=1\n".decode("utf-8", errors="surrogateescape")  # how Ansible reads a Latin-1 file

CASES = [
    # (what, text Ansible gave, text fleet keeps)
    ("plain ASCII", "key=value\n", "key=value\n"),
    ("empty", "", ""),
    ("valid multi-byte UTF-8 unchanged", "café ☃ 日本 😀\n", "café ☃ 日本 😀\n"),
    ("a Latin-1 byte (surrogateescape)", LATIN1, "caf\\xe9=1\n"),
    ("Latin-1 beside valid UTF-8", "é" + b"\xe9".decode("utf-8", "surrogateescape") + "é", "é\\xe9é"),
    ("every byte surrogateescape makes", "".join(chr(0xDC00 + b) for b in (0x80, 0xA0, 0xFF)), "\\x80\\xa0\\xff"),
    ("invalid UTF-8: a cut multi-byte sequence", b"\xe2\x98".decode("utf-8", "surrogateescape"), "\\xe2\\x98"),
    ("a lone high surrogate (no byte behind it)", "a\ud800b", "a\\ud800b"),
    ("a lone low surrogate outside the byte range", "a\udc10b", "a\\udc10b"),
    ("NUL (PostgreSQL refuses it in text)", "a\x00b", "a\\x00b"),
    ("NUL and Latin-1 together", "\x00" + LATIN1, "\\x00caf\\xe9=1\n"),
    ("a backslash already in the text stays one", "C:\\path \\xe9", "C:\\path \\xe9"),
]


@pytest.mark.parametrize("what, given, kept", CASES, ids=[c[0] for c in CASES])
def test_clean_text(what, given, kept):
    cleaned = clean_text(given)
    assert cleaned == kept
    cleaned.encode("utf-8")  # every store's encoder takes it
    assert "\x00" not in cleaned


@pytest.mark.parametrize("what, given, kept", CASES, ids=[c[0] for c in CASES])
def test_text_that_needs_nothing_is_the_same_object(what, given, kept):
    if given == kept:
        assert clean_text(given) is given


def test_bytes_decode_as_utf8_where_they_are_and_escape_the_rest():
    assert clean_bytes(b"caf\xe9 caf\xc3\xa9 \x00") == "caf\\xe9 café \\x00"


def test_a_huge_text_is_cleaned_whole_and_quickly():
    big = ("x" * 1023 + "\n") * 4096 + LATIN1  # 4 MiB of ASCII, then one Latin-1 line
    started = time.perf_counter()
    cleaned = clean_text(big)
    assert time.perf_counter() - started < 2.0
    assert cleaned.endswith("caf\\xe9=1\n") and len(cleaned) == len(big) + 3
    multibyte = "é" * 2_000_000  # valid UTF-8, not ASCII: looked at, left alone
    assert clean_text(multibyte) is multibyte


def test_an_event_is_cleaned_at_every_depth_keys_too_and_says_where():
    event = {
        "event": "runner_on_ok", "counter": 7, "stdout": "changed: [web1]\n" + LATIN1,
        "event_data": {
            "host": "web1", "task": "legacy config",
            "res": {"changed": True, "diff": [{"before": "", "after": LATIN1}],
                    "results": [{"diff": {"after": "ok"}, "msg": "a\x00b"}], "k\udce9y": [1, 2.5, None, True]},
        },
    }
    cleaned = clean_event(event)
    value = cleaned.value
    assert value["stdout"] == "changed: [web1]\ncaf\\xe9=1\n"
    assert value["event_data"]["res"]["diff"] == [{"before": "", "after": "caf\\xe9=1\n"}]
    assert value["event_data"]["res"]["results"][0]["msg"] == "a\\x00b"
    assert value["event_data"]["res"]["k\\xe9y"] == [1, 2.5, None, True]
    assert value["counter"] == 7 and value["event_data"]["host"] == "web1"
    assert cleaned.diff_escaped
    assert ("stdout",) in cleaned.escaped
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # storable as a whole
    assert event["stdout"].endswith(LATIN1), "the event given is left as it was"


def test_an_event_with_nothing_to_clean_is_returned_as_it_is():
    event = {"event": "runner_on_ok", "event_data": {"res": {"diff": [{"after": "café\n"}], "n": [1, {"a": "b"}]}}}
    cleaned = clean_event(event)
    assert cleaned.value is event and cleaned.escaped == () and not cleaned.diff_escaped


def test_escapes_outside_a_diff_do_not_mark_it():
    cleaned = clean_event({"event_data": {"res": {"stdout": LATIN1, "diff": [{"after": "fine"}]}}})
    assert cleaned.escaped and not cleaned.diff_escaped


def test_a_marked_diff_carries_the_mark_once_on_its_first_line():
    diff = "--- before\n+++ after\n+caf\\xe9=1\n"
    marked = mark_escaped(diff)
    assert marked.splitlines()[0] == NOT_UTF8_MARK and marked.endswith(diff)
    assert mark_escaped(marked) == marked
    assert mark_escaped("") == ""
    assert NOT_UTF8_MARK.startswith("["), "the run page shows a line starting with '[' as a note"
