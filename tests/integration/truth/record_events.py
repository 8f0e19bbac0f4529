"""Record the events of a real check of the truth cases, for the unit tests of fleet.drift.

    .venv/bin/python tests/integration/truth/record_events.py     (as root: starts lab hosts)

It starts lab hosts on 127.0.24-25.x, converges the cases, makes each case's
hand change, runs one check in this process and keeps its events, trimmed
to what fleet.drift reads, in tests/unit/fixtures/truth_check.json. Run it
again when the callback's event shape changes; the unit tests then replay
the new recording.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(PROJECT))

from fleet import jobs  # noqa: E402
from fleet.settings import load_settings  # noqa: E402
from fleet.store.db import open_store  # noqa: E402
from tests.conftest import FleetCli  # noqa: E402
from tests.conftest import lab_ssh as ssh  # noqa: E402
from tests.integration.test_truth import SUBNET, TRUTH, build_source  # noqa: E402
from tests.truth_cases import CASES  # noqa: E402

FIXTURE = PROJECT / "tests" / "unit" / "fixtures" / "truth_check.json"
KEPT_EVENTS = {"playbook_on_play_start", "playbook_on_handler_task_start", "playbook_on_stats",
               "runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable"}
KEPT_DATA = ("host", "task", "task_action", "resolved_action", "task_uuid", "task_path", "res", "fleet",
             "ignore_errors", "play_uuid", "duration", "failures", "processed", "rescued", "ignored", "dark")


def trimmed(event: dict, tree: str) -> dict:
    data = {key: value for key, value in (event.get("event_data") or {}).items() if key in KEPT_DATA}
    if isinstance(data.get("res"), dict):
        data["res"] = {k: v for k, v in data["res"].items() if k != "invocation"}
    if "task_path" in data:
        data["task_path"] = data["task_path"].removeprefix(tree)
    if isinstance(data.get("fleet"), dict):  # the files and roles a task read, relative like its path
        data["fleet"] = {**data["fleet"], **{key: [str(p).removeprefix(tree) for p in data["fleet"][key]]
                                             for key in ("files", "roles") if key in data["fleet"]}}
    return {"event": event["event"], "counter": event.get("counter"), "event_data": data}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="fleet-truth-"))
    data_dir, source = root / "data", root / "source"
    shutil.copy(TRUTH / "vault-password", root / "vault-password")
    (root / "vault-password").chmod(0o600)  # fleet refuses a vault password file others can read
    env = {"FLEET_VAULT_PASSWORD_FILE": str(root / "vault-password")}
    cli = FleetCli(data_dir, source, root)
    assert cli("lab", "up", "--hosts", str(len(CASES) + 1), "--subnet", str(SUBNET)).code == 0
    try:
        addresses = build_source(data_dir, source)
        assert cli("converge", "--yes", env=env).code == 0
        for case in CASES:
            if case.hand_change:
                ssh(cli, addresses[case.host], case.hand_change)
        events = record_check(data_dir, source, root)
    finally:
        cli("lab", "down")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(events, indent=1, sort_keys=True) + "\n")
    print(f"{len(events)} events in {FIXTURE}")


def record_check(data_dir: Path, source: Path, root: Path) -> list[dict]:
    settings = load_settings(flags={"repo": str(source), "data_dir": str(data_dir),
                                    "vault_password_file": str(root / "vault-password")},
                             environ={}, cwd=root)
    seen: list[dict] = []
    with open_store(settings):
        report = jobs.execute_run(settings, "check", progress=lambda tracker, event: seen.append(event))
        tree = f"{jobs.source.export_path(settings, report.run.revision_sha)}/"
    return [trimmed(event, tree) for event in seen if event.get("event") in KEPT_EVENTS]


if __name__ == "__main__":
    main()
