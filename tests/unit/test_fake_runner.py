"""The project's fake Ansible boundary (fleet.fake_runner): what it replays must look like ansible-runner's
stream, limited to a run's hosts, and it must play the failures tests rely on (crash, hang, unreachable)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet.errors import SourceError
from fleet.fake_runner import CANCELED_RC, FakeRunner, hosts_of, load_events, scripted_events
from fleet.runner import InventoryHost, JobSpec

FIXTURE = Path(__file__).parent / "fixtures" / "truth_check.json"
OUTCOMES = {"web1": "ok", "web2": "changed", "db1": "failed", "db2": "unreachable"}


def spec(tmp_path: Path, limit: list[str] | None = None, kind: str = "check") -> JobSpec:
    limit_file = None
    if limit is not None:
        limit_file = tmp_path / "limit"
        limit_file.write_text("\n".join(limit) + "\n")
    return JobSpec(kind=kind, project_dir=tmp_path, playbook="playbooks/site.yml", inventory=tmp_path / "inv",
                   private_data_dir=tmp_path / "private", known_hosts=tmp_path / "known_hosts",
                   control_path_dir=tmp_path / "cp", limit_file=limit_file)


def play(runner: FakeRunner, job: JobSpec, should_cancel=lambda: False):
    seen = []
    outcome = runner.run_job(job, seen.append, should_cancel)
    return outcome, seen


def test_scripted_events_are_one_task_per_host_between_a_play_start_and_a_recap():
    events = scripted_events(OUTCOMES)
    assert [e["event"] for e in events] == ["playbook_on_play_start", "runner_on_failed", "runner_on_unreachable",
                                            "runner_on_ok", "runner_on_ok", "playbook_on_stats"]  # hosts sorted
    assert [e["counter"] for e in events] == list(range(1, 7))
    stats = events[-1]["event_data"]
    assert stats["failures"] == {"db1": 1} and stats["dark"] == {"db2": 1}
    assert set(stats["processed"]) == set(OUTCOMES)
    changed = next(e for e in events if e["event_data"].get("host") == "web2")["event_data"]["res"]
    assert changed["changed"] is True and changed["diff"][0]["after"] == "new\n"


def test_hosts_of_a_recording_are_every_host_it_names_once_on_loopback():
    hosts = hosts_of(scripted_events(OUTCOMES), groups=("lab",))
    assert [h.name for h in hosts] == ["db1", "db2", "web1", "web2"]
    assert len({h.address for h in hosts}) == 4 and all(h.address.startswith("127.0.99.") for h in hosts)
    assert all(h.groups == ("lab",) and h.port == 22 for h in hosts)
    recorded = load_events(FIXTURE)
    assert {h.name for h in hosts_of(recorded)} == {e["event_data"]["host"] for e in recorded
                                                    if e.get("event_data", {}).get("host")}


def test_the_inventory_listing_follows_the_limit_and_is_recorded(tmp_path):
    runner = FakeRunner(hosts=[InventoryHost("web1", "a", 22, ("web",)), InventoryHost("db1", "b", 22, ("db",))])
    assert [h.name for h in runner.list_inventory(tmp_path, "inv")] == ["web1", "db1"]
    assert [h.name for h in runner.list_inventory(tmp_path, "inv", "web")] == ["web1"]  # a group name
    assert [h.name for h in runner.list_inventory(tmp_path, "inv", "db*")] == ["db1"]  # a shell pattern
    assert runner.listings == [None, "web", "db*"]
    broken = FakeRunner(inventory_error="line 3: bad indentation")
    with pytest.raises(SourceError, match="inventory does not parse: line 3"):
        broken.list_inventory(tmp_path, "inv")


def test_a_run_replays_every_event_as_a_fresh_copy(tmp_path):
    events = scripted_events(OUTCOMES)
    runner = FakeRunner(events=events)
    outcome, seen = play(runner, spec(tmp_path))
    assert (outcome.status, outcome.rc) == ("successful", 0)
    assert seen == events and seen[1] is not events[1]
    seen[1]["event_data"]["host"] = "changed by the run"
    assert play(runner, spec(tmp_path))[1] == scripted_events(OUTCOMES)  # the recording is untouched
    assert len(runner.jobs) == 2 and runner.job_hosts == [None, None]


def test_a_limited_run_sees_only_its_hosts_and_a_recap_of_them(tmp_path):
    runner = FakeRunner(events=scripted_events(OUTCOMES))
    _, seen = play(runner, spec(tmp_path, limit=["web2", "db1"]))
    assert {e["event_data"].get("host") for e in seen} == {None, "web2", "db1"}
    stats = seen[-1]["event_data"]
    assert set(stats["processed"]) == {"web2", "db1"} and stats["dark"] == {}
    assert runner.job_hosts == [frozenset({"web2", "db1"})]


def test_a_stream_can_depend_on_the_job(tmp_path):
    runner = FakeRunner(events=lambda job: scripted_events({"web1": "changed" if job.kind == "check" else "ok"}))
    _, checked = play(runner, spec(tmp_path, kind="check"))
    _, converged = play(runner, spec(tmp_path, kind="converge"))
    assert checked[1]["event_data"]["res"]["changed"] is True
    assert converged[1]["event_data"]["res"]["changed"] is False


def test_a_run_ends_as_told_is_stopped_when_asked_and_crashes_where_told(tmp_path):
    events = scripted_events(OUTCOMES)
    assert play(FakeRunner(events=events, status="failed"), spec(tmp_path))[0].rc == 2
    asked = iter([False, False, True])
    outcome, seen = play(FakeRunner(events=events), spec(tmp_path), lambda: next(asked))
    assert (outcome.status, outcome.rc, len(seen)) == ("canceled", CANCELED_RC, 2)
    crashing = FakeRunner(events=events, crash_after=3, crash=OSError("pty closed"))
    seen = []
    with pytest.raises(OSError, match="pty closed"):
        crashing.run_job(spec(tmp_path), seen.append)
    assert len(seen) == 3


def test_a_hanging_run_stays_silent_until_it_is_stopped(tmp_path):
    stop_at = time.monotonic() + 0.3
    outcome, seen = play(FakeRunner(events=scripted_events(OUTCOMES), hang_after=1), spec(tmp_path),
                         lambda: time.monotonic() >= stop_at)
    assert outcome.status == "canceled" and len(seen) == 1
    assert time.monotonic() >= stop_at


def test_probes_and_remote_stops_play_unreachable_and_unconfirmed_hosts(tmp_path):
    hosts = [InventoryHost("web1", "127.0.99.1", 22, ()), InventoryHost("web2", "127.0.99.2", 2222, ())]
    runner = FakeRunner(unreachable=frozenset({"web2"}), unconfirmed={"web1": "ssh: gone", "web2": "ssh: gone"})
    probes = runner.probe_hosts(hosts)
    assert probes["web1"].state == "ok"
    assert probes["web2"].state == "unreachable" and "127.0.99.2:2222" in probes["web2"].message
    stops = runner.stop_remote_work(hosts, touched={"web1"})
    assert (stops["web1"].confirmed, stops["web2"].confirmed) == (False, True)  # web2 ran nothing of the run
    assert runner.remote_stops == [(frozenset({"web1", "web2"}), frozenset({"web1"}))]


def test_syntax_and_requirements_failures_are_played_as_told(tmp_path):
    runner = FakeRunner(syntax_error="site.yml:3: mapping values are not allowed", requirements_error="no galaxy")
    assert runner.syntax_problem(tmp_path, "site.yml", "inv") == (
        "playbook syntax check failed: site.yml:3: mapping values are not allowed")
    assert FakeRunner().syntax_problem(tmp_path, "site.yml", "inv") == ""
    assert runner.install_requirements(tmp_path) == "no galaxy" and runner.installs == [tmp_path]
