"""Keyset pages: every history list of the CLI, UI and API pages through `keyset_page`.

A page is the rows past a cursor (the key of the last row shown), in key
order, never an OFFSET: the database walks an index from the cursor, so a
page deep in a long history costs what the first one costs. One row more
than the page is read to tell whether another page follows, without counting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import QueryableAttribute

from fleet.store.db import db

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Page(Generic[T]):
    """Rows of one page in display order, and whether another page follows in the reading direction."""

    items: list[T]
    more: bool

    def cursor(self, key: str = "id") -> Any:
        """The cursor of the next page (the last shown row's key), or None on the last page."""
        return getattr(self.items[-1], key) if self.more and self.items else None

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        """The same page with each row converted (an ORM row to the store's dataclass)."""
        return Page([convert(item) for item in self.items], self.more)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def keyset_page(
    query: Select[*tuple[Any, ...]],
    key: QueryableAttribute[Any],
    size: int,
    cursor: Any = None,
    descending: bool = True,
    rows: bool = False,
) -> Page[Any]:
    """One page of `size` rows ordered by `key`, past `cursor` (below it when descending); one query.

    `rows=True` keeps whole result rows (a query of several entities) instead of the first entity.
    """
    if cursor is not None:
        query = query.where(key < cursor if descending else key > cursor)
    query = query.order_by(key.desc() if descending else key.asc()).limit(size + 1)
    found = list(db.session.execute(query) if rows else db.session.scalars(query))
    return Page(found[:size], more=len(found) > size)


def newer_page(query: Select[*tuple[Any, ...]], key: QueryableAttribute[Any], size: int, after: Any) -> Page[Any]:
    """The page just above `after`, shown newest first like every history page; `more`: newer ones exist."""
    page = keyset_page(query, key, size, cursor=after, descending=False)
    return Page(list(reversed(page.items)), page.more)
