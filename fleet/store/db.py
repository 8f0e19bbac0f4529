"""The store: one database, how a process opens it (upgrading its schema first), the session each thread or
web request uses, and SQLite tuned for a controller that writes while pages read. PostgreSQL works too, through
psycopg 3 (`fleet[postgres]`).

Nothing here needs Flask: the CLI, the controller, the notifier and the shard workers open a `Store` and bind
it to their thread; the web (fleet.web) attaches one to its app and scopes sessions to its requests.
"""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Integer, String, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, CursorResult, Engine, ExceptionContext, Result, make_url
from sqlalchemy.exc import DatabaseError, StatementError
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker
from sqlalchemy.sql.type_api import TypeEngine

from fleet import filemodes
from fleet.errors import StoreError, StoreRefused

if TYPE_CHECKING:
    import psycopg
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import Column, MetaData

    from fleet.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000
WAL_SWITCH_RETRY_SECONDS = 0.02  # between tries of the switch to WAL while another process writes
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SCHEMA_LOCK_KEY = 0x666C656574  # "fleet": the PostgreSQL advisory lock held while the schema changes
OPERATOR_LOCK_KEY = 0x666C656575  # the PostgreSQL advisory lock of a unit of work that asked for one
# Schemas fleet wrote before it had migrations (no alembic_version table), newest first: the revision
# that matches such a database, told apart by a column its release added ((table, column) or None).
UNVERSIONED_SCHEMAS = (
    ("0003", ("controller_state", "leader_id")),  # issue 11's tree, never released without migrations
    ("0002", ("runs", "hosts_unverified")),  # release ff8a351
    ("0001", None),  # release c403ef5
)

log = logging.getLogger("fleet.store")


class Base(DeclarativeBase):
    pass


Model = Base  # what the models subclass


@dataclass(frozen=True)
class SchemaChange:
    """What opening a database did to its schema: `before` None means it was empty and was created."""

    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


class Store:
    """One database: its engine, what opening it did to the schema, and one session per scope.

    A scope is a thread, unless the code that shares the store says otherwise (the web scopes a session to
    each request, by `scope_of`). `db.session` is the session of the store bound in this scope.
    """

    def __init__(self, engine: Engine, schema: SchemaChange) -> None:
        self.engine = engine
        self.schema = schema
        self.scope_of: Callable[[], Hashable] = threading.get_ident
        self._sessions = scoped_session(sessionmaker(bind=engine), scopefunc=lambda: self.scope_of())

    @classmethod
    def open(cls, database_url: str) -> Store:
        """Connect to a database and bring its schema to this fleet's head (logged when it upgrades).

        An empty database gets every table at once; an older one is migrated; one written by a newer
        fleet is refused with StoreError, untouched.
        """
        url = engine_url(database_url)
        require_driver(url)
        engine = create_engine(url)
        tuners: dict[str, Callable[..., None]] = {"sqlite": _tune_sqlite, "postgresql": _tune_postgresql}
        tune = tuners.get(engine.dialect.name)
        if tune is not None:
            event.listen(engine, "connect", tune)
        event.listen(engine, "handle_error", _as_store_refused)
        try:
            return cls(engine, upgrade_schema(engine))
        except BaseException:
            engine.dispose()
            raise

    @property
    def session(self) -> Session:
        return self._sessions()

    def end_session(self) -> None:
        """Close this scope's session (what it read is forgotten; the next use opens a new one)."""
        self._sessions.remove()

    @contextmanager
    def bound(self) -> Iterator[Store]:
        """This store as the one `db` means in this thread for the block; its session ends with the block
        (a block inside another binding of the same store leaves the outer one's session open)."""
        if _bound.get() is self:
            yield self
            return
        token = _bound.set(self)
        try:
            yield self
        finally:
            self.end_session()
            _bound.reset(token)

    def close(self) -> None:
        self.end_session()
        self.engine.dispose()


def _as_store_refused(context: ExceptionContext) -> BaseException | None:
    """What the database said, as StoreRefused (fleet's own) that is also the library's error it stands for."""
    error = context.sqlalchemy_exception
    if error is None or isinstance(error, StoreRefused):
        return None  # not the database's (a Python error in a statement's values): raised as it is
    kind = _refused_type(type(error))
    refused = kind.__new__(kind)
    refused.__dict__.update(error.__dict__)
    refused.args = error.args
    return refused


_REFUSED_TYPES: dict[type[StatementError], type[StatementError]] = {}


def _refused_type(library_error: type[StatementError]) -> type[StatementError]:
    """StoreRefused and `library_error` in one type: callers catch the first, the store's own code the second."""
    kind = _REFUSED_TYPES.get(library_error)
    if kind is None:
        name = f"StoreRefused{library_error.__name__}"
        kind = _REFUSED_TYPES[library_error] = type(name, (StoreRefused, library_error), {"__module__": __name__})
    return kind


_bound: ContextVar[Store | None] = ContextVar("fleet_store_bound", default=None)
_resolvers: list[Callable[[], Store | None]] = []


def add_store_resolver(resolver: Callable[[], Store | None]) -> None:
    """Another place to find the store in use: the web's app (of the request or app context), so its code
    uses `db` without binding the store in every thread. A resolver's store wins over a bound one."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def current_store() -> Store:
    for resolver in _resolvers:
        store = resolver()
        if store is not None:
            return store
    store = _bound.get()
    if store is None:
        raise StoreError("no store is open here: open one with fleet.store.db.open_store or Store.open(...).bound()")
    return store


class _CurrentStore:
    """`db`: the current store's session and engine, wherever the code runs (CLI, controller, web request)."""

    metadata = Base.metadata

    @property
    def session(self) -> Session:
        return current_store().session

    @property
    def engine(self) -> Engine:
        return current_store().engine


db = _CurrentStore()


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched. Session.execute returns a CursorResult for them, though its
    types say only Result."""
    return cast(CursorResult[Any], result).rowcount


_in_unit_of_work: ContextVar[bool] = ContextVar("fleet_store_unit_of_work", default=False)


@contextmanager
def unit_of_work(serialized: bool = False) -> Iterator[None]:
    """One transaction for one use case: the store's writes inside the block commit together at its end, or
    none does (an error rolls all back). With `serialized`, units that ask for it run one at a time, so
    a rule read at the start (no converge overlaps this one) still holds when the block writes.
    Nested blocks join the outer one."""
    if _in_unit_of_work.get():
        yield
        return
    token = _in_unit_of_work.set(True)
    try:
        if serialized:
            _take_operator_lock()
        yield
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    finally:
        _in_unit_of_work.reset(token)


def commit() -> None:
    """Commit the store's writes now, or, inside a unit of work, at its end (flushed now, so later reads in
    the unit see them)."""
    if _in_unit_of_work.get():
        db.session.flush()
    else:
        db.session.commit()


def _take_operator_lock() -> None:
    """Hold the operators' lock until this transaction ends. SQLite: a write (that changes nothing) takes the
    database's write lock, which other writers then wait for; PostgreSQL: a transaction-scoped advisory lock."""
    dialect = db.session.get_bind().dialect.name
    if dialect == "sqlite":
        db.session.execute(text("UPDATE controller_state SET id = id WHERE 0"))
    elif dialect == "postgresql":
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": OPERATOR_LOCK_KEY})


def engine_url(database_url: str) -> str:
    """The SQLAlchemy URL for a database URL: postgres:// and postgresql:// go through psycopg 3."""
    for scheme in ("postgres://", "postgresql://"):
        if database_url.startswith(scheme):
            return "postgresql+psycopg://" + database_url[len(scheme) :]
    return database_url


def require_driver(url: str) -> None:
    """PostgreSQL needs psycopg 3, an extra: say how to get it rather than fail on an import."""
    if url.startswith("postgresql+psycopg://") and importlib.util.find_spec("psycopg") is None:
        raise StoreError(
            "FLEET_DATABASE_URL names PostgreSQL but its driver is not installed: "
            "pip install 'fleet[postgres]' (psycopg 3)"
        )


def upgrade_schema(engine: Engine) -> SchemaChange:
    """Create the schema of an empty database, or migrate an older one to head, in one transaction."""
    from fleet.store.migrations import HEAD

    if _recorded_revision(engine) == HEAD:
        return SchemaChange(HEAD, HEAD)  # the usual open: no lock, no write, no alembic
    head = schema_head()  # HEAD, as a unit test holds: reached only to create or migrate
    with engine.begin() as connection:
        _lock_schema(connection)
        before = current_schema(connection)
        if before is None:
            target_metadata().create_all(connection)
            run_alembic(connection, "stamp", head)
            return SchemaChange(None, head)
        if before not in known_schemas():
            raise StoreError(
                f"the database is at schema revision {before}, newer than this fleet knows "
                f"(its newest is {head}): run the fleet version that upgraded it, or a newer one"
            )
        if before != head:
            run_alembic(connection, "upgrade", head)
            log.info("database upgraded from %s to %s", before, head)
    return SchemaChange(before, head)


def _recorded_revision(engine: Engine) -> str | None:
    """The revision alembic recorded, read with one query; None when there is none (or no table for it)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DatabaseError:  # no alembic_version table: an empty database, or one older than migrations
        return None


def _lock_schema(connection: Connection) -> None:
    """Hold the schema for this transaction: of two processes opening an old or empty database at once,
    one creates or upgrades it and the other, waiting here, then finds it done."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, not at the first write
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


def recorded_schema(connection: Connection) -> str | None:
    """The revision alembic recorded in the database, None if it recorded none."""
    if "alembic_version" not in inspect(connection).get_table_names():
        return None
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def current_schema(connection: Connection) -> str | None:
    """The database's schema revision: alembic's record, or recognised from the tables of a fleet that
    predates migrations (then recorded); None for an empty database."""
    recorded = recorded_schema(connection)
    if recorded is not None:
        return recorded
    if not set(inspect(connection).get_table_names()) - {"alembic_version"}:
        return None
    revision = recognise_unversioned(connection)
    run_alembic(connection, "stamp", revision)
    log.info("database without a schema revision recognised as %s", revision)
    return revision


def recognise_unversioned(connection: Connection) -> str:
    """The revision a database fleet wrote before migrations matches, by the columns it has."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    if not {"runs", "hosts", "revisions"} <= tables:
        raise StoreError(
            f"the database holds tables that are not fleet's ({', '.join(sorted(tables)[:5])}): "
            "point FLEET_DATABASE_URL at an empty database or at fleet's own"
        )
    for revision, marker in UNVERSIONED_SCHEMAS:
        if marker is None:
            return revision
        table, column = marker
        if table in tables and column in {c["name"] for c in inspector.get_columns(table)}:
            return revision
    raise AssertionError("UNVERSIONED_SCHEMAS ends with a catch-all")


def read_schema(database_url: str) -> tuple[str | None, str]:
    """(the database's recorded revision or None, this fleet's head), changing nothing."""
    engine = create_engine(engine_url(database_url))
    try:
        with engine.connect() as connection:
            return recorded_schema(connection), schema_head()
    finally:
        engine.dispose()


def target_metadata() -> MetaData:
    """Every table of the models (importing them registers them on the models' metadata)."""
    import fleet.store.models  # noqa: F401

    return Base.metadata


def compare_column_type(
    context: MigrationContext,
    _inspected_column: Column[Any],
    _metadata_column: Column[Any],
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    """Alembic's type comparison, except that on SQLite VARCHAR(n) and TEXT are one type (SQLite
    enforces no length) and so are INTEGER and BIGINT, so a widened column there is no change and no
    table is rewritten for it."""
    if context.dialect.name == "sqlite" and isinstance(inspected_type, String) and isinstance(metadata_type, String):
        return False
    if context.dialect.name == "sqlite" and isinstance(inspected_type, Integer) and isinstance(metadata_type, Integer):
        return False  # INTEGER and BIGINTEGER: both 64 bits in SQLite
    return None  # alembic's own comparison


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR))


def schema_head() -> str:
    """The newest schema revision this fleet knows."""
    head = _scripts().get_current_head()
    assert head is not None  # fleet's migrations are one line of scripts: they always have a head
    return head


def known_schemas() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def run_alembic(connection: Connection, verb: str, revision: str) -> None:
    """Alembic's `upgrade`, `downgrade` or `stamp` to a revision, on this connection (no alembic.ini)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    getattr(command, verb)(config, revision)


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    """The store of these settings, open and bound to this thread for the block (creates the data directory)."""
    prepare_data_dir(settings)
    store = Store.open(settings.database_url)
    try:
        with store.bound():
            yield store
    finally:
        store.close()


def prepare_data_dir(settings: Settings) -> None:
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


def _tune_sqlite(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _enter_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _enter_wal(cursor: sqlite3.Cursor) -> None:
    """Switch to WAL, waiting for other processes as long as any SQLite lock would.

    SQLite answers "database is locked" at once, without its busy handler, when this switch meets a
    process that holds the write lock (two processes opening an old database at once: one upgrades its
    schema, the other connects): so wait here, as the busy timeout would for a write.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY_SECONDS)


def _tune_postgresql(dbapi_connection: psycopg.Connection[Any], _record: object) -> None:
    # Times come back in UTC whatever the server's TimeZone, as they are stored and as SQLite gives them.
    dbapi_connection.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()  # a SET inside a transaction the pool rolls back would be undone
