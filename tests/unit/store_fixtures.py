"""A real SQLite store in a temporary directory, opened the way the CLI opens it (no web app).

Test modules wrap `temporary_store` in their own `store` fixture.
"""

from __future__ import annotations

from types import SimpleNamespace

from fleet.store.db import db, Store
from fleet.store.models import Host, Run


def temporary_store(tmp_path):
    """Yield the session of a fresh store under tmp_path, inside its app context."""
    store = Store.open(f"sqlite:///{tmp_path / 'fleet.db'}")
    with store.bound():
        yield db.session


def add_runs(session, count: int, **fields) -> list[int]:
    runs = [Run(kind=fields.get("kind", "check"), trigger=fields.get("trigger", "manual"),
                status=fields.get("status", "successful"), limit=fields.get("limit", "")) for _ in range(count)]
    session.add_all(runs)
    session.commit()
    return [run.id for run in runs]


def add_hosts(session, *specs: tuple[str, str]) -> None:
    session.add_all([Host(name=name, groups=groups) for name, groups in specs])
    session.commit()


def inventory_entry(name: str, *groups: str):
    return SimpleNamespace(name=name, address=f"{name}.example", port=22, groups=list(groups))
