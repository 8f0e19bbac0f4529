"""Text from Ansible as fleet keeps it: valid UTF-8 every store takes, whatever bytes it came from.

Ansible reads files and command output as bytes and decodes them with Python's
`surrogateescape`: a byte that is not UTF-8 (a Latin-1 `é` is the single byte
0xE9) becomes a lone surrogate (U+DCE9), which no UTF-8 encoder takes — SQLite's
driver raises, PostgreSQL's too, and PostgreSQL refuses NUL in text as well. So
every event is cleaned once, where it enters fleet (`jobs.Execution._on_event`),
before anything reads, stores or prints it:

- an undecodable byte (a surrogate U+DC80..U+DCFF) is written as `\\xNN`, its
  value: `caf\\xe9=1` for the Latin-1 line `café=1`;
- another lone surrogate (one that never was a byte: a broken JSON escape) as `\\uDXXX`;
- NUL as `\\x00`;
- everything else, multi-byte UTF-8 included, stays exactly as it was.

A diff that needed any of this is stored with NOT_UTF8_MARK as its first line
(shown on the run page as a note, by `fleet show` and in its JSON), so a reader
knows that `\\xNN` there stands for a byte and not for the four characters
(which a file may hold too). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

NOT_UTF8_MARK = "[fleet: not UTF-8 (shown escaped): bytes that are not UTF-8 text, and NUL, appear as \\xNN]"

# What no store keeps as text: NUL (PostgreSQL refuses it), lone surrogates (no UTF-8 encoder takes them).
_UNSTORABLE = re.compile("[\\x00\\ud800-\\udfff]")
_ESCAPED_BYTES = range(0xDC80, 0xDD00)  # surrogateescape's range: U+DC00 + the byte
KeyPath = tuple[object, ...]  # where in an event: its keys and list indexes from the top


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in _ESCAPED_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    return "\\x00" if code == 0 else f"\\u{code:04x}"


def clean_text(text: str) -> str:
    """`text` itself when every store takes it; else with each undecodable byte, lone surrogate and NUL escaped."""
    if text.isascii() and "\x00" not in text:
        return text  # the usual case, and the fastest test
    return _UNSTORABLE.sub(_escape, text)


def needs_cleaning(text: str) -> bool:
    return not (text.isascii() and "\x00" not in text) and bool(_UNSTORABLE.search(text))


def clean_bytes(data: bytes) -> str:
    """Bytes as text: UTF-8 where they are, each other byte as `\\xNN` (the same escapes as clean_text)."""
    return clean_text(data.decode("utf-8", errors="surrogateescape"))


@dataclass(frozen=True)
class Cleaned:
    """An event made storable, and where it had to be changed (paths of keys and list indexes)."""

    value: object
    escaped: tuple[KeyPath, ...] = ()

    @property
    def diff_escaped(self) -> bool:
        """Did a diff of the result (its own, or a loop item's) hold text that had to be escaped?"""
        return any("diff" in path for path in self.escaped)


def clean_event(event: object) -> Cleaned:
    """Every string of an event (keys too, at any depth) made storable; the event itself when none needed it.

    Containers are copied only along the paths that changed, so the usual event
    (all UTF-8) costs one walk and no copy.
    """
    escaped: list[KeyPath] = []
    value = _clean(event, (), escaped)
    return Cleaned(value, tuple(escaped))


def _clean(value: object, path: KeyPath, escaped: list[KeyPath]) -> object:
    """`value` at `path` made storable; the path of each string changed goes to `escaped`."""
    if isinstance(value, str):
        if not needs_cleaning(value):
            return value
        escaped.append(path)
        return clean_text(value)
    if isinstance(value, bytes):
        escaped.append(path)
        return clean_bytes(value)
    if isinstance(value, dict):
        return _clean_dict(value, path, escaped)
    if isinstance(value, (list, tuple)):
        return _clean_list(value, path, escaped)
    return value


def _clean_list(
    value: list[Any] | tuple[Any, ...], path: KeyPath, escaped: list[KeyPath]
) -> list[Any] | tuple[Any, ...]:
    items = None
    for index, item in enumerate(value):
        # Strings and numbers are looked at here, without a path of their own unless they need one.
        new = item if _plain(item) else _clean(item, (*path, index), escaped)
        if new is not item and items is None:
            items = list(value[:index])
        if items is not None:
            items.append(new)
    if items is None:
        return value
    return type(value)(items) if isinstance(value, tuple) else items


def _clean_dict(value: dict[Any, Any], path: KeyPath, escaped: list[KeyPath]) -> dict[Any, Any]:
    cleaned = None
    for index, (key, item) in enumerate(value.items()):
        new_key = key if _plain(key) else _clean(key, path, escaped)
        new_item = item if _plain(item) else _clean(item, (*path, new_key), escaped)
        if (new_key is not key or new_item is not item) and cleaned is None:
            cleaned = dict(list(value.items())[:index])
        if cleaned is not None:
            cleaned[new_key] = new_item
    return value if cleaned is None else cleaned


def _plain(value: object) -> bool:
    """Nothing to clean, known without a look inside: a number, None, or a string every store takes."""
    if isinstance(value, str):
        return not needs_cleaning(value)
    return value is None or isinstance(value, (bool, int, float))


def mark_escaped(diff: str) -> str:
    """A diff with NOT_UTF8_MARK as its first line (once), so every reader sees its escapes are bytes."""
    if not diff or diff.startswith(NOT_UTF8_MARK):
        return diff
    return f"{NOT_UTF8_MARK}\n{diff}"
