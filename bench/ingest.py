"""Sustained events per second into the SQLite store, through the real recording path."""

from __future__ import annotations

import time
from pathlib import Path

from fleet.drift import DriftTracker
from fleet.settings import load_settings
from fleet.store import records

EVENTS = 200_000
HOSTS = 50


def synthetic_events(count: int):
    """A check run's event stream: task starts, then one result per host, with small diffs."""
    counter = 0
    task = 0
    while counter < count:
        task += 1
        counter += 1
        yield {"event": "playbook_on_task_start", "counter": counter, "stdout": f"TASK [role : task {task}] ***",
               "event_data": {"task": f"task {task}", "task_uuid": f"t{task}"}}
        for host in range(HOSTS):
            counter += 1
            changed = (task + host) % 7 == 0
            yield {"event": "runner_on_ok", "counter": counter, "stdout": f"ok: [host{host}]",
                   "event_data": {"host": f"host{host}", "task": f"task {task}", "task_uuid": f"t{task}",
                                  "resolved_action": "ansible.builtin.template", "duration": 0.01,
                                  "res": {"changed": changed, "dest": f"/etc/app/{task}.conf",
                                          "diff": [{"before": "a = 1\n", "after": "a = 2\n"}] if changed else []}}}


def measure(work: Path) -> dict:
    from fleet.web import create_app

    settings = load_settings(flags={"repo": str(work), "data_dir": str(work / "ingest")}, environ={}, cwd=work)
    app = create_app(settings)
    with app.app_context():
        run = records.create_run("check", "manual", "0" * 40, "", "bench", None)
        tracker = DriftTracker(check_mode=True)
        recorder = records.RunRecorder(run.id)
        started = time.perf_counter()
        for event in synthetic_events(EVENTS):
            recorder.add_output(event["counter"], event["stdout"])
            result = tracker.add(event)
            if result is not None:
                recorder.add_task(result)
        recorder.flush()
        records.finish_run(run, "successful", tracker.verdicts())
        elapsed = time.perf_counter() - started
    return {"events": EVENTS, "seconds": elapsed, "per_second": EVENTS / elapsed, "rows": recorder.rows_written}
