"""The database handle, and SQLite tuned for a controller that writes while pages read."""

from __future__ import annotations

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase

SQLITE_BUSY_TIMEOUT_MS = 10_000


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def init_store(app: Flask) -> None:
    """Bind the store to an app and create any missing tables."""
    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _tune_sqlite)
            db.engine.dispose()  # connections opened before the listener get the pragmas too
        db.create_all()


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
