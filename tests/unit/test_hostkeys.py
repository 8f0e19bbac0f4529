"""Reachability and host-key pinning against real sockets on loopback: a closed port, a silent one, an SSH server."""

from __future__ import annotations

import socket
import threading

import paramiko
import pytest

from fleet import hostkeys
from fleet.hostkeys import Probe, Target

TIMEOUT = 2


@pytest.mark.parametrize(("address", "port", "name"), [
    ("10.0.0.1", 22, "10.0.0.1"),
    ("10.0.0.1", 2222, "[10.0.0.1]:2222"),
    ("web1.example.com", 22, "web1.example.com"),
])
def test_known_hosts_name(address, port, name):
    assert hostkeys.known_hosts_name(address, port) == name


class SshServer:
    """A loopback listener that completes SSH key exchanges with `key`, then hangs up; or a silent one."""

    def __init__(self, key: paramiko.PKey | None):
        self.key = key
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        if self.key is None:
            conn.close()  # accepts, then says nothing a client could take for SSH
            return
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.key)
        try:
            transport.start_server(server=paramiko.ServerInterface())
        except (paramiko.SSHException, EOFError, OSError):
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve():
    servers: list[SshServer] = []

    def start(key):
        servers.append(SshServer(key))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def probe(target: Target, known_hosts) -> Probe:
    return hostkeys.probe_hosts([target], known_hosts, TIMEOUT)[target.name]


def test_a_first_contact_pins_the_key_and_the_next_probe_finds_it(tmp_path, serve):
    key = paramiko.ECDSAKey.generate()
    target = Target("web1", "127.0.0.1", serve(key).port)
    known_hosts = tmp_path / "known_hosts"
    first = probe(target, known_hosts)
    assert (first.state, first.usable, first.fingerprint) == ("pinned", True, key.fingerprint)
    assert f"[127.0.0.1]:{target.port}" in known_hosts.read_text()
    assert probe(target, known_hosts).state == "ok"


def test_a_changed_key_blocks_the_host_until_an_admin_accepts_it(tmp_path, serve):
    known_hosts = tmp_path / "known_hosts"
    server = serve(paramiko.ECDSAKey.generate())
    target = Target("web1", "127.0.0.1", server.port)
    probe(target, known_hosts)
    server.key = paramiko.ECDSAKey.generate()
    changed = probe(target, known_hosts)
    assert (changed.state, changed.usable) == ("key_changed", False)
    assert "fleet hosts accept-key web1" in changed.message
    assert hostkeys.accept_key(target, known_hosts, TIMEOUT).state == "pinned"
    assert probe(target, known_hosts).state == "ok"


def test_a_closed_port_is_unreachable_with_a_hint(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    found = probe(Target("db1", "127.0.0.1", port), tmp_path / "known_hosts")
    assert (found.state, found.usable) == ("unreachable", False)
    assert f"cannot connect to 127.0.0.1:{port}" in found.message and "sshd" in found.message


def test_a_port_that_speaks_no_ssh_is_unreachable(tmp_path, serve):
    target = Target("db1", "127.0.0.1", serve(None).port)
    found = probe(target, tmp_path / "known_hosts")
    assert found.state == "unreachable" and "no SSH handshake" in found.message


def test_pin_key_line_replaces_the_pinned_key(tmp_path):
    known_hosts = tmp_path / "known_hosts"
    old, new = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    hostkeys.pin_key_line(known_hosts, "127.0.0.5", 22, old.get_name(), old.get_base64())
    hostkeys.pin_key_line(known_hosts, "127.0.0.5", 22, new.get_name(), new.get_base64())
    assert known_hosts.read_text().count("127.0.0.5") == 1 and new.get_base64() in known_hosts.read_text()


def test_no_targets_no_probes(tmp_path):
    assert hostkeys.probe_hosts([], tmp_path / "known_hosts", TIMEOUT) == {}


def test_fleets_own_key_pair_is_made_once(tmp_path):
    identity = tmp_path / "ssh" / "id_ed25519"
    assert hostkeys.ensure_identity(identity) == identity
    first = identity.read_text()
    hostkeys.ensure_identity(identity)
    assert identity.read_text() == first and (tmp_path / "ssh" / "id_ed25519.pub").exists()
