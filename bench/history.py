"""History that stays fast: seed 100,000 runs and 2,000,000 task results, time the pages.

Pages are requested through Flask's test client in this process (the app
and the SQLite store, no network), logged in as an admin; each page is
requested many times for p50/p95, and its SQL statements are counted on
both a small and the seeded history to show the count does not grow.
"""

from __future__ import annotations

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


def seed(db_path: Path, runs: int = RUNS, task_results: int = TASK_RESULTS) -> None:
    """Bulk-insert a long, plausible history straight into the store's tables."""
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    hosts = [f"host{i:02d}" for i in range(HOSTS)]
    connection = sqlite3.connect(db_path)
    with connection:
        connection.executemany(
            "INSERT INTO hosts (name, address, port, groups, in_inventory, status, message, drifted_tasks,"
            " verified_tasks, total_tasks, os, virtualization, key_blocked, last_check_run_id, last_check_at)"
            " VALUES (?, ?, 22, ?, 1, ?, '', ?, 14, 15, 'Debian 12', 'VM', 0, ?, ?)",
            [(h, f"10.0.0.{i}", "web" if i % 2 else "db", STATUSES[i % 4], i % 3, runs, start.isoformat())
             for i, h in enumerate(hosts)])
        connection.executemany(
            "INSERT INTO runs (id, kind, \"trigger\", status, revision_sha, \"limit\", requested_by, created_at,"
            " started_at, finished_at, error, hosts_total, hosts_in_sync, hosts_drifted, hosts_unreachable,"
            " hosts_failed, cancel_requested, cancel_reason, strategy)"
            " VALUES (?, ?, 'schedule', 'successful', ?, '', 'controller', ?, ?, ?, '', ?, ?, ?, 0, 0, 0, '',"
            " 'mitogen_linear')",
            ((i, "check" if i % 5 else "converge", f"{i:040x}", (start + timedelta(minutes=30 * i)).isoformat(),
              (start + timedelta(minutes=30 * i)).isoformat(), (start + timedelta(minutes=30 * i, seconds=40)).isoformat(),
              HOSTS_PER_RUN, HOSTS_PER_RUN - i % 4, i % 4) for i in range(1, runs + 1)))
        connection.executemany(
            "INSERT INTO run_hosts (run_id, host, status, message, ok, changed, failed, skipped, unreachable,"
            " unverified, verified) VALUES (?, ?, ?, '', 12, ?, 0, 1, 0, 1, 13)",
            ((i, hosts[(i + j) % HOSTS], "drifted" if j < i % 4 else "in_sync", 1 if j < i % 4 else 0)
             for i in range(1, runs + 1) for j in range(HOSTS_PER_RUN)))
        per_run = task_results // runs
        connection.executemany(
            "INSERT INTO task_results (run_id, seq, host, task, action, status, unverified, handler, note, diff,"
            " duration, path) VALUES (?, ?, ?, ?, 'ansible.builtin.template', ?, 0, 0, '', ?, 0.2, '')",
            ((i, k, hosts[(i + k) % HOSTS], f"task {k}", "changed" if k == 0 else "ok",
              "--- before: /etc/app.conf\n+++ after: /etc/app.conf\n@@ -1 +1 @@\n-a\n+b\n" if k == 0 else "")
             for i in range(1, runs + 1) for k in range(per_run)))
    connection.close()


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


def make_app(work: Path, name: str):
    from fleet.web import create_app
    from fleet.store import accounts

    settings = load_settings(flags={"repo": str(work), "data_dir": str(work / name)}, environ={}, cwd=work)
    app = create_app(settings)
    with app.app_context():
        accounts.add_user("bench-admin", "bench-password-1", "admin")
    return app, work / name / "fleet.db"


def report(work: Path) -> list[str]:
    small_app, small_db = make_app(work, "history-small")
    seed(small_db, runs=50, task_results=1_000)
    small = measure_pages(small_app, deep=25)
    app, db_path = make_app(work, "history")
    started = time.perf_counter()
    seed(db_path)
    seeded_in = time.perf_counter() - started
    big = measure_pages(app, deep=RUNS // 2)
    lines = ["## History: 100,000 runs, 2,000,000 task results", "",
             f"Seeded in {seeded_in:.0f} s ({RUNS:,} runs, {RUNS * HOSTS_PER_RUN:,} per-host rows, "
             f"{TASK_RESULTS:,} task results). {REQUESTS_PER_PAGE} requests per page through Flask's test client "
             "(app + SQLite, no network), logged in as an admin.", "",
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
