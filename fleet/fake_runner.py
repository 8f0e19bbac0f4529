"""A Runner that starts no Ansible: it replays recorded events, for tests.

The idea of httpx's MockTransport: the code under test keeps its real path
(jobs, drift, the store) and only the boundary is swapped. Give it the
events of a real run (tests/unit/fixtures/truth_check.json is one, recorded
by tests/integration/truth/record_events.py), or a small stream made by
`scripted_events`, and the hosts its inventory lists; it can also play a
host that does not answer, a run that hangs until it is stopped, and a
crash mid-stream. For runs that must differ (a check, then a converge, then
the verifying check), give `events` a function of the JobSpec instead.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import SourceError
from fleet.hostkeys import Probe
from fleet.runner import CancelFn, EventFn, InventoryHost, JobSpec, RunnerOutcome
from fleet.vocabulary import covers

HANG_LIMIT = 60  # seconds a hanging fake waits to be stopped before it fails the test
CANCELED_RC = 254  # what ansible-runner reports for a stopped run
# playbook_on_stats fields keyed by host name; a limited run reports only its own hosts there
_STATS_BY_HOST = ("changed", "dark", "failures", "ignored", "ok", "processed", "rescued", "skipped")
_OUTCOME_EVENTS = {
    "ok": "runner_on_ok",
    "changed": "runner_on_ok",
    "failed": "runner_on_failed",
    "unreachable": "runner_on_unreachable",
}


def load_events(path: Path) -> list[dict[str, Any]]:
    """A recorded event stream (a JSON list of ansible-runner events)."""
    events: list[dict[str, Any]] = json.loads(path.read_text())
    return events


def hosts_of(events: Sequence[dict[str, Any]], groups: tuple[str, ...] = ()) -> list[InventoryHost]:
    """An inventory for a recording: every host its events name, on loopback addresses."""
    names = sorted({e.get("event_data", {}).get("host") for e in events} - {None, ""})
    return [InventoryHost(name, f"127.0.99.{i + 1}", 22, groups) for i, name in enumerate(names)]


def scripted_events(outcomes: Mapping[str, str], task: str = "Write the motd") -> list[dict[str, Any]]:
    """A run of one file task whose result per host is `ok`, `changed`, `failed` or `unreachable`, and its recap."""
    hosts = sorted(outcomes)
    results = [_result_event(counter, host, outcomes[host], task) for counter, host in enumerate(hosts, start=2)]
    stats = {
        "processed": {h: 1 for h in hosts},
        "failures": {h: 1 for h in hosts if outcomes[h] == "failed"},
        "dark": {h: 1 for h in hosts if outcomes[h] == "unreachable"},
    }
    return [
        {"event": "playbook_on_play_start", "counter": 1, "event_data": {"play_uuid": "scripted-play"}},
        *results,
        {"event": "playbook_on_stats", "counter": len(hosts) + 2, "event_data": stats},
    ]


def _result_event(counter: int, host: str, outcome: str, task: str) -> dict[str, Any]:
    res = {"changed": outcome == "changed", "msg": "" if outcome in ("ok", "changed") else f"{outcome} (scripted)"}
    if outcome == "changed":
        res["diff"] = [{"before_header": "/etc/motd", "before": "old\n", "after_header": "/etc/motd", "after": "new\n"}]
    data = {
        "host": host,
        "task": task,
        "task_action": "ansible.builtin.copy",
        "resolved_action": "ansible.builtin.copy",
        "task_uuid": f"scripted-{task}",
        "task_path": "playbooks/site.yml:1",
        "play_uuid": "scripted-play",
        "res": res,
    }
    return {"event": _OUTCOME_EVENTS[outcome], "counter": counter, "event_data": data}


@dataclass(eq=False)  # compared by identity: jobs caches inventory listings per runner
class FakeRunner:
    """Replays `events` as a run's stream; `hosts` is its inventory. Records the specs it was given."""

    events: Sequence[dict[str, Any]] | Callable[[JobSpec], Sequence[dict[str, Any]]] = ()
    hosts: Sequence[InventoryHost] = ()
    unreachable: frozenset[str] = frozenset()  # hosts whose pre-flight probe fails
    syntax_error: str = ""  # what the syntax check reports ('' passes)
    inventory_error: str = ""  # when set, the inventory does not parse
    requirements_error: str = ""  # when set, installing the revision's requirements fails with it
    installs: list[Path] = field(default_factory=list)  # every tree whose requirements were installed
    status: str = "successful"  # how a run that reaches its end finishes
    hang_after: int | None = None  # after this many events (fewer than the stream has), wait to be stopped
    crash_after: int | None = None  # after this many events (fewer than the stream has), raise `crash`
    crash: BaseException = field(default_factory=lambda: RuntimeError("the fake runner crashed"))
    jobs: list[JobSpec] = field(default_factory=list)  # every spec run_job was given
    job_hosts: list[frozenset[str] | None] = field(default_factory=list)  # the hosts each job was limited to
    listings: list[str | None] = field(default_factory=list)  # the limit of every inventory listing asked for
    unconfirmed: Mapping[str, str] = field(default_factory=dict)  # host -> why a stop cannot confirm its end there
    remote_stops: list[tuple[frozenset[str], frozenset[str]]] = field(default_factory=list)  # (hosts, touched)

    def list_inventory(self, tree: Path, inventory: str, limit: str | None = None) -> list[InventoryHost]:
        self.listings.append(limit)
        if self.inventory_error:
            raise SourceError(f"inventory does not parse: {self.inventory_error}")
        # Shell-style names and groups (fleet.vocabulary.covers), not all of Ansible's patterns.
        return [h for h in self.hosts if limit is None or covers(limit, h.name, h.groups)]

    def syntax_problem(self, tree: Path, playbook: str, inventory: str) -> str:
        return f"playbook syntax check failed: {self.syntax_error}" if self.syntax_error else ""

    def install_requirements(self, tree: Path) -> str:
        self.installs.append(tree)
        return self.requirements_error

    def probe_hosts(self, hosts: list[InventoryHost]) -> dict[str, Probe]:
        return {
            h.name: Probe(h.name, "unreachable", f"cannot connect to {h.address}:{h.port} (fake)")
            if h.name in self.unreachable
            else Probe(h.name, "ok")
            for h in hosts
        }

    def stop_remote_work(
        self,
        hosts: list[InventoryHost],
        touched: set[str],
        spec: JobSpec | None = None,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> dict[str, Any]:
        from fleet.remote_stop import HostStop

        self.remote_stops.append((frozenset(h.name for h in hosts), frozenset(touched)))
        # As the real one: a host the run never started a task on holds nothing of it.
        return {
            h.name: HostStop(h.name, False, self.unconfirmed[h.name])
            if h.name in self.unconfirmed.keys() & touched
            else HostStop(h.name, True, "stopped (fake)")
            for h in hosts
        }

    def run_job(self, spec: JobSpec, on_event: EventFn, should_cancel: CancelFn = lambda: False) -> RunnerOutcome:
        limited = frozenset(spec.limit_file.read_text().split()) if spec.limit_file else None
        self.jobs.append(spec)
        self.job_hosts.append(limited)
        for count, event in enumerate(self._stream(spec, limited)):
            if should_cancel():
                return RunnerOutcome("canceled", CANCELED_RC)
            if count == self.crash_after:
                raise self.crash
            if count == self.hang_after:
                return _hang(should_cancel)
            # Fresh dicts each time, as from ansible-runner, so no run can change the recording.
            on_event(copy.deepcopy(event))
        return RunnerOutcome(self.status, 0 if self.status == "successful" else 2)

    def _stream(self, spec: JobSpec, limited: frozenset[str] | None) -> list[dict[str, Any]]:
        """The events of the hosts the run is limited to, as Ansible would send them."""
        events = self.events(spec) if callable(self.events) else self.events
        if limited is None:
            return list(events)
        return [_only_hosts(e, limited) for e in events if e.get("event_data", {}).get("host") in limited | {None, ""}]


def _only_hosts(event: dict[str, Any], hosts: frozenset[str]) -> dict[str, Any]:
    if event.get("event") != "playbook_on_stats":
        return event
    data = {
        key: ({h: n for h, n in value.items() if h in hosts} if key in _STATS_BY_HOST else value)
        for key, value in event.get("event_data", {}).items()
    }
    return {**event, "event_data": data}


def _hang(should_cancel: CancelFn) -> RunnerOutcome:
    """Stay silent, as a stuck ansible-playbook does, until stopped."""
    deadline = time.monotonic() + HANG_LIMIT
    while time.monotonic() < deadline:
        if should_cancel():
            return RunnerOutcome("canceled", CANCELED_RC)
        time.sleep(0.01)
    raise AssertionError(f"the fake runner hung for {HANG_LIMIT}s and nothing stopped it")
