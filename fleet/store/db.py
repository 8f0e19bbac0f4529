"""The database handle, how a process opens it, and SQLite tuned for a controller that writes while pages read."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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


def store_app(database_url: str) -> Flask:
    """A Flask app that holds the store and nothing else: no blueprints, no secret key, no templates.

    Flask-SQLAlchemy scopes its session to an app context, so the CLI, the
    controller and the web share one `db.session` API; a process that does not
    serve pages (the CLI) opens the store through this bare app instead of
    building the web application.
    """
    app = Flask("fleet.store")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    init_store(app)
    return app


@contextmanager
def open_store(settings) -> Iterator[Flask]:
    """The store of these settings, open for the duration of the block (creates the data directory)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = store_app(settings.database_url)
    with app.app_context():
        yield app


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
