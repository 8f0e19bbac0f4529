"""fleet.warm, what the kept Ansible process and its client share: which kept process may run a run (its key),
where its socket lives and when that place is not safe, finding and stopping the kept processes of a data
directory, and the framed messages (with descriptors) between client and kept process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fleet import warm
from tests.conftest import wait_for

BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "ANSIBLE_FORKS": "20"}


@pytest.fixture
def runtime(monkeypatch):
    """A short private XDG_RUNTIME_DIR of this test's own (socket paths must stay under 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="fw-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def cwd(tmp_path):
    directory = tmp_path / "revision"
    directory.mkdir()
    return str(directory)


def test_warm_runs_need_a_data_directory_named():
    assert warm.enabled_by({warm.ANCHOR_ENV: "/var/lib/fleet"})
    assert not warm.enabled_by({warm.ANCHOR_ENV: ""}) and not warm.enabled_by({})


def test_the_key_is_the_same_for_the_same_environment_and_ignores_what_each_run_sets(cwd):
    key = warm.server_key(BASE_ENV, cwd)
    assert len(key) == 64 and key == warm.server_key(dict(BASE_ENV), cwd)
    per_run = {**BASE_ENV, "PWD": "/elsewhere", "ANSIBLE_ROLES_PATH": "/export/abc/roles",
               "AWX_ISOLATED_DATA_DIR": "/runs/9", warm.ANCHOR_ENV: "/data", warm.IDLE_ENV: "600",
               "ANSIBLE_CACHE_PLUGIN_CONNECTION": "/runs/9/facts"}
    assert warm.server_key(per_run, cwd) == key
    unrelated = {**BASE_ENV, "FLEET_RUN_ID": "12", "TERM": "xterm", "JOB_TOKEN": "x"}
    assert warm.server_key(unrelated, cwd) == key  # reaches the run, but Ansible does not read it at import


@pytest.mark.parametrize("name,value", [
    ("ANSIBLE_FORKS", "5"), ("ANSIBLE_STRATEGY", "mitogen_linear"), ("MITOGEN_POOL_SIZE", "4"),
    ("PYTHONPATH", "/opt/lib"), ("LC_ALL", "C"), ("PATH", "/opt/bin:/usr/bin"), ("HOME", "/home/ann"),
    ("SSH_AUTH_SOCK", "/tmp/agent.1"), ("https_proxy", "http://proxy:3128"), ("KRB5CCNAME", "FILE:/tmp/k"),
])
def test_what_ansible_or_its_ssh_reads_at_import_gives_another_key(cwd, name, value):
    assert warm.server_key({**BASE_ENV, name: value}, cwd) != warm.server_key(BASE_ENV, cwd)


def test_an_ansible_cfg_beside_the_run_keys_it_by_its_content_and_its_absence_keys_nothing(tmp_path, cwd):
    other = tmp_path / "other-revision"
    other.mkdir()
    plain = warm.server_key(BASE_ENV, cwd)
    assert warm.server_key(BASE_ENV, str(other)) == plain  # two revisions without ansible.cfg share a process
    config = Path(cwd, "ansible.cfg")
    config.write_text("[defaults]\nforks = 5\n")
    with_config = warm.server_key(BASE_ENV, cwd)
    assert with_config != plain
    config.write_text("[defaults]\nforks = 50\n")  # changed in place: another size and time
    assert warm.server_key(BASE_ENV, cwd) != with_config


def test_installing_a_collection_gives_another_key(tmp_path, cwd):
    collections = tmp_path / "collections"
    env = {**BASE_ENV, "ANSIBLE_COLLECTIONS_PATH": str(collections)}
    before = warm.server_key(env, cwd)
    installed = collections / "ansible_collections" / "acme" / "tools"
    installed.mkdir(parents=True)
    (installed / "MANIFEST.json").write_text("{}")
    assert warm.server_key(env, cwd) != before


def test_collection_roots_are_the_configured_paths_then_python_s(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    roots = warm.collection_roots({"ANSIBLE_COLLECTIONS_PATH": f"~/mine{os.pathsep}{os.pathsep}/srv/shared"})
    assert roots[:2] == [str(tmp_path / "mine"), "/srv/shared"]  # ~ expanded, empty entries dropped
    assert roots[2:] == [entry for entry in sys.path if entry]
    assert warm.collection_roots({})[:2] == [str(tmp_path / ".ansible/collections"), "/usr/share/ansible/collections"]
    assert warm.collection_roots({"ANSIBLE_COLLECTIONS_PATHS": "/old/name"})[0] == "/old/name"  # the older name


def test_the_socket_directory_is_private_to_this_user_or_not_used(runtime):
    made = warm.runtime_dir()
    assert made == runtime / f"fleet-warm-{os.getuid()}"
    assert made.stat().st_mode & 0o777 == 0o700
    made.chmod(0o755)  # someone opened it up: another user could put a socket there
    assert warm.runtime_dir() is None
    made.chmod(0o700)
    assert warm.runtime_dir() == made


def test_a_symlink_in_place_of_the_socket_directory_is_refused(runtime, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (runtime / f"fleet-warm-{os.getuid()}").symlink_to(target)
    assert warm.runtime_dir() is None
    assert warm.socket_path(str(tmp_path), "k" * 64) is None


def test_the_socket_of_a_data_directory_is_named_by_its_real_path_and_the_key(runtime, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    key = "0123456789abcdef" + "f" * 48
    path = warm.socket_path(str(data), key)
    assert path == warm.socket_path(str(tmp_path / "link"), key)  # one kept process however it is named
    assert path.name == f"{warm.anchor_prefix(str(data))}-0123456789abcdef.sock"
    assert len(warm.anchor_prefix(str(data))) == 10
    assert warm.socket_path(str(tmp_path), key) != path  # another data directory: another process


def test_a_socket_path_too_long_for_unix_sockets_is_none(monkeypatch, tmp_path):
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    assert warm.runtime_dir() is not None
    assert warm.socket_path(str(tmp_path), "k" * 64) is None


def pretend_kept_process() -> subprocess.Popen:
    """A process whose command line names fleet.warm.server, as a kept process's does (once its exec is
    complete: until then /proc shows an empty command line)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "fleet.warm.server"])
    wait_for(lambda: b"fleet.warm.server" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), 10,
             "the pretend kept process to start", interval=0.01)
    return proc


def test_the_kept_processes_of_a_data_directory_are_those_alive_behind_their_lock_files(runtime, tmp_path):
    anchor, other = str(tmp_path / "data"), str(tmp_path / "other")
    directory = warm.runtime_dir()
    prefix = warm.anchor_prefix(anchor)
    alive, elsewhere = pretend_kept_process(), pretend_kept_process()
    try:
        (directory / f"{prefix}-aaaa.lock").write_text(f"{alive.pid}\n")
        (directory / f"{prefix}-bbbb.lock").write_text(f"{os.getpid()}\n")  # a pid now reused by another program
        (directory / f"{prefix}-cccc.lock").write_text("not a pid\n")
        (directory / f"{prefix}-dddd.lock").write_text("")  # written by a process that died before its pid
        (directory / f"{warm.anchor_prefix(other)}-eeee.lock").write_text(f"{elsewhere.pid}\n")
        assert warm.server_pids(anchor) == [alive.pid]
        assert warm.server_pids(other) == [elsewhere.pid]
        assert [p["pid"] for p in warm.kept_processes(anchor)] == [alive.pid]
    finally:
        for proc in (alive, elsewhere):
            proc.kill()
            proc.wait()
    assert warm.server_pids(anchor) == []


def test_stopping_the_servers_of_a_data_directory_signals_each_and_counts_them(runtime, tmp_path):
    anchor = str(tmp_path / "data")
    kept = pretend_kept_process()
    try:
        (warm.runtime_dir() / f"{warm.anchor_prefix(anchor)}-aaaa.lock").write_text(f"{kept.pid}\n")
        assert warm.stop_servers(anchor) == 1
        assert kept.wait(timeout=10) == -signal.SIGTERM
    finally:
        kept.kill()
        kept.wait()
    assert warm.stop_servers(anchor) == 0
    assert warm.stop_servers(str(tmp_path / "never-used")) == 0


def test_a_listed_kept_process_reads_its_own_state_file_only(runtime, tmp_path):
    anchor = str(tmp_path / "data")
    kept = pretend_kept_process()
    try:
        lock = warm.runtime_dir() / f"{warm.anchor_prefix(anchor)}-aaaa.lock"
        lock.write_text(f"{kept.pid}\n")
        state = {"pid": kept.pid, "started_at": 1.0, "runs": 4, "hosts": ["web1", "db1"], "multiplexers": []}
        lock.with_suffix(".json").write_text(json.dumps(state))
        [listed] = warm.kept_processes(anchor)
        assert (listed["runs"], listed["hosts"]) == (4, ["web1", "db1"])
        lock.with_suffix(".json").write_text(json.dumps({**state, "pid": kept.pid + 1}))  # a predecessor's file
        [listed] = warm.kept_processes(anchor)
        assert (listed["runs"], listed["hosts"]) == (0, [])
    finally:
        kept.kill()
        kept.wait()


def test_a_message_and_its_descriptors_cross_the_socket(tmp_path):
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    target = tmp_path / "terminal"
    with client, server, open(target, "wb") as handle:
        message = {"protocol": warm.PROTOCOL, "argv": ["-l", "web1"], "env": {"A": "b" * 200_000}}
        sender = __import__("threading").Thread(target=warm.send_message, args=(client, message, [handle.fileno()]))
        sender.start()
        received, fds = warm.receive_request(server)
        sender.join()
        assert received == message  # a body larger than one read is read whole
        assert len(fds) == 1
        with os.fdopen(fds[0], "wb") as passed:
            passed.write(b"written through the passed descriptor")
    assert target.read_bytes() == b"written through the passed descriptor"


def test_a_request_cut_short_is_refused_and_its_descriptors_are_closed(tmp_path):
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with client, server, open(tmp_path / "f", "wb") as handle:
        body = json.dumps({"argv": []}).encode()
        header = (len(body) + 100).to_bytes(4, "big")  # says more than will come
        client.sendmsg([header + body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          handle.fileno().to_bytes(4, sys.byteorder))])
        client.shutdown(socket.SHUT_WR)
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(ConnectionError, match="cut short"):
            warm.receive_request(server)
        assert set(os.listdir("/proc/self/fd")) <= before  # the descriptor that came with it is not kept


def test_an_empty_connection_is_no_request():
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with client, server:
        client.close()
        with pytest.raises(ConnectionError, match="no request"):
            warm.receive_request(server)


def test_the_client_s_report_is_read_back_or_none_when_it_said_nothing_usable(tmp_path):
    report = tmp_path / "report.json"
    assert warm.read_report(report) is None  # the client never started
    warm.write_report({warm.REPORT_ENV: str(report)}, True, "ignored for a warm run")
    assert warm.read_report(report) == (True, "")
    for broken in ("{", "[]", '{"reason": "x"}', "null"):
        report.write_text(broken)
        assert warm.read_report(report) is None, broken
    warm.write_report({warm.REPORT_ENV: str(tmp_path / "gone" / "report.json")}, False, "x")  # never raises


def test_logging_into_a_data_directory_that_is_gone_does_not_raise(tmp_path):
    warm.log_line(str(tmp_path / "removed"), "a cold fallback")
    assert not (tmp_path / "removed").exists()
