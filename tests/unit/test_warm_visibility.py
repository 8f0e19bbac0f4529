"""fleet.warm's bookkeeping: the rotated warm-ansible.log, the client's report of a run's path, the hosts
a run names, the state file of a kept process and the listing read from /proc."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet import warm


def test_the_log_is_rotated_past_its_size_and_keeps_a_bounded_number_of_old_files(tmp_path, monkeypatch):
    monkeypatch.setattr(warm, "LOG_MAX_BYTES", 1000)
    for number in range(400):
        warm.log_line(str(tmp_path), f"line {number} " + "x" * 40)
    logs = sorted(p.name for p in tmp_path.iterdir())
    assert logs == ["warm-ansible.log", "warm-ansible.log.1", "warm-ansible.log.2", "warm-ansible.log.3"]
    assert all((tmp_path / name).stat().st_size < 1000 + 100 for name in logs)
    assert (tmp_path / "warm-ansible.log").read_text().splitlines()[-1].endswith("line 399 " + "x" * 40)
    newest_old = (tmp_path / "warm-ansible.log.1").read_text().splitlines()[-1]
    first_now = (tmp_path / "warm-ansible.log").read_text().splitlines()[0]
    assert int(newest_old.split()[3]) + 1 == int(first_now.split()[3])  # nothing lost between them


def test_a_writer_holding_the_log_open_keeps_writing_to_it_after_a_rotation(tmp_path, monkeypatch):
    """The kept process's stderr is the log opened once: rotation empties it in place, it is not renamed."""
    monkeypatch.setattr(warm, "LOG_MAX_BYTES", 200)
    with open(tmp_path / "warm-ansible.log", "ab") as stderr:
        stderr.write(b"y" * 300 + b"\n")
        stderr.flush()
        warm.log_line(str(tmp_path), "after the rotation")
        stderr.write(b"a traceback\n")
    lines = (tmp_path / "warm-ansible.log").read_text().splitlines()
    assert lines[0].endswith("after the rotation") and lines[1] == "a traceback"
    assert (tmp_path / "warm-ansible.log.1").read_text().startswith("y" * 300)


def test_the_report_says_warm_or_cold_with_its_reason_and_a_cold_one_is_logged(tmp_path):
    report = tmp_path / "path.json"
    environ = {warm.REPORT_ENV: str(report), warm.ANCHOR_ENV: str(tmp_path)}
    assert warm.read_report(report) is None
    warm.write_report(environ, False, "no kept process yet (starting one)")
    assert warm.read_report(report) == (False, "no kept process yet (starting one)")
    assert "goes cold" in (tmp_path / warm.LOG_NAME).read_text()
    warm.write_report(environ, True)
    assert warm.read_report(report) == (True, "")
    assert len((tmp_path / warm.LOG_NAME).read_text().splitlines()) == 1  # a warm run is not logged
    report.write_text("{broken")
    assert warm.read_report(report) is None


def test_path_text_is_what_the_store_keeps():
    assert warm.path_text(True) == "warm"
    assert warm.path_text(False, "FLEET_WARM_ANSIBLE=false") == "cold: FLEET_WARM_ANSIBLE=false"


@pytest.mark.parametrize("argv, hosts", [
    (["--check", "site.yml"], ["all"]),
    (["-l", "web1,web2", "site.yml"], ["web1", "web2"]),
    (["--limit=web1:db1"], ["web1", "db1"]),
    (["--syntax-check", "-i", "inv", "site.yml"], []),
])
def test_hosts_of_argv(argv, hosts):
    assert warm.hosts_of_argv(argv, "/") == hosts


def test_hosts_of_a_limit_file(tmp_path):
    (tmp_path / "limit").write_text("web1\nweb2\n\n")
    assert warm.hosts_of_argv(["--limit", f"@{tmp_path / 'limit'}", "site.yml"], "/") == ["web1", "web2"]
    assert warm.hosts_of_argv(["--limit", "@limit"], str(tmp_path)) == ["web1", "web2"]


def test_the_state_file_names_the_newest_runs_hosts_first_and_goes_with_the_process(tmp_path):
    sock = tmp_path / "abc-key.sock"
    state = warm.KeptState(sock, str(tmp_path), {123})
    written = json.loads((tmp_path / "abc-key.json").read_text())
    assert written["pid"] == os.getpid() and written["multiplexers"] == [123] and written["hosts"] == []
    state.served({"argv": ["-l", "b,a"], "cwd": "/"})
    state.served({"argv": ["-l", "c,a"], "cwd": "/"})
    written = json.loads((tmp_path / "abc-key.json").read_text())
    assert written["hosts"] == ["a", "c", "b"] and written["runs"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["abc-key.json"]  # written atomically: no temporary left
    state.remove()
    assert not (tmp_path / "abc-key.json").exists()


def test_memory_is_read_from_proc():
    memory = warm.process_memory(os.getpid())
    assert memory["Rss"] > 1000 and 0 < memory["Pss"] <= memory["Rss"]
    assert warm.process_memory(2 ** 22 + 7) == {}


def test_a_listed_process_has_its_age_memory_and_hosts():
    started = time.time() - 30
    listed = warm.kept_process_json(os.getpid(), {"started_at": started, "hosts": ["web1"], "runs": 1,
                                                  "multiplexers": [], "strategy": "mitogen_linear"}, time.time())
    assert 29 <= listed["age_seconds"] <= 40
    assert listed["hosts"] == ["web1"] and listed["rss_kib"] > 1000 and listed["pss_kib"] > 0
    assert warm.kept_process_json(os.getpid(), {}, time.time())["age_seconds"] is None


def test_the_kept_process_logs_to_the_rotated_log_when_its_stderr_is_that_log(tmp_path):
    code = ("import logging, sys; from fleet import warm; warm.LOG_MAX_BYTES = 300; "
            "logging.basicConfig(level=logging.INFO, handlers=[warm.LogHandler(sys.argv[1])]); "
            "[logging.getLogger('fleet.warm').info('record %d ' + 'z' * 50, n) for n in range(40)]")
    env = {**os.environ, "PYTHONPATH": str(Path(warm.__file__).parents[2])}
    with open(tmp_path / warm.LOG_NAME, "ab") as log:
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], stdout=log, stderr=log, env=env, check=True)
    assert (tmp_path / f"{warm.LOG_NAME}.1").exists()
    assert (tmp_path / warm.LOG_NAME).stat().st_size < 300 + 100
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "elsewhere")], capture_output=True,
                           text=True, env=env, check=True)
    assert other.stderr.count("fleet.warm record") == 40  # started by hand: stderr, as before


# --- what the store keeps, and how it is shown ---------------------------------------------------------

def test_the_stored_path_reads_as_the_stable_json_shape():
    from fleet.shapes import ansible_path_json, ansible_path_line

    assert ansible_path_json("") is None
    assert ansible_path_json("warm") == {"warm": True, "reason": None}
    assert ansible_path_json("cold: FLEET_WARM_ANSIBLE=false") == {"warm": False, "reason": "FLEET_WARM_ANSIBLE=false"}
    assert ansible_path_json("mixed: shard 0 warm; shard 1 cold: x") == {
        "warm": None, "reason": "shard 0 warm; shard 1 cold: x"}
    assert ansible_path_line("warm") == "warm (forked from the kept Ansible process)"
    assert ansible_path_line("") == "not recorded"


def test_a_run_of_shards_says_their_common_path_or_each_one_s():
    from types import SimpleNamespace

    from fleet.executor.dispatch import gathered_ansible_path

    def shards(*paths):
        return [SimpleNamespace(index=i, ansible_path=p) for i, p in enumerate(paths)]

    assert gathered_ansible_path(shards("warm", "warm")) == "warm"
    assert gathered_ansible_path(shards("", "")) == ""
    assert gathered_ansible_path(shards("warm", "")) == "warm"  # a shard that never ran Ansible says nothing
    assert gathered_ansible_path(shards("cold: a", "cold: b")) == "cold: shard 0: a; shard 1: b"
    assert gathered_ansible_path(shards("cold: a", "warm")) == "mixed: shard 0 cold: a; shard 1 warm"


def test_a_kept_process_line_for_fleet_status():
    from fleet.output import kept_process_line

    line = kept_process_line({"pid": 42, "age_seconds": 300.0, "rss_kib": 90_000, "pss_kib": 150_000,
                              "multiplexers": [43, 44], "runs": 3, "hosts": [f"h{n}" for n in range(10)]})
    assert line == ("pid 42, up 5m, 146 MiB PSS with 2 multiplexer(s), 3 run(s), "
                    "hosts h0 h1 h2 h3 h4 h5 h6 h7 and 2 more")
    assert kept_process_line({"pid": 7, "age_seconds": None, "rss_kib": None, "pss_kib": None}) == (
        "pid 7, age unknown, 0 run(s)")


def test_the_runner_says_why_a_run_could_not_go_warm_and_what_the_client_reported(tmp_path):
    from fleet import runner
    from fleet.runner import JobSpec

    spec = JobSpec(kind="check", project_dir=tmp_path, playbook="site.yml", inventory=tmp_path / "inventory",
                   private_data_dir=tmp_path, known_hosts=tmp_path / "kh", control_path_dir=tmp_path / "cp",
                   warm_anchor=tmp_path)
    report = tmp_path / runner.REPORT_FILE
    off = runner.ansible_path(JobSpec(**{**spec.__dict__, "warm_anchor": None}), None, report)
    assert off == "cold: FLEET_WARM_ANSIBLE=false"
    assert runner.ansible_path(spec, None, report).startswith("cold: fleet-ansible-playbook is not installed")
    assert runner.ansible_path(spec, "/bin/client", report) == ""  # the client said nothing: not known
    warm.write_report({warm.REPORT_ENV: str(report)}, True)
    assert runner.ansible_path(spec, "/bin/client", report) == "warm"


# --- a shard keeps its own path, and a local run its own (a real store, the fake runner) ----------------

def test_a_shard_and_a_local_run_keep_the_path_their_runner_reported(tmp_path):
    import dataclasses

    from fleet.executor.shard import execute_shard
    from fleet.fake_runner import FakeRunner, hosts_of, load_events
    from fleet.jobs import perform_run
    from fleet.revisions import sync_source
    from fleet.settings import replace
    from fleet.store import queries, records, shards
    from fleet.store.db import open_store
    from tests.conftest import settings_for_source

    events = load_events(Path(__file__).parent / "fixtures" / "truth_check.json")
    hosts = hosts_of(events, groups=("cases",))

    class Reporting(FakeRunner):
        def run_job(self, spec, on_event, should_cancel=lambda: False):
            return dataclasses.replace(super().run_job(spec, on_event, should_cancel), ansible_path=self.path)

    settings = replace(settings_for_source(tmp_path, "accept_unverified: []\n"), lease_seconds=3)
    with open_store(settings):
        fake = Reporting(events=events, hosts=hosts)
        fake.path = "cold: no kept process yet (starting one)"
        desired = sync_source(settings, runner=fake)
        run = records.create_run("check", "manual", desired.revision.sha, "", "test", None)
        [shard] = shards.create_shards(run.id, [[h.name for h in hosts]])
        assert shards.mark_sent(shard)
        execute_shard(settings, shard.id, 1, "w1", runner=fake)
        assert shards.get_shard(shard.id).ansible_path == "cold: no kept process yet (starting one)"

        fake.path = "warm"
        local = records.create_run("check", "manual", desired.revision.sha, "", "test", None)
        perform_run(settings, local, desired, list(desired.hosts), runner=fake)
        assert queries.get_run(local.id).ansible_path == "warm"


def test_fleet_show_says_how_ansible_ran_the_run_and_each_shard(tmp_path, tmp_source):
    """`fleet show` run as a user would, on a run of two shards that took different paths."""
    from fleet.settings import load_settings
    from fleet.store import db
    from fleet.store.db import open_store
    from fleet.store.models import Run, Shard
    from tests.conftest import FleetCli

    cli = FleetCli(tmp_path / "data", tmp_source, tmp_path)
    with open_store(load_settings(flags={"repo": str(tmp_source), "data_dir": str(cli.data_dir)}, environ={},
                                  cwd=tmp_path)):
        run = Run(kind="check", trigger="manual", status="successful", strategy="mitogen_linear (workers)",
                  ansible_path="mixed: shard 0 warm; shard 1 cold: no kept process yet (starting one)")
        db.session.add(run)
        db.session.flush()
        db.session.add_all([
            Shard(run_id=run.id, index=0, hosts='["web1"]', status="done", worker="fleet@a", ansible_path="warm"),
            Shard(run_id=run.id, index=1, hosts='["web2"]', status="done", worker="fleet@b",
                  ansible_path="cold: no kept process yet (starting one)"),
        ])
        db.session.commit()
        run_id = run.id
    shown = cli("show", str(run_id))
    assert shown.code == 0, shown.stderr
    assert ("ansible: mitogen_linear (workers), mixed: shard 0 warm; shard 1 cold: no kept process yet "
            "(starting one)\n  shard 0 on fleet@a: warm (forked from the kept Ansible process)\n"
            "  shard 1 on fleet@b: cold: no kept process yet (starting one)\n") in shown.stdout
    data = json.loads(cli("show", str(run_id), "--json").stdout)
    assert data["run"]["ansible_path"]["warm"] is None
    assert [s["ansible_path"]["warm"] for s in data["shards"]] == [True, False]


def test_writers_at_once_lose_no_line_across_rotations(tmp_path):
    """Four processes log 300 lines of 1 KiB each into a log rotated every 200 KB: every line is in one of the
    files still kept, in order per writer."""
    code = ("import sys; from fleet import warm; warm.LOG_MAX_BYTES = 200_000; warm.LOG_KEEP = 50; "
            "[warm.log_line(sys.argv[1], f'writer {sys.argv[2]} line {n:04d} ' + 'x' * 1000) for n in range(300)]")
    env = {**os.environ, "PYTHONPATH": str(Path(warm.__file__).parents[2])}
    writers = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(w)], env=env) for w in range(4)]
    assert [w.wait(60) for w in writers] == [0] * 4
    files = sorted(tmp_path.glob(f"{warm.LOG_NAME}*"),  # oldest first: .12 .. .1, then the log itself
                   key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    assert len(files) > 3, "it was rotated"
    lines = [line.split(" ", 2)[2].rstrip("x ") for f in files for line in f.read_text().splitlines()]
    for w in range(4):
        assert [line for line in lines if line.startswith(f"writer {w} ")] == [
            f"writer {w} line {n:04d}" for n in range(300)]
