"""The kept Ansible process (fleet.warm), for real.

On lab hosts: a check forked from the kept process gives the verdicts a fresh ansible-playbook gives, and
Mitogen's interpreters on the hosts outlive each run (the same processes serve the next check, started
by a multiplexer of the kept process). Without lab hosts, with a local playbook: a run whose Ansible
settings differ from the kept process's runs cold and the log says why; killing the client stops its
run and leaves the kept process; killing the kept process fails its run saying so and leaves nothing;
an idle kept process ends and takes its socket with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fleet import processes, warm
from tests.ansible_processes import ansible_processes, host_interpreters, login_interpreters
from tests.conftest import FleetCli, make_source, settled, wait_for

SUBNET = 48  # this file's own lab: 127.0.48.x
BIN = Path(sys.executable).parent
CONVERSATION = ("import os, sys; from pathlib import Path; from fleet.warm.client import Conversation, connect; "
                "Conversation(connect(Path(sys.argv[1])), sys.argv[2:], dict(os.environ)).follow()")


def verdicts(result) -> list:
    """A check's hosts, without what differs from run to run by nature (ids, times)."""
    assert result.code in (0, 2), result.stderr
    return settled(result.json()["hosts"])


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


@pytest.mark.lab
def test_checks_fork_from_the_kept_process_keep_host_interpreters_and_give_the_same_verdicts(tmp_path):
    cli = FleetCli(tmp_path / "data", tmp_path / "source", tmp_path)
    up = cli("lab", "up", "--hosts", "2", "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        make_source(tmp_path / "source", (cli.data_dir / "lab" / "hosts.yml").read_text())
        cold = cli("check", "--json", env={"FLEET_WARM_ANSIBLE": "false"})
        assert warm.server_pids(str(cli.data_dir)) == [], "FLEET_WARM_ANSIBLE=false starts no kept process"
        first = cli("check", "--json")  # runs cold itself, and starts the kept process for the next one
        [server] = wait_for(lambda: warm.server_pids(str(cli.data_dir)), 30, "the kept Ansible process")
        second = cli("check", "--json")
        interpreters, logins = host_interpreters(cli.data_dir), login_interpreters(cli.data_dir)
        third = cli("check", "--json")

        assert verdicts(first) == verdicts(second) == verdicts(third) == verdicts(cold)
        assert any(h["changed_tasks"] for h in cold.json()["hosts"]), "fresh lab hosts drift: a check that proves it"
        assert len(logins) == 2 and all(len(pids) == 1 for pids in logins.values()), logins
        assert login_interpreters(cli.data_dir) == logins, "the same login interpreters served the next check"

        def forks_replaced() -> bool:
            """Each check ran in forks of its own: the third's replaced the second's, no more of them."""
            now = {host: set(pids) for host, pids in host_interpreters(cli.data_dir).items()}
            return all(set(interpreters[host]) - now[host] and now[host] - set(interpreters[host])
                       and len(now[host]) == len(interpreters[host]) for host in now)
        wait_for(forks_replaced, 15, "the second check's forks to end, the third's to be as many")
        multiplexers = {mux for by_pid in interpreters.values() for mux in by_pid.values()}
        assert {parent_of(mux) for mux in multiplexers} == {server}, "held by the kept process's multiplexers"
        assert ansible_processes(cli.data_dir) == [], "no run outlives its check"

        assert warm.stop_servers(str(cli.data_dir)) == 1
        wait_for(lambda: not processes.pid_alive(server), 15, "the kept process to end when asked")
        wait_for(lambda: not any(host_interpreters(cli.data_dir).values()), 15, "the hosts' interpreters to end")
        log = (cli.data_dir / "warm-ansible.log").read_text()
        assert "started" in log and "ended: asked to stop" in log, log
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


# --- without lab hosts: a local playbook, a kept process started by hand on a socket of the test's own ---

LOCAL_PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: wait
      command: sleep SECONDS
"""


class KeptProcess:
    """`python -m fleet.warm.server` on a socket under tmp_path, with the environment a run would give it."""

    def __init__(self, tmp_path: Path, **extra_env: str):
        self.anchor = tmp_path / "data"
        self.anchor.mkdir(exist_ok=True)
        self.socket = tmp_path / "kept.sock"
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1",
                    warm.ANCHOR_ENV: str(self.anchor), warm.IDLE_ENV: "60", **extra_env}
        self.log = tmp_path / "kept.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "fleet.warm.server", str(self.socket),
                                             str(self.anchor)], env=self.env, cwd=tmp_path, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.socket.exists, 30, "the kept process's socket")

    def client(self, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """A client's conversation with this kept process, as fleet-ansible-playbook holds it."""
        return subprocess.Popen([sys.executable, "-c", CONVERSATION, str(self.socket), *args],
                                env={**self.env, **(env or {})}, cwd=cwd or self.anchor, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def kept(tmp_path):
    server = KeptProcess(tmp_path, ANSIBLE_TIMEOUT="17")
    yield server
    server.stop()


def sleeps(seconds: int) -> list[int]:
    """Pids of the `sleep` a local playbook started (the run's deepest process)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if entry.read_bytes() == f"sleep\0{seconds}\0".encode():
                found.append(int(entry.parent.name))
        except OSError:
            pass
    return found


def playbook(directory: Path, seconds: int) -> Path:
    path = directory / "wait.yml"
    path.write_text(LOCAL_PLAYBOOK.replace("SECONDS", str(seconds)))
    return path


def test_a_run_with_other_ansible_settings_runs_cold_and_the_log_says_why(kept):
    same = kept.client("--version")
    out, err = same.communicate(timeout=120)
    assert same.returncode == 0 and "ansible-playbook [core" in out, err
    assert "goes cold" not in kept.log.read_text(), "the same settings run in the kept process"

    other = kept.client("--version", env={"ANSIBLE_TIMEOUT": "99"})
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0 and "ansible-playbook [core" in out, err
    assert "goes cold: Ansible setting DEFAULT_TIMEOUT differs" in kept.log.read_text()


def test_a_run_forked_from_the_kept_process_ends_with_its_exit_code_and_output(kept):
    play = playbook(kept.anchor, 0)
    ok = kept.client("-i", "localhost,", str(play))
    out, err = ok.communicate(timeout=120)
    assert ok.returncode == 0, err
    assert "TASK [wait]" in out and "localhost                  : ok=1" in out
    broken = kept.client("-i", "localhost,", str(kept.anchor / "missing.yml"))
    out, err = broken.communicate(timeout=120)
    assert broken.returncode != 0 and "missing.yml" in err + out


def test_killing_the_client_stops_its_run_and_the_kept_process_stays(kept):
    play = playbook(kept.anchor, 301)
    client = kept.client("-i", "localhost,", str(play))
    [sleep] = wait_for(lambda: sleeps(301), 60, "the run's task to start")
    assert kept.process.pid in processes_above(sleep), "the run was forked from the kept process"
    client.kill()
    client.communicate(timeout=30)
    wait_for(lambda: not sleeps(301), 15, "the run to stop with its client")
    assert kept.process.poll() is None and kept.socket.exists()
    again = kept.client("--version")
    again.communicate(timeout=120)
    assert again.returncode == 0, "the kept process takes the next run"


def test_a_killed_kept_process_fails_its_run_saying_so_and_leaves_nothing(kept):
    play = playbook(kept.anchor, 302)
    client = kept.client("-i", "localhost,", str(play))
    wait_for(lambda: sleeps(302), 60, "the run's task to start")
    kept.process.kill()
    _, err = client.communicate(timeout=30)
    assert client.returncode == 1 and "the kept Ansible process ended during this run" in err
    wait_for(lambda: not sleeps(302), 15, "the run to stop with the kept process")


def test_an_idle_kept_process_ends_and_takes_its_socket(tmp_path):
    server = KeptProcess(tmp_path, **{warm.IDLE_ENV: "1"})
    try:
        assert server.process.wait(30) == 0
        assert not server.socket.exists()
        assert "ended: idle" in server.log.read_text()
    finally:
        server.stop()


def test_a_kept_process_ends_when_its_data_directory_is_gone(tmp_path):
    server = KeptProcess(tmp_path)
    try:
        os.rename(server.anchor, tmp_path / "moved")
        assert server.process.wait(30) == 0
        assert "the data directory is gone" in server.log.read_text()
    finally:
        server.stop()


def processes_above(pid: int) -> list[int]:
    found = []
    while pid > 1:
        pid = parent_of(pid)
        found.append(pid)
    return found


def test_the_key_follows_ansible_settings_not_the_run_s_own_paths(tmp_path):
    base = {"ANSIBLE_TIMEOUT": "10", "AWX_ISOLATED_DATA_DIR": "/a/1", "ANSIBLE_CACHE_PLUGIN_CONNECTION": "/a/1/f"}
    key = warm.server_key(base, str(tmp_path))
    assert warm.server_key({**base, "AWX_ISOLATED_DATA_DIR": "/a/2",
                            "ANSIBLE_CACHE_PLUGIN_CONNECTION": "/a/2/f"}, str(tmp_path)) == key
    assert warm.server_key({**base, "FLEET_RUN_TIMEOUT": "9"}, str(tmp_path)) == key, "fleet's own: not Ansible's"
    assert warm.server_key({**base, "ANSIBLE_TIMEOUT": "11"}, str(tmp_path)) != key
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    assert warm.server_key(base, str(tmp_path)) != key, "a project's own ansible.cfg is part of the key"


def test_no_socket_where_other_users_could_reach_it(monkeypatch):
    with tempfile.TemporaryDirectory(prefix="w", dir="/tmp") as short:  # a socket's path holds 107 bytes
        monkeypatch.setenv("XDG_RUNTIME_DIR", short)
        assert warm.socket_path("/data", "k" * 64) is not None
        (Path(short) / f"fleet-warm-{os.getuid()}").chmod(0o777)
        assert warm.runtime_dir() is None and warm.socket_path("/data", "k" * 64) is None


def test_live_settings_are_taken_from_the_run_and_others_must_match(tmp_path):
    """In a Python of its own: importing Ansible here would touch this test process's Ansible."""
    script = """
import os, json
from fleet.warm import child
imported = child.imported_settings()
os.environ["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = "/run/2/fact_cache"
assert child.settings_problem(imported) is None
from ansible import constants as C
assert C.CACHE_PLUGIN_CONNECTION == "/run/2/fact_cache", C.CACHE_PLUGIN_CONNECTION
os.environ["ANSIBLE_FORKS"] = "7"
print(child.settings_problem(imported))
"""
    env = {**os.environ, "ANSIBLE_CACHE_PLUGIN_CONNECTION": "/run/1/fact_cache", "ANSIBLE_FORKS": "5"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Ansible setting DEFAULT_FORKS differs from the kept process's"


# --- what a warm run must share with a cold one, beyond its settings ---

PAUSE_PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: pause
      ansible.builtin.pause:
        seconds: 1
    - name: after the pause
      ansible.builtin.debug:
        msg: paused
"""


def on_a_terminal(command: list[str], env: dict, cwd: Path) -> tuple[int, str]:
    """Run a command as ansible-runner runs ansible-playbook: on a pty of its own, in a session it leads."""
    import pexpect

    child = pexpect.spawn(command[0], command[1:], env=env, cwd=str(cwd), encoding="utf-8", timeout=120)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before.replace("\r\n", "\n")


def test_pause_runs_warm_on_the_run_s_terminal_as_it_runs_cold(kept):
    play = kept.anchor / "pause.yml"
    play.write_text(PAUSE_PLAYBOOK)
    cold_code, cold = on_a_terminal([str(BIN / "ansible-playbook"), "-i", "localhost,", str(play)], kept.env,
                                    kept.anchor)
    warm_code, warm_out = on_a_terminal([sys.executable, "-c", CONVERSATION, str(kept.socket), "-i", "localhost,",
                                         str(play)], kept.env, kept.anchor)
    assert "goes cold" not in kept.log.read_text(), "the run was forked from the kept process"
    assert cold_code == 0 and "Pausing for 1 seconds" in cold and "ok=2" in cold, cold
    assert (warm_code, warm_out) == (cold_code, cold), "the same output and exit code, warm and cold"


def test_a_stop_retires_the_kept_process_and_lets_the_running_run_end(kept):
    play = playbook(kept.anchor, 3)
    client = kept.client("-i", "localhost,", str(play))
    wait_for(lambda: sleeps(3), 60, "the run's task to start")
    kept.process.send_signal(signal.SIGTERM)  # as warm.stop_servers asks it, at a clean stop of fleet serve
    wait_for(lambda: not kept.socket.exists(), 15, "the kept process to take no more runs")
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0 and "ok=1" in out, out + err
    assert kept.process.wait(30) == 0, "it ended once its runs had"
    assert "ended: asked to stop" in kept.log.read_text()


@pytest.mark.parametrize("name", ["SSH_AUTH_SOCK", "KRB5CCNAME", "https_proxy", "no_proxy", "HTTP_PROXY"])
def test_what_the_multiplexers_ssh_keeps_of_the_environment_keys_the_kept_process(tmp_path, name):
    base = {"ANSIBLE_TIMEOUT": "10", name: "/first"}
    assert warm.server_key({**base, name: "/second"}, str(tmp_path)) != warm.server_key(base, str(tmp_path))


def test_an_upgraded_jinja2_or_collection_is_not_served_by_an_old_kept_process(tmp_path, monkeypatch):
    """An upgrade rewrites a package's __init__.py, and a collection's MANIFEST.json (ansible-galaxy)."""
    site = tmp_path / "site"
    (site / "jinja2").mkdir(parents=True)
    (site / "jinja2" / "__init__.py").write_text("__version__ = '3.1.6'\n")
    manifest = site / "ansible_collections" / "fleetlab" / "probe" / "MANIFEST.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"collection_info": {"version": "1.0.0"}}')
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    environ = {"ANSIBLE_TIMEOUT": "10"}
    key = warm.server_key(environ, str(tmp_path))
    assert warm.server_key(environ, str(tmp_path)) == key
    (site / "jinja2" / "__init__.py").write_text("__version__ = '3.1.7'\n")
    upgraded_jinja = warm.server_key(environ, str(tmp_path))
    assert upgraded_jinja != key
    manifest.write_text('{"collection_info": {"version": "1.1.0"}}')
    assert warm.server_key(environ, str(tmp_path)) != upgraded_jinja


def test_a_revision_s_collections_path_keys_the_kept_process(tmp_path):
    """Mitogen's multiplexers, forked once, serve collection code from the loader they were forked with."""
    for revision in ("a", "b"):
        installed = tmp_path / revision / "ansible_collections" / "fleetlab" / "probe"
        installed.mkdir(parents=True)
        (installed / "MANIFEST.json").write_text("{}")
    first = warm.server_key({"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "a")}, str(tmp_path))
    assert warm.server_key({"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "b")}, str(tmp_path)) != first


def test_a_playbook_with_collections_beside_it_runs_cold_and_the_log_says_why(kept):
    """The multiplexers were forked before the run: they could not serve collections only the run sees."""
    project = kept.anchor / "project"
    (project / "collections" / "ansible_collections" / "fleetlab" / "beside").mkdir(parents=True)
    play = playbook(project, 0)
    run = kept.client("-i", "localhost,", str(play), cwd=project)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0 and "ok=1" in out, out + err
    assert f"goes cold: collections beside the playbook ({project / 'collections'})" in kept.log.read_text()
