"""The database handle, how a process opens it, and SQLite tuned for a controller that writes while pages read."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase

from fleet import filemodes

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
    prepare_data_dir(settings)
    app = store_app(settings.database_url)
    with app.app_context():
        yield app


def prepare_data_dir(settings) -> None:
    """The data directory, private (0700); an SQLite database file, private (0600) before SQLite opens it.

    SQLite gives its -wal and -shm files the database file's mode, so making
    the database 0600 first keeps them private too; existing ones are fixed here.
    """
    filemodes.ensure_private_dir(settings.data_dir, filemodes.DATA_DIR_ENTRIES)
    database = sqlite_path(settings.database_url)
    if database is None or not database.parent.is_dir():
        return  # another database server, in memory, or a directory SQLite will report missing itself
    filemodes.make_private_file(database)
    for suffix in ("-wal", "-shm", "-journal"):
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            companion.chmod(filemodes.PRIVATE_FILE)


def sqlite_path(database_url: str) -> Path | None:
    """The file of an SQLite URL (None for other databases and in-memory SQLite)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _tune_sqlite(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
