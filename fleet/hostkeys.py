"""Reachability and SSH host-key pinning, with paramiko.

Before a run, every target host is probed: a TCP connection and an SSH key
exchange with a short timeout. The key a host offers is compared with
fleet's own known_hosts file (the one Ansible then uses with strict
checking). Unknown hosts are pinned on first contact; a host whose key
changed is blocked until an operator accepts the new key.

A host behind a bastion is probed the way OpenSSH would reach it, read from
its `ansible_ssh_*_args`: through each ProxyJump hop in turn (a
`direct-tcpip` channel opened by the previous hop, so names resolve where
that hop resolves them), or through its ProxyCommand. Every hop's own key is
checked against the same known_hosts before fleet authenticates to it.
"""

from __future__ import annotations

import base64
import getpass
import logging
import re
import shlex
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

PROBE_WORKERS = 32
SSH_CONFIG_NAME = "ssh_config"  # next to known_hosts; Ansible's ssh and its ProxyJump hops read it

log = logging.getLogger("fleet.hostkeys")


class ProxySpecError(ValueError):
    """An ssh argument naming a jump host or proxy command that cannot be understood."""


@dataclass(frozen=True)
class Hop:
    """One jump host on the way to a target, as ProxyJump names it: `[user@]address[:port]`."""

    address: str
    port: int = 22
    user: str = ""  # "" means what OpenSSH does: the local user name

    def __str__(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.address}:{self.port}"


@dataclass(frozen=True)
class Target:
    """Where one inventory host is reached, and through what."""

    name: str
    address: str
    port: int = 22
    jumps: tuple[Hop, ...] = ()  # ProxyJump hops, outermost first
    proxy_command: str = ""  # a ProxyCommand, its %-tokens not yet expanded
    user: str = ""  # ansible_user, for ProxyCommand's %r
    problem: str = ""  # why the route in the inventory cannot be used ('' when it can)


@dataclass(frozen=True)
class Probe:
    """What a probe found.

    `ok`, `pinned` (first contact), `unreachable` (the host or a hop on the
    way), `key_changed` (the host's own key), `jump_key_changed` (a hop's
    key: every host behind it is blocked), `invalid` (its route cannot be
    read from the inventory).
    """

    name: str
    state: str
    message: str = ""
    fingerprint: str = ""

    @property
    def usable(self) -> bool:
        return self.state in ("ok", "pinned")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


# --- reading a route out of ssh arguments (pure) ---------------------------------------------

_OPTION = re.compile(r"\s*(?P<key>[A-Za-z]+)\s*(?:=\s*|\s+)(?P<value>.*)", re.DOTALL)
_HOP = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@\s/]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\[\]\s{}/]+))(?::(?P<port>[^:]*))?$")


def route_from_ssh_args(*arg_strings: str) -> tuple[tuple[Hop, ...], str]:
    """The ProxyJump hops and the ProxyCommand a host's ssh arguments ask for.

    The strings are Ansible's `ssh_args`, `ssh_common_args` and `ssh_extra_args`
    in the order Ansible puts them on the command line; as in OpenSSH, the first
    ProxyJump (`-J`) or ProxyCommand wins and `none` turns both off.
    Raises ProxySpecError for what OpenSSH would also refuse.
    """
    for key, value in _proxy_options(arg_strings):
        if value.strip().lower() == "none":
            return (), ""
        if key == "proxycommand":
            return (), value.strip()
        return parse_jumps(value), ""
    return (), ""


def _proxy_options(arg_strings) -> list[tuple[str, str]]:
    """(lowercase option name, value) of every ProxyJump/-J/ProxyCommand, in order."""
    found = []
    for text in arg_strings:
        try:
            words = shlex.split(text or "")
        except ValueError as exc:
            raise ProxySpecError(f"cannot split the ssh arguments {text!r} ({exc})") from exc
        for flag, value in _flag_values(words):
            if flag == "-J":
                found.append(("proxyjump", value))
            elif match := _OPTION.fullmatch(value):
                if match["key"].lower() in ("proxyjump", "proxycommand"):
                    found.append((match["key"].lower(), match["value"]))
    return found


def _flag_values(words: list[str]) -> list[tuple[str, str]]:
    """(`-o` or `-J`, its value) for each such flag, written apart (`-o X`) or joined (`-oX`)."""
    pairs = []
    for index, word in enumerate(words):
        for flag in ("-o", "-J"):
            if word == flag:
                if index + 1 >= len(words):
                    raise ProxySpecError(f"{flag} at the end of the ssh arguments has no value")
                pairs.append((flag, words[index + 1]))
            elif word.startswith(flag) and len(word) > 2:
                pairs.append((flag, word[2:]))
    return pairs


def parse_jumps(spec: str) -> tuple[Hop, ...]:
    """`a,user@b:2222,ssh://c` -> the hops in connection order (the first is reached directly)."""
    hops = []
    for part in spec.split(","):
        match = _HOP.match(part.strip())
        if not part.strip() or match is None:
            raise ProxySpecError(f"cannot read the jump host {part.strip()!r} in ProxyJump {spec!r}; "
                                 "write it as [user@]host[:port], several separated by commas")
        port = match["port"]
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ProxySpecError(f"the jump host {part.strip()!r} has an invalid port {port!r}")
        hops.append(Hop(match["v6"] or match["host"], int(port) if port else 22, match["user"] or ""))
    return tuple(hops)


def expand_proxy_command(command: str, target: Target) -> str:
    """OpenSSH's %h %p %r %n %% tokens of a ProxyCommand, filled in for the target."""
    tokens = {"h": target.address, "p": str(target.port), "r": target.user or getpass.getuser(),
              "n": target.address, "%": "%"}
    return re.sub(r"%(.)", lambda m: tokens.get(m[1], m[0]), command)


def ssh_config_text(known_hosts: Path, identity: Path | None) -> str:
    """fleet's ssh_config, given to Ansible's ssh with -F.

    Why a file: OpenSSH starts a ProxyJump hop as a second ssh that inherits `-F`
    but none of the `-o` options, so only a config file makes the hop check its
    key against fleet's known_hosts and offer fleet's key. The user's and the
    system's files are included after fleet's settings, which win (first value
    wins in ssh_config), so host aliases defined there keep working.
    """
    lines = ["# Written by fleet on every run; edits are lost.",
             f"UserKnownHostsFile {known_hosts}", "StrictHostKeyChecking yes", "BatchMode yes",
             # a hop inherits no -o either: without these a silent jump host would hold a run for minutes
             "ConnectTimeout 10", "ServerAliveInterval 15"]
    if identity is not None:
        lines.append(f"IdentityFile {identity}")
    lines += ["Include ~/.ssh/config", "Include /etc/ssh/ssh_config"]
    return "\n".join(lines) + "\n"


def ssh_config_path(known_hosts: Path) -> Path:
    return known_hosts.with_name(SSH_CONFIG_NAME)


def write_ssh_config(known_hosts: Path, identity: Path | None) -> Path:
    """Write fleet's ssh_config next to known_hosts (only when it changes); return its path."""
    path = ssh_config_path(known_hosts)
    text = ssh_config_text(known_hosts, identity)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(path)
    return path


# --- keys and probes (I/O) -------------------------------------------------------------------

def ensure_identity(identity: Path) -> Path:
    """Create fleet's own SSH key pair if missing; return the private key path."""
    if not identity.exists():
        identity.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet", "-f", str(identity)],
            check=True, stdin=subprocess.DEVNULL,
        )
    return identity


def pin_key_line(known_hosts: Path, address: str, port: int, key_type: str, key_b64: str) -> None:
    """Record (or replace) the pinned key of one address in known_hosts."""
    keys = _load(known_hosts)
    name = known_hosts_name(address, port)
    if name in keys:
        del keys[name]
    keys.add(name, key_type, paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64)))
    _save(keys, known_hosts)


def probe_hosts(targets: list[Target], known_hosts: Path, timeout: float,
                identity: Path | None = None) -> dict[str, Probe]:
    """Probe every target in parallel; pin first-contact keys; return a Probe per host name.

    `identity` is the key fleet authenticates to jump hosts with (targets
    themselves are only asked for their key).
    """
    if not targets:
        return {}
    pins = _Pins(_load(known_hosts))
    with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(targets))) as pool:
        offered = dict(zip([t.name for t in targets],
                           pool.map(lambda t: _fetch_key(t, timeout, pins, identity), targets)))
    results = {}
    for target in targets:
        key = offered[target.name]
        results[target.name] = key if isinstance(key, Probe) else _compare(pins.keys, target, key)
    _save(pins.keys, known_hosts)
    return results


def accept_key(target: Target, known_hosts: Path, timeout: float, identity: Path | None = None,
               jump: str = "") -> Probe:
    """Replace the pinned key of a host (or of `jump`, one hop on its way) with the one it offers now."""
    if jump:
        return _accept_jump_key(target, known_hosts, timeout, identity, jump)
    pins = _Pins(_load(known_hosts))
    key = _fetch_key(target, timeout, pins, identity)
    if isinstance(key, Probe):
        return key
    pins.replace(known_hosts_name(target.address, target.port), key)
    _save(pins.keys, known_hosts)
    return Probe(target.name, "pinned", "new key accepted", fingerprint(key))


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." as ssh-keygen prints it


def _accept_jump_key(target: Target, known_hosts: Path, timeout: float, identity: Path | None,
                     jump: str) -> Probe:
    index = next((i for i, h in enumerate(target.jumps)
                  if jump in (h.address, str(h), known_hosts_name(h.address, h.port))), None)
    if index is None:
        via = ", ".join(str(h) for h in target.jumps) or "no jump host"
        return Probe(target.name, "invalid", f"{jump} is not a jump host of {target.name} (it goes via {via})")
    hop = target.jumps[index]
    pins = _Pins(_load(known_hosts))
    pins.forget(known_hosts_name(hop.address, hop.port))
    # Up to the hop before it, every key must still match; the hop itself is pinned afresh.
    way = Target(f"{hop.address}", hop.address, hop.port, target.jumps[:index])
    key = _fetch_key(way, timeout, pins, identity)
    if isinstance(key, Probe):
        return key
    pins.replace(known_hosts_name(hop.address, hop.port), key)
    _save(pins.keys, known_hosts)
    return Probe(target.name, "pinned", f"new key of jump host {hop} accepted", fingerprint(key))


def _compare(keys: paramiko.HostKeys, target: Target, key: paramiko.PKey) -> Probe:
    name = known_hosts_name(target.address, target.port)
    pinned = keys.lookup(name)
    if not pinned:
        keys.add(name, key.get_name(), key)
        return Probe(target.name, "pinned", f"pinned host key {fingerprint(key)} on first contact", fingerprint(key))
    if pinned.get(key.get_name()) == key:
        return Probe(target.name, "ok", "", fingerprint(key))
    return Probe(
        target.name, "key_changed",
        f"SSH host key of {name} changed (now {fingerprint(key)}); the host is blocked until an admin "
        f"checks it and runs `fleet hosts accept-key {target.name}`",
        fingerprint(key),
    )


class _Pins:
    """known_hosts shared by the probe threads: hops are checked (and pinned) while the probes run."""

    def __init__(self, keys: paramiko.HostKeys):
        self.keys = keys
        self.lock = threading.Lock()

    def check_hop(self, hop: Hop, key: paramiko.PKey) -> bool:
        """True when the hop's key is the pinned one, or the hop is new and now pinned."""
        name = known_hosts_name(hop.address, hop.port)
        with self.lock:
            pinned = self.keys.lookup(name)
            if not pinned:
                self.keys.add(name, key.get_name(), key)
                log.info("pinned the key %s of jump host %s on first contact", fingerprint(key), hop)
                return True
            return pinned.get(key.get_name()) == key

    def replace(self, name: str, key: paramiko.PKey) -> None:
        with self.lock:
            self.forget(name)
            self.keys.add(name, key.get_name(), key)

    def forget(self, name: str) -> None:
        if name in self.keys:
            del self.keys[name]


def _fetch_key(target: Target, timeout: float, pins: _Pins, identity: Path | None) -> paramiko.PKey | Probe:
    """The host key a target offers, or the Probe saying why it could not be had."""
    if target.problem:
        return Probe(target.name, "invalid", target.problem)
    hops: list[paramiko.Transport] = []
    sock = None
    try:
        sock = _open_way(target, timeout, pins, identity, hops)
        if isinstance(sock, Probe):
            return sock
        return _server_key(target, sock, timeout)
    finally:
        for transport in reversed(hops):
            transport.close()
        if isinstance(sock, _ProxyCommand):
            sock.finish()


def _server_key(target: Target, sock, timeout: float) -> paramiko.PKey | Probe:
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if isinstance(sock, _ProxyCommand):
            return Probe(target.name, "unreachable",
                         f"ProxyCommand `{target.proxy_command}` gave no SSH handshake of {target.address}:"
                         f"{target.port} ({exc}{_proxy_exit(sock)}); check the command and sshd there")
        return Probe(target.name, "unreachable",
                     f"{target.address}:{target.port} accepted a connection{_via(target)} but no SSH handshake "
                     f"({exc}); check sshd there")
    finally:
        transport.close()


def _proxy_exit(sock) -> str:
    """How a ProxyCommand that already ended ended ('' for anything else)."""
    if not isinstance(sock, _ProxyCommand) or sock.process.poll() is None:
        return ""
    said = sock.process.stderr.read(2000).decode(errors="replace").strip().splitlines()
    return f"; the command exited with {sock.process.returncode}" + (f": {said[-1]}" if said else "")


class _ProxyCommand(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, whose process is also reaped and whose close may come twice."""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def finish(self) -> None:
        self.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()


def _via(target: Target) -> str:
    return " through jump host " + ", ".join(str(h) for h in target.jumps) if target.jumps else ""


def _open_way(target: Target, timeout: float, pins: _Pins, identity: Path | None,
              hops: list[paramiko.Transport]):
    """A socket-like connection to the target's sshd: direct, through its jump hosts, or its ProxyCommand."""
    if target.proxy_command:
        command = expand_proxy_command(target.proxy_command, target)
        try:  # as OpenSSH does: the user's shell runs it
            return _ProxyCommand(shlex.join(["/bin/sh", "-c", f"exec {command}"]))
        except (OSError, paramiko.SSHException) as exc:
            return Probe(target.name, "unreachable", f"cannot start ProxyCommand `{command}` ({exc})")
    for hop in target.jumps:
        transport = _enter_hop(target, hop, hops[-1] if hops else None, timeout, pins, identity)
        if isinstance(transport, Probe):
            return transport
        hops.append(transport)
    try:
        return _open(target.address, target.port, hops[-1] if hops else None, timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if not hops:
            return Probe(target.name, "unreachable", f"cannot connect to {target.address}:{target.port} "
                         f"({_reason(exc)}); is the host up and sshd running?")
        return Probe(target.name, "unreachable",
                     f"jump host {target.jumps[-1]} could not open a connection to {target.address}:{target.port} "
                     f"({_reason(exc)}); is that host up, and does the jump host resolve its name?")


def _open(address: str, port: int, through: paramiko.Transport | None, timeout: float):
    """A TCP connection to address:port, or a direct-tcpip channel to it from the hop before (which resolves it)."""
    if through is None:
        return socket.create_connection((address, port), timeout=timeout)
    return through.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ChannelException):
        return exc.text
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _enter_hop(target: Target, hop: Hop, through: paramiko.Transport | None, timeout: float,
               pins: _Pins, identity: Path | None) -> paramiko.Transport | Probe:
    """An authenticated session on one jump host whose key matches its pin (or is pinned now)."""
    try:
        sock = _open(hop.address, hop.port, through, timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return Probe(target.name, "unreachable", _hop_unreachable(target, hop, through is None, _reason(exc)))
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        if not pins.check_hop(hop, key):
            transport.close()
            return _jump_key_changed(target, hop, key)
        problem = _authenticate(transport, hop, identity)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        problem = f"jump host {hop} gave no SSH session ({_reason(exc)}); check sshd there"
    if problem:
        transport.close()
        return Probe(target.name, "unreachable", problem)
    return transport


def _hop_unreachable(target: Target, hop: Hop, first: bool, reason: str) -> str:
    way = f"on the way to {target.address}:{target.port}"
    if first:
        return f"cannot connect to jump host {hop} ({reason}) {way}; is the jump host up and sshd running?"
    return f"the jump host before {hop} could not open a connection to it ({reason}) {way}; is {hop.address} up?"


def _jump_key_changed(target: Target, hop: Hop, key: paramiko.PKey) -> Probe:
    return Probe(
        target.name, "jump_key_changed",
        f"SSH host key of jump host {hop} changed (now {fingerprint(key)}); fleet does not go through it, so "
        f"{target.name} and every host behind it are blocked until an admin checks it and runs "
        f"`fleet hosts accept-key {target.name} --jump {hop.address}`",
        fingerprint(key),
    )


def _authenticate(transport: paramiko.Transport, hop: Hop, identity: Path | None) -> str:
    """'' once a key is accepted; else why none was (fleet's key first, then the agent's, as ssh does)."""
    user = hop.user or getpass.getuser()
    keys, unreadable = _client_keys(identity)
    for key in keys:
        try:
            transport.auth_publickey(user, key)
        except paramiko.AuthenticationException:
            continue
        if transport.is_authenticated():
            return ""
    offered = f"fleet's key {identity}.pub" if identity else "no key"
    return (f"jump host {hop} refused {offered} for user {user}{unreadable}; "
            f"authorise it there (or name the user: ProxyJump=user@{hop.address})")


def _client_keys(identity: Path | None) -> tuple[list[paramiko.PKey], str]:
    keys, note = [], ""
    if identity is not None and identity.exists():
        try:
            keys.append(paramiko.PKey.from_path(identity))
        except (paramiko.SSHException, OSError) as exc:
            note = f" (fleet's key could not be read: {exc})"
    try:
        keys += list(paramiko.Agent().get_keys())
    except paramiko.SSHException:
        pass
    return keys, note


def _load(known_hosts: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if known_hosts.exists():
        keys.load(str(known_hosts))
    return keys


def _save(keys: paramiko.HostKeys, known_hosts: Path) -> None:
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = known_hosts.with_suffix(".tmp")
    keys.save(str(tmp))
    tmp.replace(known_hosts)
