"""Reachability and host-key pinning against real sockets on loopback: a closed port, a silent one, an SSH server,
jump hosts (paramiko servers forwarding direct-tcpip to names only they resolve) and a ProxyCommand."""

from __future__ import annotations

import re
import shlex
import socket
import sys
import threading

import paramiko
import pytest

from fleet import hostkeys
from fleet.hostkeys import Hop, Probe, Target

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


# --- routes read from ssh arguments -------------------------------------------------------------

ROUTE_CASES = {
    "no arguments": ((), ((), "")),
    "other options only": (("-C -o ControlMaster=auto",), ((), "")),
    "ProxyJump with =": (("-o ProxyJump=root@10.0.0.1",), ((Hop("10.0.0.1", 22, "root"),), "")),
    "ProxyJump with a space, quoted": (("-o 'ProxyJump bastion'",), ((Hop("bastion"),), "")),
    "option name in any case, joined to -o": (("-oproxyjump=b:2222",), ((Hop("b", 2222),), "")),
    "-J apart": (("-J ops@b.example.com:2200",), ((Hop("b.example.com", 2200, "ops"),), "")),
    "-J joined": (("-Jb",), ((Hop("b"),), "")),
    "a chain, outermost first": (("-o ProxyJump=a,ops@b:2222",), ((Hop("a"), Hop("b", 2222, "ops")), "")),
    "ssh:// form and IPv6 in brackets": (("-J ssh://u@[fd00::1]:22",), ((Hop("fd00::1", 22, "u"),), "")),
    "ProxyCommand keeps its words": (('-o "ProxyCommand=ssh -W %h:%p b"',), ((), "ssh -W %h:%p b")),
    "ProxyCommand with a space": (("-o 'ProxyCommand nc %h %p'",), ((), "nc %h %p")),
    "the first of them wins, as in OpenSSH": (("-J a", "-o ProxyCommand=nc"), ((Hop("a"),), "")),
    "ssh_args before common args before extra args": (("", "-o ProxyCommand=x", "-J a"), ((), "x")),
    "none turns the jump off": (("-o ProxyJump=none", "-J a"), ((), "")),
}


@pytest.mark.parametrize(("args", "route"), ROUTE_CASES.values(), ids=ROUTE_CASES.keys())
def test_route_from_ssh_args(args, route):
    assert hostkeys.route_from_ssh_args(*args) == route


BAD_ROUTES = {
    "a port that is no number": ("-J b:ssh", "invalid port 'ssh'"),
    "a port out of range": ("-J b:70000", "invalid port '70000'"),
    "an empty hop in a chain": ("-J a,,b", "cannot read the jump host ''"),
    "a template left unevaluated": ("-J {{ bastion }}", "cannot read the jump host"),
    "-J with nothing after it": ("-C -J", "-J at the end"),
    "an unclosed quote": ("-o 'ProxyJump=a", "cannot split"),
}


@pytest.mark.parametrize(("args", "message"), BAD_ROUTES.values(), ids=BAD_ROUTES.keys())
def test_unreadable_routes_say_what_is_wrong(args, message):
    with pytest.raises(hostkeys.ProxySpecError, match=re.escape(message)):
        hostkeys.route_from_ssh_args(args)


def test_a_hop_is_named_as_proxyjump_writes_it():
    assert [str(h) for h in hostkeys.parse_jumps("a,ops@b:2222,[fd00::1]")] == ["a:22", "ops@b:2222", "[fd00::1]:22"]


def test_proxy_command_tokens_are_filled_in_for_the_target():
    target = Target("web1", "web1.lab", 2222, user="ops")
    assert hostkeys.expand_proxy_command("ssh -l %r -W %h:%p b # %n 100%% %C", target) == \
        "ssh -l ops -W web1.lab:2222 b # web1.lab 100% %C"


def test_the_ssh_config_carries_fleets_pins_and_key_to_openssh_hops(tmp_path):
    known_hosts, identity = tmp_path / "ssh" / "known_hosts", tmp_path / "ssh" / "id_ed25519"
    path = hostkeys.write_ssh_config(known_hosts, identity)
    lines = path.read_text().splitlines()
    assert path == tmp_path / "ssh" / "ssh_config" and oct(path.stat().st_mode & 0o777) == "0o600"
    # first value wins in ssh_config: fleet's settings come before the user's and the system's files
    assert lines.index(f"UserKnownHostsFile {known_hosts}") < lines.index("Include ~/.ssh/config")
    assert "StrictHostKeyChecking yes" in lines and f"IdentityFile {identity}" in lines
    assert "StrictHostKeyChecking no" not in path.read_text()


# --- probes through a ProxyCommand and through jump hosts ----------------------------------------

# A ProxyCommand relaying stdin/stdout to %h:%p, as `nc %h %p` would.
RELAY = ("import socket,sys,threading;s=socket.create_connection((sys.argv[1],int(sys.argv[2])));"
         "threading.Thread(target=lambda:[s.sendall(b) for b in iter(lambda:sys.stdin.buffer.read1(65536),b'')],"
         "daemon=True).start();[sys.stdout.buffer.write(b) or sys.stdout.buffer.flush() "
         "for b in iter(lambda:s.recv(65536),b'')]")


def test_a_proxy_command_reaches_the_host_and_its_key_is_pinned(tmp_path, serve):
    key = paramiko.ECDSAKey.generate()
    server = serve(key)
    command = f"{sys.executable} -c {shlex.quote(RELAY)} %h %p"
    target = Target("web1", "127.0.0.1", server.port, proxy_command=command)
    found = probe(target, tmp_path / "known_hosts")
    assert (found.state, found.fingerprint) == ("pinned", key.fingerprint)


def test_a_proxy_command_that_fails_is_unreachable_naming_it(tmp_path):
    command = "sh -c 'echo no route to the bastion >&2; exit 3'"
    found = probe(Target("web1", "127.0.0.1", 22, proxy_command=command), tmp_path / "known_hosts")
    assert found.state == "unreachable" and f"ProxyCommand `{command}` gave no SSH handshake" in found.message
    assert "the command exited with 3: no route to the bastion" in found.message


class JumpServer(paramiko.ServerInterface):
    """An SSH jump host on loopback: one authorised client key, direct-tcpip to the names it resolves itself."""

    def __init__(self, key: paramiko.PKey, authorised: paramiko.PKey, names: dict[str, int]):
        self.key, self.authorised, self.names = key, authorised, names
        self.auth_attempts: list[str] = []
        self.forwarded: list[tuple[str, int]] = []
        self.pending: dict[int, socket.socket] = {}
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.key)
        try:
            transport.start_server(server=self)
        except (paramiko.SSHException, EOFError, OSError):
            return
        while transport.is_active():
            channel = transport.accept(timeout=0.2)
            if channel is not None:
                _relay(channel, self.pending.pop(channel.get_id()))

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        self.auth_attempts.append(username)
        return paramiko.AUTH_SUCCESSFUL if key == self.authorised else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "direct-tcpip" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        self.forwarded.append(destination)
        name, port = destination
        try:  # only this jump host's own names resolve, as a bastion's /etc/hosts would
            self.pending[chanid] = socket.create_connection(("127.0.0.1", self.names[name] if port == 22 else -1))
        except (KeyError, OSError, OverflowError):
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        return paramiko.OPEN_SUCCEEDED

    def close(self) -> None:
        self.sock.close()


def _relay(channel: paramiko.Channel, sock: socket.socket) -> None:
    def pump(read, write):
        try:
            for chunk in iter(lambda: read(65536), b""):
                write(chunk)
        except (OSError, EOFError):
            pass
        finally:  # either side hanging up ends both
            for end in (channel, sock):
                try:
                    end.close()
                except (OSError, EOFError):
                    pass
    threading.Thread(target=pump, args=(channel.recv, sock.sendall), daemon=True).start()
    threading.Thread(target=pump, args=(sock.recv, channel.sendall), daemon=True).start()


@pytest.fixture
def jump_env(tmp_path, serve):
    """fleet's key on disk, a host only the jump host can name (`web1.lab`), and a way to start jump hosts."""
    client = paramiko.ECDSAKey.generate()
    identity = tmp_path / "id_fleet"
    client.write_private_key_file(str(identity))
    behind = serve(paramiko.ECDSAKey.generate())
    jumps: list[JumpServer] = []

    def start_jump(names=None, authorised=client):
        jumps.append(JumpServer(paramiko.ECDSAKey.generate(), authorised, names or {"web1.lab": behind.port}))
        return jumps[-1]

    yield identity, behind, start_jump
    for jump in jumps:
        jump.close()


def probe_via(target: Target, known_hosts, identity) -> Probe:
    return hostkeys.probe_hosts([target], known_hosts, TIMEOUT, identity)[target.name]


def test_a_host_behind_a_jump_is_reached_by_the_name_the_jump_resolves(tmp_path, jump_env):
    identity, behind, start_jump = jump_env
    jump = start_jump()
    known_hosts = tmp_path / "known_hosts"
    target = Target("web1", "web1.lab", 22, (Hop("127.0.0.1", jump.port, "ops"),))
    found = probe_via(target, known_hosts, identity)
    assert (found.state, found.fingerprint) == ("pinned", behind.key.fingerprint)
    assert jump.forwarded == [("web1.lab", 22)] and jump.auth_attempts == ["ops"]
    # both the jump host and the host behind it are pinned: trust on first use, the same for each
    assert hostkeys._load(known_hosts).lookup(f"[127.0.0.1]:{jump.port}") is not None
    assert hostkeys._load(known_hosts).lookup("web1.lab") is not None
    assert probe_via(target, known_hosts, identity).state == "ok"


def test_hosts_behind_one_jump_share_one_login_on_it(tmp_path, jump_env, serve):
    identity, behind, start_jump = jump_env
    names = {f"web{i}.lab": serve(paramiko.ECDSAKey.generate()).port for i in range(1, 7)}
    jump = start_jump(names=names)
    hop = Hop("127.0.0.1", jump.port, "ops")
    targets = [Target(name.removesuffix(".lab"), name, 22, (hop,)) for name in names]
    found = hostkeys.probe_hosts(targets, tmp_path / "known_hosts", TIMEOUT, identity)
    assert {p.state for p in found.values()} == {"pinned"} and len(found) == 6
    assert jump.auth_attempts == ["ops"], "one session on the bastion, six channels through it"
    assert sorted(jump.forwarded) == sorted((name, 22) for name in names)


def test_a_chain_of_jumps_goes_through_each_in_order(tmp_path, jump_env):
    identity, behind, start_jump = jump_env
    inner = start_jump()
    outer = start_jump(names={"inner.lab": inner.port})
    target = Target("web1", "web1.lab", 22, (Hop("127.0.0.1", outer.port), Hop("inner.lab", 22)))
    assert probe_via(target, tmp_path / "known_hosts", identity).state == "pinned"
    assert outer.forwarded == [("inner.lab", 22)] and inner.forwarded == [("web1.lab", 22)]
    assert "inner.lab" in (tmp_path / "known_hosts").read_text()


def test_a_changed_jump_key_blocks_the_hosts_behind_it_before_fleet_authenticates(tmp_path, jump_env):
    identity, _, start_jump = jump_env
    jump = start_jump()
    known_hosts = tmp_path / "known_hosts"
    hostkeys.pin_key_line(known_hosts, "127.0.0.1", jump.port, "ecdsa-sha2-nistp256",
                          paramiko.ECDSAKey.generate().get_base64())
    target = Target("web1", "web1.lab", 22, (Hop("127.0.0.1", jump.port),))
    found = probe_via(target, known_hosts, identity)
    assert (found.state, found.usable) == ("jump_key_changed", False)
    assert f"jump host 127.0.0.1:{jump.port} changed" in found.message
    assert "fleet hosts accept-key web1 --jump 127.0.0.1" in found.message
    assert jump.auth_attempts == [] and jump.forwarded == []
    assert "web1.lab" not in known_hosts.read_text()
    accepted = hostkeys.accept_key(target, known_hosts, TIMEOUT, identity, jump="127.0.0.1")
    assert (accepted.state, accepted.fingerprint) == ("pinned", jump.key.fingerprint)
    assert probe_via(target, known_hosts, identity).state == "pinned"  # now web1.lab, on first contact


def test_accepting_a_jump_key_of_a_host_that_has_none_is_refused(tmp_path):
    found = hostkeys.accept_key(Target("web1", "127.0.0.1"), tmp_path / "known_hosts", TIMEOUT, jump="10.0.0.9")
    assert found.state == "invalid" and "not a jump host of web1" in found.message


def test_a_jump_host_that_is_down_makes_the_host_unreachable_naming_the_jump(tmp_path, jump_env):
    identity, _, _ = jump_env
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    found = probe_via(Target("web1", "web1.lab", 22, (Hop("127.0.0.1", port, "root"),)), tmp_path / "kh", identity)
    assert found.state == "unreachable"
    assert found.message.startswith(f"cannot connect to jump host root@127.0.0.1:{port}")
    assert "on the way to web1.lab:22" in found.message


def test_a_jump_that_refuses_fleets_key_says_which_key_to_authorise(tmp_path, jump_env):
    identity, _, start_jump = jump_env
    jump = start_jump(authorised=paramiko.ECDSAKey.generate())
    found = probe_via(Target("web1", "web1.lab", 22, (Hop("127.0.0.1", jump.port, "ops"),)), tmp_path / "kh", identity)
    assert found.state == "unreachable" and f"refused fleet's key {identity}.pub for user ops" in found.message
    assert jump.forwarded == []


def test_a_host_the_jump_cannot_reach_is_unreachable_naming_both(tmp_path, jump_env):
    identity, _, start_jump = jump_env
    jump = start_jump()
    found = probe_via(Target("db1", "db1.lab", 22, (Hop("127.0.0.1", jump.port),)), tmp_path / "kh", identity)
    assert found.state == "unreachable"
    assert f"jump host 127.0.0.1:{jump.port} could not open a connection to db1.lab:22" in found.message


def test_a_route_the_inventory_gets_wrong_is_invalid_and_probes_nothing(tmp_path):
    found = probe(Target("web1", "web1.lab", problem="cannot read the jump host"), tmp_path / "known_hosts")
    assert (found.state, found.message) == ("invalid", "cannot read the jump host")


def test_a_changed_key_behind_a_jump_is_accepted_through_the_jump(tmp_path, jump_env):
    identity, behind, start_jump = jump_env
    jump = start_jump()
    known_hosts = tmp_path / "known_hosts"
    target = Target("web1", "web1.lab", 22, (Hop("127.0.0.1", jump.port),))
    assert probe_via(target, known_hosts, identity).state == "pinned"
    behind.key = paramiko.ECDSAKey.generate()
    changed = probe_via(target, known_hosts, identity)
    assert changed.state == "key_changed" and "fleet hosts accept-key web1" in changed.message
    accepted = hostkeys.accept_key(target, known_hosts, TIMEOUT, identity)
    assert (accepted.state, accepted.fingerprint) == ("pinned", behind.key.fingerprint)
    assert jump.forwarded == [("web1.lab", 22)] * 3, "every contact went through the jump"
    assert probe_via(target, known_hosts, identity).state == "ok"


# --- routes completed from ssh_config, as OpenSSH reads it after the arguments -------------------------

SSH_CONFIG = """
Host *.internal
    ProxyJump ops@bastion
    User deploy
Host bastion
    HostName 10.0.0.9
    Port 2200
Host legacy
    HostName 10.1.0.5
    ProxyCommand ssh -W %h:%p gate
Host db1.internal
    Port 2222
"""


def completed(address: str, port: int = 22, args: tuple[str, ...] = ()) -> Target:
    jumps, command = hostkeys.route_from_ssh_args(*args)
    target = Target("h", address, port, jumps, command)
    return hostkeys.complete_from_ssh_config(target, paramiko.SSHConfig.from_text(SSH_CONFIG),
                                             hostkeys.names_proxy(*args))


def test_a_proxyjump_in_ssh_config_is_followed_with_each_hops_own_settings():
    target = completed("web1.internal")
    assert (target.address, target.port) == ("web1.internal", 22)
    assert target.jumps == (Hop("10.0.0.9", 2200, "ops"),)


def test_ssh_config_gives_the_port_unless_the_inventory_set_one():
    assert completed("db1.internal").port == 2222
    assert completed("db1.internal", port=2022).port == 2022


def test_a_proxycommand_in_ssh_config_comes_with_its_tokens_filled():
    target = completed("legacy")
    assert (target.address, target.jumps, target.proxy_command) == ("10.1.0.5", (), "ssh -W 10.1.0.5:22 gate")


def test_the_ssh_arguments_win_over_ssh_config():
    assert completed("web1.internal", args=("-J other",)).jumps == (Hop("other"),)
    assert completed("web1.internal", args=("-o ProxyJump=none",)).jumps == ()


def test_a_host_ssh_config_says_nothing_of_stays_as_it_is():
    assert completed("10.2.0.1") == Target("h", "10.2.0.1", 22)


def test_missing_ssh_config_files_are_no_error(tmp_path):
    config = hostkeys.load_ssh_config((tmp_path / "none", tmp_path / "neither"))
    assert config.lookup("web1") == {"hostname": "web1"}
