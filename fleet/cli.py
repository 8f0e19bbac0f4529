"""The `fleet` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from fleet import __version__
from fleet.errors import FleetError, StoreError
from fleet.output import Progress, colour_diff, duration, indent, kept_process_line, paint, table, use_colour, when
from fleet.vocabulary import RUN_KINDS, ApprovalKind, Coverage, RunKind, TaskStatus, is_active, iso, utcnow

# Every `fleet` imports this module, and `fleet --help` or a usage error need nothing more: the modules a
# command uses (the store with SQLAlchemy; jobs, hostkeys and the lab with paramiko; the source with git) are
# imported inside it. Names below serve annotations only.
if TYPE_CHECKING:
    from datetime import datetime

    from fleet import jobs
    from fleet.actions import Actor
    from fleet.drift import TaskResult
    from fleet.settings import Settings
    from fleet.store.models import AuditEntry
    from fleet.store.views import RunView, TaskView
    from fleet.store.workers import WorkerView

# Options need these when the commands are built, before any runs; they are copies, so that building them
# does not import their modules (tests/unit/test_cli.py keeps them equal to the originals).
ROLES = ("viewer", "operator", "admin")  # fleet.store.accounts.ROLES
LAB_DEFAULT_SUBNET = 10  # fleet.lab.DEFAULT_SUBNET

_P = ParamSpec("_P")
_R = TypeVar("_R")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(), help="fleet.toml to read (default ./fleet.toml)")
@click.option("--repo", help="git source URL or path (FLEET_REPO)")
@click.option("--branch", help="branch, tag or commit to follow (FLEET_BRANCH)")
@click.option("--playbook", help="entry playbook, relative to the repo (FLEET_PLAYBOOK)")
@click.option("--inventory", help="inventory path, relative to the repo (FLEET_INVENTORY)")
@click.option("--data-dir", help="where fleet keeps its state (FLEET_DATA_DIR)")
@click.option("--forks", type=int, help="parallel hosts (FLEET_FORKS)")
@click.pass_context
def main(ctx: click.Context, /, config_path: str | None, **flags: str | int | None) -> None:
    """GitOps for Ansible fleets: find drift, converge it, keep the history."""
    from fleet import filemodes

    # Before anything is created: the data directory holds diffs, output and keys (and git, ssh and
    # Ansible, started from here, inherit the umask), so it is nobody else's to read.
    filemodes.use_private_umask()
    ctx.obj = {"flags": flags, "config_path": config_path}


def _settings(ctx: click.Context) -> Settings:
    from fleet.settings import load_settings

    return load_settings(flags=ctx.obj["flags"], config_path=ctx.obj["config_path"])


@contextmanager
def _store(settings: Settings) -> Iterator[None]:
    """The store alone: the CLI never builds the web app (no blueprints, no secret key file)."""
    from fleet.store.db import open_store

    with open_store(settings) as store:
        change = store.schema
        if change.before is not None and change.changed:  # said on stderr: --json output stays JSON
            click.echo(f"fleet: database upgraded from {change.before} to {change.after}", err=True)
        yield


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"fleet: {message}", err=True)
    sys.exit(code)


def _guard(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn expected errors into one clear line and exit code 1, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except FleetError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted; the run is recorded as canceled", 130)

    return wrapper


# --- check / converge -------------------------------------------------------


@main.command()
@click.option("--limit", help="Ansible host pattern to check")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.option("--diff/--no-diff", "show_diff", default=True, help="print each drifted task's diff")
@click.pass_context
@_guard
def check(ctx: click.Context, limit: str | None, as_json: bool, show_diff: bool) -> None:
    """Check mode + diff on the hosts; exit 0 in sync, 2 drift, 3 unreachable/failed, 4 unverified."""
    _execute(ctx, "check", limit, as_json, show_diff)


@main.command()
@click.option("--limit", help="Ansible host pattern to converge")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.option("--diff/--no-diff", "show_diff", default=True, help="print each applied change's diff")
@click.pass_context
@_guard
def converge(ctx: click.Context, limit: str | None, yes: bool, as_json: bool, show_diff: bool) -> None:
    """Apply the desired revision to the hosts; exit 0 converged, 3 unreachable/failed."""
    if not yes:
        if not sys.stdin.isatty():
            raise FleetError("converge changes hosts; pass --yes to confirm when not on a terminal")
        target = f"hosts matching {limit!r}" if limit else "every host"
        click.confirm(f"Converge {target} to the desired revision?", abort=True)
    _execute(ctx, "converge", limit, as_json, show_diff)


def _execute(ctx: click.Context, kind: str, limit: str | None, as_json: bool, show_diff: bool) -> None:
    from fleet import jobs

    settings = _settings(ctx)
    with _store(settings):
        progress = Progress(kind)
        try:
            report = jobs.execute_run(
                settings, kind, limit=limit, trigger="manual", requested_by=_who(), progress=progress
            )
        except (FleetError, KeyboardInterrupt) as exc:
            _audit_attempt(
                "run.request", _hosts_target(limit), f"{kind}, did not complete: {str(exc) or 'interrupted'}"
            )
            raise
        finally:
            progress.done()
        _audit("run.request", _hosts_target(limit), f"{kind}, run {report.run.id}")
        if as_json:
            click.echo(json.dumps(report_json(report), indent=2))
        else:
            click.echo(report_text(report, show_diff, use_colour()))
    sys.exit(jobs.exit_code(report.verdicts))


def _who() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _actor() -> Actor:
    from fleet.actions import Actor

    return Actor(_who())


def _audit(action: str, target: str = "", detail: str = "") -> None:
    """Record a change made from the command line, as the UI records its own (no remote address)."""
    _actor().audit(action, target, detail)


def _audit_attempt(action: str, target: str, detail: str) -> None:
    """Record an attempt that failed; the failure itself is what the user must see, so a store that
    cannot take the record (the reason it failed, perhaps) does not hide it."""
    from fleet.store.db import db

    try:
        db.session.rollback()  # whatever the failed attempt left unwritten is not part of the record
        _audit(action, target, detail)
    except StoreError:
        db.session.rollback()


def _hosts_target(limit: str | None) -> str:
    return limit or "all hosts"


def report_json(report: jobs.RunReport) -> dict[str, Any]:
    """The run's shared JSON shape (as `fleet show --json` and the API give it), plus each host's facts."""
    from fleet import shapes

    data = shapes.run_report_json(
        report.run, [(v.name, v, report.tasks_by_host.get(v.name, [])) for v in report.verdicts]
    )
    for host, verdict in zip(data["hosts"], report.verdicts, strict=False):
        host["facts"] = verdict.facts or None  # only a live check gathered them
    return data


def report_text(report: jobs.RunReport, show_diff: bool, colour: bool) -> str:
    run = report.run
    lines = [_run_header(run, colour), ""]
    rows = [
        [v.name, v.status, str(v.changed), str(Coverage.of(v.verified, v.unverified)), v.message[:100]]
        for v in report.verdicts
    ]
    changed_label = "DRIFTED" if run.kind == RunKind.CHECK else "CHANGED"
    lines.append(table(["HOST", "STATUS", changed_label, "COVERAGE", "MESSAGE"], rows, colour, status_column=1))
    for verdict in report.verdicts:
        lines += _host_explanation(
            verdict.name, report.tasks_by_host.get(verdict.name, []), run.kind, show_diff, colour
        )
    lines.append("")
    lines.append(f"fleet show {run.id} has every task and the full output.")
    return "\n".join(lines)


def _host_explanation(
    host: str, tasks: Sequence[TaskView | TaskResult], kind: str, show_diff: bool, colour: bool
) -> list[str]:
    """Why a host got its verdict: drifted tasks with diffs, unverified ones with the reason, executed ones."""
    from fleet import shapes

    lines: list[str] = []
    changed = [t for t in tasks if shapes.is_drift(t)]
    if changed:
        lines += ["", f"{host}: {len(changed)} {'drifted' if kind == RunKind.CHECK else 'changed'} task(s)"]
        for task in changed:
            lines.append(f"  * {task_line(task)}")
            if show_diff and task.diff:
                lines.append(indent(colour_diff(task.diff, colour)))
            elif show_diff:
                lines.append("      (the module reported a change but no diff)")
    unverified = [t for t in tasks if t.unverified]
    if unverified:
        lines += ["", f"{host}: {len(unverified)} unverified task(s), check mode could not evaluate them"]
        lines += [f"  ? {task_line(t)}: {t.reason or t.note}" for t in unverified]
    executed = [t for t in tasks if t.executed]
    if executed:
        lines += ["", f"{host}: {len(executed)} task(s) ran for real during the check (check_mode: false)"]
        lines += [
            f"  ! {task_line(t)}{' changed the host' if t.status == TaskStatus.CHANGED else ''}" for t in executed
        ]
    return lines


def task_line(task: TaskView | TaskResult) -> str:
    """`name (action)` with what else is known: cause, flapping, accepted, executed."""
    marks = [f"cause: {task.cause}"] if task.cause else []
    marks += ["flapping: not idempotent"] if task.flapping else []
    marks += ["accepted"] if task.accepted else []
    return f"{task.task} ({task.action})" + (f" [{', '.join(marks)}]" if marks else "")


def _run_header(run: RunView, colour: bool) -> str:
    revision = (run.revision_sha or "-")[:12]
    took = duration(run.started_at, run.finished_at)
    text = f"run {run.id}: {run.kind} at {revision}, {paint(run.status, colour)} in {took}"
    return text + (f" ({run.error})" if run.error else "")


# --- status / runs / show -----------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--diff", "show_diff", is_flag=True, help="print the diff of each drifted task")
@click.pass_context
@_guard
def status(ctx: click.Context, as_json: bool, show_diff: bool) -> None:
    """Every host with its status, last check and drifted tasks; the data directory's kept Ansible processes."""
    from fleet import shapes, warm
    from fleet.store import queries

    settings = _settings(ctx)
    with _store(settings):
        hosts = queries.inventory_hosts()
        drift = queries.verdict_tasks(hosts)
        kept = warm.kept_processes(str(settings.data_dir))
        if as_json:
            click.echo(
                json.dumps(
                    {"hosts": [shapes.host_json(h, drift.get(h.name, [])) for h in hosts], "kept_processes": kept},
                    indent=2,
                )
            )
            return
        if not hosts:
            click.echo("no hosts yet: run `fleet check` to read the inventory and check them")
            _echo_kept(kept, settings)
            return
        colour = use_colour()
        rows = [
            [
                h.name,
                h.status,
                " ".join(h.group_list),
                when(h.last_check_at),
                str(h.drifted_tasks),
                str(h.coverage),
                h.os or "-",
                h.message[:80],
            ]
            for h in hosts
        ]
        click.echo(
            table(
                ["HOST", "STATUS", "GROUPS", "LAST CHECK", "DRIFTED", "COVERAGE", "OS", "MESSAGE"],
                rows,
                colour,
                status_column=1,
            )
        )
        for host in hosts:
            for task in drift.get(host.name, []):
                click.echo(f"{host.name}: {task_line(task)}")
                if show_diff and task.diff:
                    click.echo(indent(colour_diff(task.diff, colour)))
        _echo_kept(kept, settings)


def _echo_kept(kept: list[dict[str, Any]], settings: Settings) -> None:
    if not settings.warm_ansible:
        click.echo("\nkept Ansible processes: off (FLEET_WARM_ANSIBLE=false): each run starts ansible-playbook")
        return
    if not kept:
        click.echo("\nkept Ansible processes: none (the next run starts one and goes cold)")
        return
    click.echo(f"\nkept Ansible processes ({len(kept)}):")
    for entry in kept:
        click.echo(f"  {kept_process_line(entry)}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--kind", type=click.Choice([kind.value for kind in RUN_KINDS]))
@click.option("--status", "status_filter")
@click.option("--host", help="only runs that touched this host")
@click.option("--before", type=int, help="show runs older than this run id (next page)")
@click.option("--count", type=click.IntRange(1, 500), default=20, show_default=True)
@click.pass_context
@_guard
def runs(
    ctx: click.Context,
    as_json: bool,
    kind: str | None,
    status_filter: str | None,
    host: str | None,
    before: int | None,
    count: int,
) -> None:
    """Run history, newest first."""
    from fleet import jobs, shapes
    from fleet.store import queries

    settings = _settings(ctx)
    with _store(settings):
        jobs.close_lapsed_runs(settings)  # so a run whose process was killed shows `interrupted`, not `running`
        page = queries.runs_page(kind=kind, status=status_filter, host=host, before=before, size=count)
        if as_json:
            click.echo(
                json.dumps({"runs": [shapes.run_summary_json(r) for r in page], "next": page.cursor()}, indent=2)
            )
            return
        rows = [
            [
                str(r.id),
                r.kind,
                r.trigger,
                r.status,
                (r.revision_sha or "-")[:12],
                f"{r.hosts_in_sync}/{r.hosts_drifted}/{r.hosts_unreachable}/{r.hosts_failed}",
                when(r.started_at),
                duration(r.started_at, r.finished_at),
            ]
            for r in page
        ]
        click.echo(
            table(
                ["ID", "KIND", "TRIGGER", "STATUS", "REVISION", "SYNC/DRIFT/UNREACH/FAIL", "STARTED", "TOOK"],
                rows,
                use_colour(),
                status_column=3,
            )
        )
        if page.more:
            click.echo(f"older: fleet runs --before {page.cursor()}")


@main.command()
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.option("--stdout", "with_stdout", is_flag=True, help="also print Ansible's full output")
@click.pass_context
@_guard
def show(ctx: click.Context, run_id: int, as_json: bool, with_stdout: bool) -> None:
    """One run with its hosts, tasks and diffs."""
    from fleet import shapes
    from fleet.store import queries
    from fleet.store import workers as worker_store

    settings = _settings(ctx)
    with _store(settings):
        if as_json:
            click.echo(json.dumps(_show_json(run_id), indent=2))
            return
        run = queries.get_run(run_id)
        hosts = queries.run_hosts(run_id)
        tasks = queries.run_tasks(run_id)
        colour = use_colour()
        click.echo(_run_header(run, colour))
        click.echo(
            f"trigger {run.trigger}, by {run.requested_by or '-'}, limit {run.limit or 'all'}, "
            f"started {when(run.started_at)}"
        )
        click.echo(f"ansible: {run.strategy or '-'}, {shapes.ansible_path_line(run.ansible_path)}")
        for shard in worker_store.shards_of_run(run_id):
            if shard.ansible_path:
                click.echo(
                    f"  shard {shard.index} on {shard.worker or '-'}: {shapes.ansible_path_line(shard.ansible_path)}"
                )
        click.echo("")
        rows = [
            [
                h.host,
                h.status,
                str(h.ok),
                str(h.changed),
                str(h.failed),
                str(h.skipped),
                str(h.unverified),
                h.message[:80],
            ]
            for h in hosts
        ]
        click.echo(
            table(
                ["HOST", "STATUS", "OK", "CHANGED", "FAILED", "SKIPPED", "UNVERIFIED", "MESSAGE"],
                rows,
                colour,
                status_column=1,
            )
        )
        for host in hosts:
            click.echo(f"\n{host.host}:")
            for task in (t for t in tasks if t.host == host.host):
                flag = " (unverified)" if task.unverified else " (executed in check)" if task.executed else ""
                detail = task.reason or (task.note if task.status != "ok" else "")
                note = f" — {detail}" if detail else ""
                click.echo(f"  {paint(task.status, colour)}{flag}  {task_line(task)}{note}")
                if task.diff and task.status == TaskStatus.CHANGED:
                    click.echo(indent(colour_diff(task.diff, colour), "      "))
        if with_stdout:  # streamed from the store a batch of chunks at a time, never built as one string
            click.echo("")
            for piece in queries.iter_run_stdout(run_id):
                click.echo(piece, nl=False)
            click.echo("")


def _show_json(run_id: int) -> dict[str, Any]:
    """The run's shared JSON shape, plus every task of each host and the full output."""
    from fleet import shapes
    from fleet.store import queries
    from fleet.store import workers as worker_store

    run = queries.get_run(run_id)
    tasks = queries.run_tasks(run_id)
    data = shapes.run_report_json(run, queries.run_verdicts(run_id))
    for host in data["hosts"]:
        host["tasks"] = [shapes.task_json(t) for t in tasks if t.host == host["name"]]
    data["shards"] = [shapes.shard_json(shard) for shard in worker_store.shards_of_run(run_id)]  # each one's path
    data["stdout"] = queries.run_stdout(run_id)
    return data


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def revisions(ctx: click.Context, as_json: bool) -> None:
    """Fetched commits with their validation result; marks the desired one."""
    from fleet import shapes, source
    from fleet.store import queries

    settings = _settings(ctx)
    with _store(settings):
        state = queries.source_state()
        desired = state.desired_sha if state else None
        listed = queries.revisions_page().items
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "source": shapes.source_json(state, source.display_url(settings.repo)),
                        "revisions": [shapes.revision_json(r, desired) for r in listed],
                    },
                    indent=2,
                )
            )
            return
        rows = [
            [
                ("* " if r.sha == desired else "  ") + r.sha[:12],
                r.status,
                r.signature,
                when(r.authored_at),
                ("[history rewritten] " if r.rewrites_history else "")
                + (r.message.splitlines()[0][:50] if r.message else ""),
            ]
            for r in listed
        ]
        click.echo(table(["  REVISION", "STATUS", "SIGNATURE", "AUTHORED", "MESSAGE"], rows, use_colour(), 1))
        for revision in (r for r in listed if r.status == "rejected"):
            click.echo(f"\n{revision.sha[:12]} rejected:\n{indent(revision.error)}")
        if state and state.stale:
            click.echo(f"\nthe source is stale: {state.last_error}")


# --- retention -------------------------------------------------------------------


@main.command()
@click.option("--dry-run", is_flag=True, help="only say what would be pruned (counts and bytes)")
@click.option(
    "--days",
    type=click.IntRange(1, None),
    help="keep this many days of runs (default: retention.days of fleet.yml, else 90)",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def prune(ctx: click.Context, dry_run: bool, days: int | None, as_json: bool) -> None:
    """Forget runs, audit entries and revision exports past the retention; each host's last runs stay."""
    import dataclasses

    from fleet.controller import current_policy
    from fleet.store import retention
    from fleet.vocabulary import utcnow

    settings = _settings(ctx)
    with _store(settings):
        keep = current_policy(settings).retention
        keep = dataclasses.replace(keep, days=days) if days else keep
        report = retention.prune(settings, keep, utcnow(), dry_run=dry_run, actor=_who())
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.describe())


# --- controller ---------------------------------------------------------------


@main.command()
@click.option("--bind", help="address:port of the web UI and API (FLEET_BIND)")
@click.option("--poll-interval", type=int, help="seconds between git fetches (FLEET_POLL_INTERVAL)")
@click.pass_context
@_guard
def serve(ctx: click.Context, bind: str | None, poll_interval: int | None) -> None:
    """Controller (git watch, schedule, policy, queue) and web UI in one process."""
    from fleet.serve import run_service

    ctx.obj["flags"].update(bind=bind, poll_interval=poll_interval)
    run_service(_settings(ctx), with_web=True)


@main.command()
@click.option("--poll-interval", type=int, help="seconds between git fetches (FLEET_POLL_INTERVAL)")
@click.pass_context
@_guard
def controller(ctx: click.Context, poll_interval: int | None) -> None:
    """The controller alone, without the web UI."""
    from fleet.serve import run_service

    ctx.obj["flags"].update(poll_interval=poll_interval)
    run_service(_settings(ctx), with_web=False)


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="shards run at once (one per core is a good start: Ansible's controller side is CPU-bound)",
)
@click.option("--queues", default="fleet", show_default=True, help="comma-separated Celery queues to consume")
@click.option(
    "--name", default="", help="this worker's name (default fleet@HOSTNAME; give each worker on one machine its own)"
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
@_guard
def worker(ctx: click.Context, concurrency: int, queues: str, name: str, loglevel: str) -> None:
    """Execute shards of runs for a controller with FLEET_EXECUTOR=celery (FLEET_BROKER_URL, shared store)."""
    from fleet.executor.worker import start_worker
    from fleet.serve import configure_logging

    configure_logging()
    start_worker(
        _settings(ctx),
        name=name,
        concurrency=concurrency,
        queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
        loglevel=loglevel,
    )


@main.command()
@click.argument("kind", type=click.Choice([kind.value for kind in RUN_KINDS]))
@click.option("--limit", help="Ansible host pattern")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def request(ctx: click.Context, kind: str, limit: str | None, as_json: bool) -> None:
    """Queue a check or converge for the controller (joins an identical queued check)."""
    from fleet import actions, shapes

    settings = _settings(ctx)
    with _store(settings):
        requested = actions.request_run(_actor(), kind, limit or "")
        run, joined = requested.run, requested.joined
        if as_json:
            click.echo(json.dumps({"run": shapes.run_json(run), "joined": joined}))
        else:
            click.echo(f"run {run.id} {'already queued; joined it' if joined else 'queued'}")


CANCEL_WAIT_SECONDS = 60


@main.command()
@click.argument("run_id", type=int)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help=f"wait (up to {CANCEL_WAIT_SECONDS}s) until the run has stopped",
)
@click.pass_context
@_guard
def cancel(ctx: click.Context, run_id: int, wait: bool) -> None:
    """Stop a queued or running run, whoever runs it (the controller or a `fleet check`); partial results are kept."""
    from fleet import actions, jobs

    settings = _settings(ctx)
    with _store(settings):
        jobs.close_lapsed_runs(settings)  # a run whose process died is closed now, not canceled
        actions.cancel_run(_actor(), run_id)
        click.echo(_cancel_outcome(run_id, _wait_for_end(settings, run_id) if wait else None))


def _wait_for_end(settings: Settings, run_id: int) -> RunView | None:
    """The run once it has stopped (the process running it polls the cancel flag every second); None if it
    has not within CANCEL_WAIT_SECONDS."""
    import time

    from fleet import jobs
    from fleet.store import queries, records

    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while time.monotonic() < deadline:
        records.discard_pending()  # end the last read, so this one sees the run as it is now
        jobs.close_lapsed_runs(settings)  # its process may die meanwhile
        run = queries.get_run(run_id)
        if not is_active(run.status):
            return run
        time.sleep(0.5)
    return None


def _cancel_outcome(run_id: int, ended: RunView | None) -> str:
    if ended is None:
        return f"run {run_id}: cancel requested; `fleet runs` shows when it has stopped"
    return f"run {run_id}: {ended.status}" + (f" ({ended.error})" if ended.error else "")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def approvals(ctx: click.Context, as_json: bool) -> None:
    """What waits for an operator, newest first: drift in `approve` groups, auto converges that could roll a
    host back, rollouts held by an inventory jump (WHY says which)."""
    from fleet import shapes
    from fleet.store import queries

    settings = _settings(ctx)
    with _store(settings):
        listed = queries.approvals_page().items
        if as_json:
            click.echo(json.dumps({"approvals": [shapes.approval_json(a) for a in listed]}, indent=2))
            return
        rows = [
            [
                str(a.id),
                a.host or "(every auto host)",
                a.status,
                str(a.check_run_id),
                a.revision_sha[:12],
                "" if a.kind == ApprovalKind.INVENTORY else a.summary[:60],
                a.reason,
                a.note[:60],
            ]
            for a in listed
        ]
        click.echo(
            table(
                ["ID", "HOST", "STATUS", "CHECK RUN", "REVISION", "DRIFT", "WHY", "NOTE"],
                rows,
                use_colour(),
                status_column=2,
            )
        )


@main.command()
@click.argument("approval_id", type=int)
@click.pass_context
@_guard
def approve(ctx: click.Context, approval_id: int) -> None:
    """Approve converging exactly the drift an approval shows at its revision (re-checked first), or the
    rollout an inventory jump held."""
    from fleet import actions, shapes

    settings = _settings(ctx)
    with _store(settings):
        approval = actions.approve(_actor(), approval_id)
        click.echo(shapes.approved_message(approval))


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def notifications(ctx: click.Context, as_json: bool) -> None:
    """Each notify: target (its URL masked): messages sent, held back by the rate limit, the last error."""
    from fleet.store import notices

    settings = _settings(ctx)
    with _store(settings):
        listed = notices.targets()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "targets": [
                        {
                            "target": t.display,
                            "sent": t.sent_total,
                            "held": t.folded,
                            "last_sent_at": iso(t.last_sent_at),
                            "last_error": t.last_error or None,
                            "last_error_at": iso(t.last_error_at),
                        }
                        for t in listed
                    ]
                },
                indent=2,
            )
        )
        return
    rows = [
        [
            t.display,
            str(t.sent_total),
            str(t.folded),
            iso(t.last_sent_at) or "never",
            f"{iso(t.last_error_at)}: {t.last_error}" if t.last_error else "",
        ]
        for t in listed
    ]
    click.echo(
        table(["TARGET", "SENT", "HELD", "LAST SENT", "LAST ERROR"], rows, use_colour())
        if rows
        else "no notification sent yet (notify: in fleet.yml names the targets)"
    )


# --- accounts -------------------------------------------------------------------


@main.group()
def user() -> None:
    """Accounts of the web UI."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--generate", is_flag=True, help="generate a password and print it once")
@click.pass_context
@_guard
def user_add(ctx: click.Context, name: str, role: str, password_stdin: bool, generate: bool) -> None:
    """Create an account (or reset its password and role)."""
    from fleet import actions
    from fleet.store import accounts

    settings = _settings(ctx)
    if generate:
        password = accounts.generate_password()
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _store(settings):
        actions.add_user(_actor(), name, password, role, replace=True)
    click.echo(f"user {name} ({role}) saved")
    if generate:
        click.echo(f"password (shown once): {password}")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the new password from standard input")
@click.pass_context
@_guard
def user_passwd(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Set a user's password; every session they have is logged out."""
    from fleet import actions

    settings = _settings(ctx)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    with _store(settings):
        actions.change_password(_actor(), name, password, "with the CLI")
    click.echo(f"password of {name} changed; their sessions are logged out")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--role", type=click.Choice(ROLES), help="only this role")
@click.pass_context
@_guard
def user_list(ctx: click.Context, as_json: bool, role: str | None) -> None:
    """Accounts, with their roles; exit 1 when none matches (scripts can test for an admin)."""
    from fleet.store import accounts

    settings = _settings(ctx)
    with _store(settings):
        users = [u for u in accounts.list_users() if not role or u.role == role]
        if as_json:
            click.echo(
                json.dumps(
                    {"users": [{"name": u.name, "role": u.role, "disabled": u.disabled} for u in users]}, indent=2
                )
            )
        else:
            click.echo(
                table(["NAME", "ROLE", "DISABLED"], [[u.name, u.role, "yes" if u.disabled else ""] for u in users])
            )
    if not any(not u.disabled for u in users):
        sys.exit(1)


@main.group()
def token() -> None:
    """API tokens for scripts (Authorization: Bearer ...)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option(
    "--user",
    "owner",
    help="the user it acts for: never above their role, dead when they are "
    "disabled (default: none, a machine token of this CLI)",
)
@click.option("--expires", help="lifetime, like 30d, 12h or 1d12h (default: never)")
@click.pass_context
@_guard
def token_create(ctx: click.Context, name: str, role: str, owner: str | None, expires: str | None) -> None:
    """Create a token; it is printed alone on the last line and cannot be shown again."""
    from fleet import actions
    from fleet.store import accounts

    settings = _settings(ctx)
    accounts.parse_expiry(expires)  # a bad lifetime is refused before the store is opened
    with _store(settings):
        secret = actions.create_token(_actor(), name, role, owner, expires)
    click.echo(f"token {name} ({role}) created; store it now, fleet keeps only its hash:")
    click.echo(secret)


@token.command("revoke")
@click.argument("name")
@click.pass_context
@_guard
def token_revoke(ctx: click.Context, name: str) -> None:
    """Revoke a token."""
    from fleet import actions

    settings = _settings(ctx)
    with _store(settings):
        actions.revoke_token(_actor(), name)
    click.echo(f"token {name} revoked")


# --- audit ------------------------------------------------------------------


@main.command("audit")
@click.option("--json", "as_json", is_flag=True)
@click.option("--before", type=int, help="show entries older than this id (next page)")
@click.option("--count", type=click.IntRange(1, 500), default=50, show_default=True)
@click.pass_context
@_guard
def audit_log(ctx: click.Context, as_json: bool, before: int | None, count: int) -> None:
    """Who changed what, from the UI, the API and this command, newest first."""
    from fleet.store import accounts

    settings = _settings(ctx)
    with _store(settings):
        page = accounts.audit_page(before, count)
        if as_json:
            click.echo(json.dumps({"entries": [audit_entry_json(e) for e in page], "next": page.cursor()}, indent=2))
            return
        rows = [
            [str(e.id), when(e.at), e.actor, e.action, e.target or "-", e.detail[:80], e.remote_addr or "-"]
            for e in page
        ]
        click.echo(table(["ID", "WHEN", "WHO", "ACTION", "TARGET", "DETAIL", "FROM"], rows, use_colour()))
        if page.more:
            click.echo(f"older: fleet audit --before {page.cursor()}")


def audit_entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
        "remote_addr": entry.remote_addr,
    }


# --- hosts ------------------------------------------------------------------


@main.group()
def hosts() -> None:
    """Host maintenance."""


@hosts.command("accept-key")
@click.argument("name")
@click.option(
    "--jump",
    default="",
    metavar="JUMP_HOST",
    help="accept the key of this jump host on NAME's way (its address, as the probe's message names it)",
)
@click.pass_context
@_guard
def accept_key(ctx: click.Context, name: str, jump: str) -> None:
    """Trust the SSH host key NAME (or its jump host) offers now (after you checked why it changed)."""
    from fleet import actions

    settings = _settings(ctx)
    with _store(settings):
        probe = actions.accept_host_key(_actor(), settings, name, jump)
        click.echo(f"{jump or name}: now trusting host key {probe.fingerprint}")


@hosts.command("release")
@click.argument("name")
@click.pass_context
@_guard
def release_host(ctx: click.Context, name: str) -> None:
    """Free NAME's lock kept by a stopped run whose work there could not be confirmed ended (check the host
    first: what that run started may still run there); the next run may then take it."""
    from fleet import actions

    settings = _settings(ctx)
    with _store(settings):
        kept = actions.release_host(_actor(), name)
        click.echo(f"{name}: released the lock kept by run {kept.run_id} ({kept.reason})")


# --- lab --------------------------------------------------------------------


@main.group("lab")
def lab_group() -> None:
    """Throwaway SSH test hosts on this machine (Linux, root)."""


@lab_group.command("up")
@click.option("--hosts", "count", type=int, default=4, show_default=True, help="how many hosts")
@click.option(
    "--subnet",
    type=int,
    default=LAB_DEFAULT_SUBNET,
    show_default=True,
    help="web hosts get 127.0.SUBNET.x, db hosts 127.0.SUBNET+1.x",
)
@click.option(
    "--jump", is_flag=True, help="put a bastion (127.0.SUBNET.254) before the hosts: they are reached through it only"
)
@click.pass_context
@_guard
def lab_up(ctx: click.Context, count: int, subnet: int, jump: bool) -> None:
    """Start fresh lab hosts and write an inventory for them."""
    from fleet import hostkeys, lab

    settings = _settings(ctx)
    lab.ensure_lab_supported()
    identity = hostkeys.ensure_identity(settings.identity_path)
    started = lab.start_lab(
        settings.data_dir / "lab", count, settings.known_hosts_path, identity.with_suffix(".pub"), subnet, jump
    )
    with _store(settings):
        _store_lab_pins(settings, lab.pinned_addresses(started))
        _audit("lab.up", "lab", f"{len(started)} host(s) on subnet {subnet}")
    click.echo(table(["HOST", "GROUP", "ADDRESS"], [[h.name, h.group, h.address] for h in started]))
    click.echo(f"\ninventory: {settings.data_dir / 'lab' / 'hosts.yml'}")
    if jump:
        click.echo(
            f"the bastion's key is pinned in {settings.known_hosts_path}; the hosts behind it are named "
            f"<host>{lab.BEHIND_SUFFIX} and only it resolves them: fleet check pins their keys through it"
        )
    else:
        click.echo("host keys pinned in " + str(settings.known_hosts_path) + "; next: fleet check")


def _store_lab_pins(settings: Settings, addresses: list[str]) -> None:
    """The lab hosts' keys, which start_lab pinned in the file, go to the store too (every fleet process sharing
    it trusts them); an upgraded fleet's other pins in the file are adopted first, as before any probe."""
    from fleet.store import pins

    pins.adopt_file_pins(settings.known_hosts_path)
    for address in addresses:
        pins.replace_pins_from_file(settings.known_hosts_path, address, _who())
    pins.write_known_hosts(settings.known_hosts_path)


@lab_group.command("down")
@click.pass_context
@_guard
def lab_down(ctx: click.Context) -> None:
    """Stop every lab host."""
    from fleet import lab

    settings = _settings(ctx)
    stopped = lab.stop_lab(settings.data_dir / "lab")
    with _store(settings):
        _audit("lab.down", "lab", f"stopped {stopped} host(s)")
    click.echo(f"stopped {stopped} lab host(s)")


# --- workers ----------------------------------------------------------------


@main.command("workers")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
@_guard
def workers_list(ctx: click.Context, as_json: bool) -> None:
    """The `fleet worker` processes seen: state, version, capacity, running shards, last heartbeat."""
    from fleet import shapes
    from fleet.store import workers as worker_store

    with _store(_settings(ctx)):
        now = utcnow()
        seen = worker_store.list_workers(now, __version__)
    if as_json:
        click.echo(
            json.dumps({"version": __version__, "workers": [shapes.worker_json(w, now) for w in seen]}, indent=2)
        )
        return
    if not seen:
        click.echo(
            "no worker has reported yet: start one with `fleet worker` on a machine that shares this "
            "database (FLEET_EXECUTOR=celery and FLEET_BROKER_URL set on the controller and the workers)"
        )
        return
    click.echo(
        table(
            ["NAME", "STATE", "VERSION", "CAPACITY", "RUNNING", "HEARTBEAT", "QUEUES", "REFUSING"],
            [_worker_row(w, now) for w in seen],
            use_colour(),
            status_column=1,
        )
    )
    click.echo("")
    click.echo(_workers_summary(seen, __version__))


def _worker_row(worker: WorkerView, now: datetime) -> list[str]:
    version = worker.version if worker.version_ok else f"{worker.version or '?'} (differs)"
    return [
        worker.name,
        worker.state,
        version,
        str(worker.concurrency),
        str(worker.running),
        _age(worker.heartbeat_age(now)),
        ",".join(worker.queues) or "-",
        worker.refusing or "-",
    ]


def _age(seconds: float | None) -> str:
    """A heartbeat's age in the largest whole unit: '4s ago', '3m ago', '2h ago', 'never'."""
    if seconds is None:
        return "never"
    seconds = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _workers_summary(seen: list[WorkerView], version: str) -> str:
    """One line of totals, and what to do about workers that cannot take shards."""
    from fleet.store import workers as worker_store

    online = [w for w in seen if w.state == "online"]
    capacity = worker_store.capacity_of(seen)
    lines = [f"{len(online)} online, capacity {capacity} shard(s) at once (this fleet is {version})"]
    for worker in (w for w in online if not w.version_ok):
        lines.append(
            f"{worker.name} runs fleet {worker.version or '?'}, not {version}: it refuses shards; "
            f"install fleet {version} there and restart it"
        )
    lost = [w.name for w in seen if w.state == "lost"]
    if lost:
        lines.append(
            f"lost (no heartbeat for over {worker_store.WORKER_STALE_SECONDS} s): {', '.join(lost)}; "
            "their shards go to other workers: restart them, or ignore them"
        )
    return "\n".join(lines)


# --- db ---------------------------------------------------------------------


@main.group("db")
def db_group() -> None:
    """The database's schema: where it stands, and upgrading it (fleet serve upgrades at start too)."""


@db_group.command("upgrade")
@click.pass_context
@_guard
def db_upgrade(ctx: click.Context) -> None:
    """Bring the database to this fleet's schema (an empty one is created); exit 1 if it is newer."""
    from fleet.store.db import open_store

    settings = _settings(ctx)
    with open_store(settings) as store:
        change = store.schema
        if change.before is None:
            click.echo(f"database created at schema {change.after}")
        elif change.changed:
            _audit("db.upgrade", "database", f"from {change.before} to {change.after}")
            click.echo(f"database upgraded from {change.before} to {change.after}")
        else:
            click.echo(f"database already at schema {change.after} (newest)")


@db_group.command("current")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@_guard
def db_current(ctx: click.Context, as_json: bool) -> None:
    """The database's schema revision and this fleet's newest; changes nothing. Exit 1 if they differ."""
    from fleet.store.db import read_schema, sqlite_path

    settings = _settings(ctx)
    database = sqlite_path(settings.database_url)
    if database is not None and not database.exists():
        _fail(f"no database at {database} yet: fleet db upgrade (or any fleet command) creates it")
    current, head = read_schema(settings.database_url)
    if as_json:
        click.echo(json.dumps({"current": current, "head": head, "up_to_date": current == head}))
    elif current is None:
        click.echo(
            f"no schema revision recorded (a database from before migrations, or empty); newest {head}: "
            "fleet db upgrade"
        )
    else:
        note = "up to date" if current == head else "fleet db upgrade brings it there"
        click.echo(f"schema {current}; newest {head}: {note}")
    if current != head:
        sys.exit(1)


if __name__ == "__main__":
    main()
