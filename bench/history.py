"""History that stays fast: seed 100,000 runs and 2,000,000 task results, time the pages.

Pages are requested through Flask's test client in this process (the app
and the store, no network), logged in as an admin; each page is requested
many times for p50/p95, and its SQL statements are counted on both a small
and the seeded history to show the count does not grow. SQLite always; with
FLEET_BENCH_DATABASE_URL (a PostgreSQL database it may empty) PostgreSQL too.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import event

from bench.common import percentile
from fleet.settings import load_settings

RUNS = 100_000
TASK_RESULTS = 2_000_000
HOSTS = 50
HOSTS_PER_RUN = 20
REQUESTS_PER_PAGE = 60
STATUSES = ("in_sync", "drifted", "unreachable", "failed")
# A PostgreSQL database the history section may empty and fill (skipped when unset).
POSTGRES_URL = os.environ.get("FLEET_BENCH_DATABASE_URL", "")


HOST_COLUMNS = ("name", "address", "port", "groups", "in_inventory", "status", "message", "drifted_tasks",
                "verified_tasks", "total_tasks", "os", "virtualization", "key_blocked", "last_check_run_id",
                "last_check_at")
RUN_COLUMNS = ("id", "kind", "trigger", "status", "revision_sha", "limit", "requested_by", "created_at", "started_at",
               "finished_at", "error", "hosts_total", "hosts_in_sync", "hosts_drifted", "hosts_unreachable",
               "hosts_failed", "cancel_requested", "cancel_reason", "strategy")
RUN_HOST_COLUMNS = ("run_id", "host", "status", "message", "ok", "changed", "failed", "skipped", "unreachable",
                    "unverified", "verified")
TASK_COLUMNS = ("run_id", "seq", "host", "task", "action", "status", "unverified", "handler", "note", "diff",
                "duration", "path")
DIFF = "--- before: /etc/app.conf\n+++ after: /etc/app.conf\n@@ -1 +1 @@\n-a\n+b\n"


def history_rows(runs: int, task_results: int) -> dict[str, tuple[tuple[str, ...], object]]:
    """A long, plausible history: table -> (columns, rows), the rows generated lazily."""
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    hosts = [f"host{i:02d}" for i in range(HOSTS)]
    per_run = task_results // runs

    def at(i: int, seconds: int = 0) -> str:
        return (start + timedelta(minutes=30 * i, seconds=seconds)).isoformat()

    return {
        "hosts": (HOST_COLUMNS, ((h, f"10.0.0.{i}", 22, "web" if i % 2 else "db", True, STATUSES[i % 4], "", i % 3,
                                  14, 15, "Debian 12", "VM", False, runs, start.isoformat())
                                 for i, h in enumerate(hosts))),
        "runs": (RUN_COLUMNS, ((i, "check" if i % 5 else "converge", "schedule", "successful", f"{i:040x}", "",
                                "controller", at(i), at(i), at(i, 40), "", HOSTS_PER_RUN, HOSTS_PER_RUN - i % 4,
                                i % 4, 0, 0, False, "", "mitogen_linear") for i in range(1, runs + 1))),
        "run_hosts": (RUN_HOST_COLUMNS, ((i, hosts[(i + j) % HOSTS], "drifted" if j < i % 4 else "in_sync", "", 12,
                                          1 if j < i % 4 else 0, 0, 1, 0, 1, 13)
                                         for i in range(1, runs + 1) for j in range(HOSTS_PER_RUN))),
        "task_results": (TASK_COLUMNS, ((i, k, hosts[(i + k) % HOSTS], f"task {k}", "ansible.builtin.template",
                                         "changed" if k == 0 else "ok", False, False, "", DIFF if k == 0 else "",
                                         0.2, "") for i in range(1, runs + 1) for k in range(per_run))),
    }


def seed(database_url: str, runs: int = RUNS, task_results: int = TASK_RESULTS) -> None:
    """Bulk-insert the history straight into the store's tables (SQLite: executemany; PostgreSQL: COPY)."""
    tables = history_rows(runs, task_results)
    if database_url.startswith("sqlite:///"):
        seed_sqlite(Path(database_url.removeprefix("sqlite:///")), tables)
    else:
        seed_postgres(database_url, tables)


def _quoted(columns: tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def seed_sqlite(db_path: Path, tables) -> None:
    connection = sqlite3.connect(db_path)
    with connection:
        for table, (columns, rows) in tables.items():
            marks = ", ".join("?" for _ in columns)
            connection.executemany(f"INSERT INTO {table} ({_quoted(columns)}) VALUES ({marks})", rows)
    connection.close()


def seed_postgres(database_url: str, tables) -> None:
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        with connection.cursor() as cursor:
            for table, (columns, rows) in tables.items():
                with cursor.copy(f"COPY {table} ({_quoted(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            # Runs were given their ids: move the sequence past them, as inserts would have.
            cursor.execute("SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT max(id) FROM runs))")


PAGES = {
    "dashboard": "/",
    "hosts": "/hosts",
    "runs page 1": "/runs",
    "deep runs page": "/runs?before={deep}",
    "host page": "/hosts/host07",
    "run page": "/runs/{deep}",
    "API runs list": "/api/v1/runs",
    "API deep runs page": "/api/v1/runs?cursor={deep}",
}


def measure_pages(app, deep: int) -> dict[str, dict]:
    from fleet.store import accounts, db

    client = app.test_client()
    with app.app_context():
        sid = accounts.start_session(1, timedelta(hours=1))
    with client.session_transaction() as session:
        session["sid"] = sid  # a server-side session, as a login makes
    results = {}
    with app.app_context():
        engine = db.engine
    for name, path in PAGES.items():
        url = path.format(deep=deep)
        statements = []
        listener = lambda *args, **kwargs: statements.append(1)  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        status = client.get(url).status_code
        event.remove(engine, "before_cursor_execute", listener)
        latencies = []
        for _ in range(REQUESTS_PER_PAGE):
            started = time.perf_counter()
            client.get(url)
            latencies.append((time.perf_counter() - started) * 1000)
        results[name] = {"url": url, "status": status, "queries": len(statements),
                         "p50": percentile(latencies, 50), "p95": percentile(latencies, 95)}
    return results


def make_app(work: Path, name: str, database_url: str = ""):
    from fleet.web import create_app
    from fleet.store import accounts

    flags = {"repo": str(work), "data_dir": str(work / name)}
    if database_url:
        flags["database_url"] = database_url
    settings = load_settings(flags=flags, environ={}, cwd=work)
    app = create_app(settings)
    with app.app_context():
        accounts.add_user("bench-admin", "bench-password-1", "admin")
    return app, settings.database_url


def empty_postgres(url: str) -> str:
    """The database behind `url`, emptied (its public schema dropped and made again); returns the URL."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
        connection.execute("CREATE SCHEMA public")
    return url


def measure_history(work: Path, postgres_url: str = "") -> tuple[float, dict, dict]:
    """Seconds to seed, and the pages measured on a 50-run and on the full history (one database kind)."""
    label = "pg" if postgres_url else "sqlite"
    small_app, small_url = make_app(work, f"history-small-{label}", postgres_url and empty_postgres(postgres_url))
    seed(small_url, runs=50, task_results=1_000)
    small = measure_pages(small_app, deep=25)
    with small_app.app_context():
        from fleet.store import db
        db.engine.dispose()  # the big history reuses a PostgreSQL database: let go of this one first
    app, url = make_app(work, f"history-{label}", postgres_url and empty_postgres(postgres_url))
    started = time.perf_counter()
    seed(url)
    seeded_in = time.perf_counter() - started
    return seeded_in, small, measure_pages(app, deep=RUNS // 2)


def report(work: Path) -> list[str]:
    """The history section: SQLite, and PostgreSQL too when FLEET_BENCH_DATABASE_URL names an empty-able database."""
    lines = []
    kinds = [("SQLite", "")] + ([("PostgreSQL", POSTGRES_URL)] if POSTGRES_URL else [])
    for kind, url in kinds:
        seeded_in, small, big = measure_history(work, url)
        lines += history_table(kind, seeded_in, small, big)
    return lines


def history_table(kind: str, seeded_in: float, small: dict, big: dict) -> list[str]:
    lines = [f"## History on {kind}: 100,000 runs, 2,000,000 task results", "",
             f"Seeded in {seeded_in:.0f} s ({RUNS:,} runs, {RUNS * HOSTS_PER_RUN:,} per-host rows, "
             f"{TASK_RESULTS:,} task results). {REQUESTS_PER_PAGE} requests per page through Flask's test client "
             f"(app + {kind}, no network), logged in as an admin.", "",
             "| page | URL | HTTP | p50 ms | p95 ms | queries (50 runs) | queries (100,000 runs) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, result in big.items():
        lines.append(f"| {name} | `{result['url']}` | {result['status']} | {result['p50']:.1f} | "
                     f"{result['p95']:.1f} | {small[name]['queries']} | {result['queries']} |")
    worst = max(r["p95"] for r in big.values() if r["status"] == 200) if big else 0
    fixed = all(small[n]["queries"] == big[n]["queries"] for n in big)
    lines += ["", f"Goal: p95 under 150 ms (worst page: {worst:.0f} ms) and a fixed query count "
              f"({'met' if fixed else 'NOT met'}: the counts {'match' if fixed else 'differ'} between 50 and "
              "100,000 runs).", ""]
    return lines
