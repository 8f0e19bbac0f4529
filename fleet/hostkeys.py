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
import os
import pwd
import re
import select
import shlex
import socket
import subprocess
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import paramiko

# What an SSH session runs over: a TCP socket, a channel from a jump host, or a ProxyCommand
# (paramiko's Channel and ProxyCommand have no type information: Any).
Connection: TypeAlias = "socket.socket | paramiko.Channel | paramiko.ProxyCommand"

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
        address = f"[{self.address}]" if ":" in self.address else self.address  # IPv6
        return f"{self.user + '@' if self.user else ''}{address}:{self.port}"


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
# [ssh://][user@]host[:port], the host maybe an IPv6 address in brackets; no spaces or braces (a template left over)
_HOP = re.compile(
    r"^(?:ssh://)?(?:(?P<user>[^@\s/]+)@)?"
    r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\[\]\s{}/]+))(?::(?P<port>[^:]*))?$"
)


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


def _proxy_options(arg_strings: Iterable[str]) -> list[tuple[str, str]]:
    """(lowercase option name, value) of every ProxyJump/-J/ProxyCommand, in order."""
    found: list[tuple[str, str]] = []
    for text in arg_strings:
        try:
            words = shlex.split(text or "")
        except ValueError as exc:
            raise ProxySpecError(f"cannot split the ssh arguments {text!r} ({exc})") from exc
        for flag, value in _flag_values(words):
            if flag == "-J":
                found.append(("proxyjump", value))
            elif (match := _OPTION.fullmatch(value)) and match["key"].lower() in ("proxyjump", "proxycommand"):
                found.append((match["key"].lower(), match["value"]))
    return found


def _flag_values(words: list[str]) -> list[tuple[str, str]]:
    """(`-o` or `-J`, its value) for each such flag, written apart (`-o X`) or joined (`-oX`)."""
    pairs: list[tuple[str, str]] = []
    for index, word in enumerate(words):
        for flag in ("-o", "-J"):
            if word == flag:
                if index + 1 >= len(words):
                    raise ProxySpecError(f"{flag} at the end of the ssh arguments has no value")
                pairs.append((flag, words[index + 1]))
            elif word.startswith(flag) and len(word) > 2:
                pairs.append((flag, word[2:]))
    return pairs


def names_proxy(*arg_strings: str) -> bool:
    """Whether the ssh arguments set ProxyJump or ProxyCommand at all (`none` included): then ssh_config's
    do not count."""
    return bool(_proxy_options(arg_strings))


def parse_jumps(spec: str) -> tuple[Hop, ...]:
    """`a,user@b:2222,ssh://c` -> the hops in connection order (the first is reached directly)."""
    hops = []
    for part in spec.split(","):
        match = _HOP.match(part.strip())
        if not part.strip() or match is None:
            raise ProxySpecError(
                f"cannot read the jump host {part.strip()!r} in ProxyJump {spec!r}; "
                "write it as [user@]host[:port], several separated by commas"
            )
        port = match["port"]
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ProxySpecError(f"the jump host {part.strip()!r} has an invalid port {port!r}")
        hops.append(Hop(match["v6"] or match["host"], int(port) if port else 22, match["user"] or ""))
    return tuple(hops)


def complete_from_ssh_config(target: Target, config: paramiko.SSHConfig, args_name_proxy: bool) -> Target:
    """The target as OpenSSH completes it from ssh_config: HostName, Port, its Host block's ProxyJump or
    ProxyCommand (unless the ssh arguments named one: first value wins), and each hop's HostName, Port, User.

    Raises ProxySpecError for a ProxyJump or Port there that cannot be read.
    """
    found = _lookup(config, target.address)
    jumps, command = (target.jumps, target.proxy_command) if args_name_proxy else _config_proxy(found)
    return Target(
        target.name,
        found.get("hostname", target.address),
        _config_port(found, target.port),
        tuple(_complete_hop(hop, config) for hop in jumps),
        command,
        target.user,
        target.problem,
    )


def _lookup(config: paramiko.SSHConfig, name: str) -> dict[str, Any]:
    try:
        return dict(config.lookup(name))
    except (paramiko.SSHException, ValueError, OSError) as exc:  # e.g. a `Match exec` paramiko cannot run
        raise ProxySpecError(f"cannot read ssh_config for {name} ({exc})") from exc


def _config_proxy(found: dict[str, Any]) -> tuple[tuple[Hop, ...], str]:
    """The ProxyJump or ProxyCommand an ssh_config lookup found; the one it met first wins, as in OpenSSH."""
    for key in found:
        if key in ("proxyjump", "proxycommand"):
            value = str(found[key]).strip()
            if value.lower() == "none":
                return (), ""
            return (parse_jumps(value), "") if key == "proxyjump" else ((), value)
    return (), ""


def _config_port(found: dict[str, Any], port: int) -> int:
    if port != 22 or "port" not in found:  # a port the inventory set is on ssh's command line: it wins
        return port
    if not str(found["port"]).isdigit():
        raise ProxySpecError(f"ssh_config gives the invalid port {found['port']!r}")
    return int(found["port"])


def _complete_hop(hop: Hop, config: paramiko.SSHConfig) -> Hop:
    found = _lookup(config, hop.address)
    return Hop(found.get("hostname", hop.address), _config_port(found, hop.port), hop.user or found.get("user", ""))


def load_ssh_config(paths: tuple[Path, ...] | None = None) -> paramiko.SSHConfig:
    """The user's and the system's ssh_config, in the order fleet's own ssh_config includes them.

    Files that are missing or unreadable are left out: ssh would refuse them
    itself, and the probe says nothing about them that ssh would not.
    """
    if paths is None:  # OpenSSH's ~ is the account's home directory, whatever $HOME says
        paths = (Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "config", Path("/etc/ssh/ssh_config"))
    config = paramiko.SSHConfig()
    for path in paths:
        try:
            with open(path) as lines:
                config.parse(lines)
        except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("the probe reads no ssh_config from %s (%s)", path, exc)
    return config


def expand_proxy_command(command: str, target: Target) -> str:
    """OpenSSH's %h %p %r %n %% tokens of a ProxyCommand, filled in for the target."""
    tokens = {
        "h": target.address,
        "p": str(target.port),
        "r": target.user or getpass.getuser(),
        "n": target.address,
        "%": "%",
    }
    return re.sub(r"%(.)", lambda m: tokens.get(m[1], m[0]), command)


def ssh_config_text(known_hosts: Path, identity: Path | None) -> str:
    """fleet's ssh_config, given to Ansible's ssh with -F.

    Why a file: OpenSSH starts a ProxyJump hop as a second ssh that inherits `-F`
    but none of the `-o` options, so only a config file makes the hop check its
    key against fleet's known_hosts and offer fleet's key. The user's and the
    system's files are included after fleet's settings, which win (first value
    wins in ssh_config), so host aliases defined there keep working.
    """
    lines = [
        "# Written by fleet on every run; edits are lost.",
        f"UserKnownHostsFile {known_hosts}",
        "StrictHostKeyChecking yes",
        "BatchMode yes",
        # a hop inherits no -o either: without these a silent jump host would hold a run for minutes
        "ConnectTimeout 10",
        "ServerAliveInterval 15",
    ]
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
            check=True,
            stdin=subprocess.DEVNULL,
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


def probe_hosts(
    targets: list[Target], known_hosts: Path, timeout: float, identity: Path | None = None
) -> dict[str, Probe]:
    """Probe every target in parallel; pin first-contact keys; return a Probe per host name.

    `identity` is the key fleet authenticates to jump hosts with (targets
    themselves are only asked for their key).
    """
    if not targets:
        return {}
    ways = _Ways(_load(known_hosts), timeout, identity)
    try:
        with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(targets))) as pool:
            offered = dict(zip([t.name for t in targets], pool.map(ways.fetch_key, targets), strict=False))
    finally:
        ways.close()
    results = {}
    for target in targets:
        key = offered[target.name]
        results[target.name] = key if isinstance(key, Probe) else _compare(ways.keys, target, key)
    _save(ways.keys, known_hosts)
    return results


def accept_key(
    target: Target, known_hosts: Path, timeout: float, identity: Path | None = None, jump: str = ""
) -> Probe:
    """Replace the pinned key of a host (or of `jump`, one hop on its way) with the one it offers now."""
    whose = _hop_as_target(target, jump) if jump else target
    if isinstance(whose, Probe):
        return whose
    ways = _Ways(_load(known_hosts), timeout, identity)
    try:
        key = ways.fetch_key(whose)  # through the hops before it, whose keys must still match
    finally:
        ways.close()
    if isinstance(key, Probe):
        return key
    ways.replace(known_hosts_name(whose.address, whose.port), key)
    _save(ways.keys, known_hosts)
    return Probe(
        target.name, "pinned", f"new key of jump host {jump} accepted" if jump else "new key accepted", fingerprint(key)
    )


def fingerprint(key: paramiko.PKey) -> str:
    printed: str = key.fingerprint  # "SHA256:..." as ssh-keygen prints it
    return printed


def pinned_entries(known_hosts: Path) -> list[tuple[str, str, str]]:
    """Every pin in a known_hosts file as (known_hosts name, key type, base64 key), sorted; [] when it is missing."""
    keys = _load(known_hosts)
    return sorted((name, key_type, key.get_base64()) for name in keys for key_type, key in keys[name].items())


def accepted_name(target: Target, jump: str = "") -> str:
    """The known_hosts name whose pin `accept_key(target, ..., jump)` replaces ('' when `jump` is not on the way)."""
    whose = _hop_as_target(target, jump) if jump else target
    return "" if isinstance(whose, Probe) else known_hosts_name(whose.address, whose.port)


def _hop_as_target(target: Target, jump: str) -> Target | Probe:
    """The jump host `jump` (address, user@address:port or known_hosts name) as a target behind the hops before it."""
    for index, hop in enumerate(target.jumps):
        if jump in (hop.address, str(hop), known_hosts_name(hop.address, hop.port)):
            return Target(target.name, hop.address, hop.port, target.jumps[:index])
    via = ", ".join(str(h) for h in target.jumps) or "no jump host"
    return Probe(target.name, "invalid", f"{jump} is not a jump host of {target.name} (it goes via {via})")


def _compare(keys: paramiko.HostKeys, target: Target, key: paramiko.PKey) -> Probe:
    name = known_hosts_name(target.address, target.port)
    pinned = keys.lookup(name)
    if not pinned:
        keys.add(name, key.get_name(), key)
        return Probe(target.name, "pinned", f"pinned host key {fingerprint(key)} on first contact", fingerprint(key))
    if pinned.get(key.get_name()) == key:
        return Probe(target.name, "ok", "", fingerprint(key))
    return Probe(
        target.name,
        "key_changed",
        f"SSH host key of {name} changed (now {fingerprint(key)}); the host is blocked until an admin "
        f"checks it and runs `fleet hosts accept-key {target.name}`",
        fingerprint(key),
    )


class _HopFailure(Exception):
    """A jump host that could not be gone through; every target behind it gets a Probe from it."""

    def __init__(self, state: str, hop: Hop, text: str = "", hint: str = "", key_fingerprint: str = ""):
        super().__init__(text)
        self.state, self.hop, self.text, self.hint, self.fingerprint = state, hop, text, hint, key_fingerprint

    def probe(self, target: Target) -> Probe:
        if self.state == "jump_key_changed":
            return Probe(
                target.name,
                self.state,
                (
                    f"SSH host key of jump host {self.hop} changed (now {self.fingerprint}); fleet does not go "
                    f"through it, so {target.name} and every host behind it are blocked until an admin checks it "
                    f"and runs `fleet hosts accept-key {target.name} --jump {self.hop.address}`"
                ),
                self.fingerprint,
            )
        return Probe(target.name, self.state, f"{self.text} on the way to {target.address}:{target.port}; {self.hint}")


class _Ways:
    """How the probes of one call reach their targets, shared by the probe threads.

    The pins (known_hosts in memory: hops are checked and pinned while the
    probes run), and one authenticated session per chain of jump hosts, used
    by every target behind it: a bastion sees one login per probe, not one per
    host, so its MaxStartups never drops probes, and a bastion that is down is
    tried once.
    """

    def __init__(self, keys: paramiko.HostKeys, timeout: float, identity: Path | None):
        self.keys, self.timeout, self.identity = keys, timeout, identity
        self.lock = threading.Lock()  # guards keys and the two dicts
        self.sessions: dict[tuple[Hop, ...], paramiko.Transport | _HopFailure] = {}
        self.chain_locks: dict[tuple[Hop, ...], threading.Lock] = {}

    def fetch_key(self, target: Target) -> paramiko.PKey | Probe:
        """The host key a target offers, or the Probe saying why it could not be had."""
        if target.problem:
            return Probe(target.name, "invalid", target.problem)
        try:
            sock = _start_proxy(target) if target.proxy_command else self._connect(target)
        except _HopFailure as failure:
            return failure.probe(target)
        if isinstance(sock, Probe):
            return sock
        try:
            return _server_key(target, sock, self.timeout)
        finally:
            if isinstance(sock, _ProxyCommand):
                sock.finish()

    def _connect(self, target: Target) -> Connection:
        """A TCP connection to the target's sshd, or a direct-tcpip channel to it from its last jump host."""
        through = self.session(target.jumps) if target.jumps else None
        try:
            return _open(target.address, target.port, through, self.timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if through is None:
                return Probe(
                    target.name,
                    "unreachable",
                    f"cannot connect to {target.address}:{target.port} "
                    f"({_reason(exc)}); is the host up and sshd running?",
                )
            return Probe(
                target.name,
                "unreachable",
                f"jump host {target.jumps[-1]} could not open a connection to {target.address}:"
                f"{target.port} ({_reason(exc)}); is that host up, and does the jump host resolve its name?",
            )

    def session(self, jumps: tuple[Hop, ...]) -> paramiko.Transport:
        """An authenticated session on the last of `jumps`, reached through the others; raises _HopFailure."""
        # Each chain is entered once; a longer chain's lock is taken before its prefix's, never the reverse.
        with self._chain_lock(jumps):
            known = self.sessions.get(jumps)
            if known is None:
                known = self._enter(jumps)
                with self.lock:
                    self.sessions[jumps] = known
        if isinstance(known, _HopFailure):
            raise known
        return known

    def _chain_lock(self, jumps: tuple[Hop, ...]) -> threading.Lock:
        with self.lock:
            return self.chain_locks.setdefault(jumps, threading.Lock())

    def _enter(self, jumps: tuple[Hop, ...]) -> paramiko.Transport | _HopFailure:
        try:
            through = self.session(jumps[:-1]) if len(jumps) > 1 else None
        except _HopFailure as failure:
            return failure
        return _enter_hop(jumps[-1], through, self)

    def check_hop(self, hop: Hop, key: paramiko.PKey) -> bool:
        """True when the hop's key is the pinned one, or the hop is new and now pinned (trust on first use)."""
        name = known_hosts_name(hop.address, hop.port)
        with self.lock:
            pinned = self.keys.lookup(name)
            if not pinned:
                self.keys.add(name, key.get_name(), key)
                log.info("pinned the key %s of jump host %s on first contact", fingerprint(key), hop)
                return True
            return bool(pinned.get(key.get_name()) == key)

    def replace(self, name: str, key: paramiko.PKey) -> None:
        with self.lock:
            if name in self.keys:
                del self.keys[name]
            self.keys.add(name, key.get_name(), key)

    def close(self) -> None:
        """End every jump host session, the innermost first."""
        for chain in sorted(self.sessions, key=len, reverse=True):
            session = self.sessions[chain]
            if isinstance(session, paramiko.Transport):
                session.close()


def _server_key(target: Target, sock: Connection, timeout: float) -> paramiko.PKey | Probe:
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if isinstance(sock, _ProxyCommand):
            return Probe(
                target.name,
                "unreachable",
                f"ProxyCommand `{target.proxy_command}` gave no SSH handshake of {target.address}:"
                f"{target.port} ({exc}{_proxy_exit(sock)}); check the command and sshd there",
            )
        return Probe(
            target.name,
            "unreachable",
            f"{target.address}:{target.port} accepted a connection{_via(target)} but no SSH handshake "
            f"({exc}); check sshd there",
        )
    finally:
        transport.close()


def _via(target: Target) -> str:
    return " through jump host " + ", ".join(str(h) for h in target.jumps) if target.jumps else ""


class _ProxyCommand(paramiko.ProxyCommand):  # type: ignore[misc]  # paramiko has no type information here
    """paramiko's ProxyCommand, whose process is also reaped and whose close may come twice."""

    def recv(self, size: int) -> bytes:
        """What the command wrote, as a socket would give it: b'' once it has ended, not a wait for the timeout."""
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            raise TimeoutError()
        try:
            return os.read(self.process.stdout.fileno(), size)
        except OSError as exc:
            raise paramiko.ProxyCommandFailure(" ".join(self.cmd), exc.strerror) from exc

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


def _start_proxy(target: Target) -> _ProxyCommand | Probe:
    command = expand_proxy_command(target.proxy_command, target)
    try:  # as OpenSSH does: the user's shell runs it
        return _ProxyCommand(shlex.join(["/bin/sh", "-c", f"exec {command}"]))
    except (OSError, paramiko.SSHException) as exc:
        return Probe(target.name, "unreachable", f"cannot start ProxyCommand `{command}` ({exc})")


def _proxy_exit(proxy: _ProxyCommand) -> str:
    """How a ProxyCommand that closed its output ended, with the last line it said ('' while it runs on)."""
    try:
        code = proxy.process.wait(timeout=1)  # its output ends a moment before the process does
    except subprocess.TimeoutExpired:
        return ""
    said = proxy.process.stderr.read(2000).decode(errors="replace").strip().splitlines()
    return f"; the command exited with {code}" + (f": {said[-1]}" if said else "")


def _open(address: str, port: int, through: paramiko.Transport | None, timeout: float) -> Connection:
    """A TCP connection to address:port, or a direct-tcpip channel to it from the hop before (which resolves it)."""
    if through is None:
        return socket.create_connection((address, port), timeout=timeout)
    channel: paramiko.Channel = through.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout)
    return channel


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ChannelException):
        text: str = exc.text
        return text
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _enter_hop(hop: Hop, through: paramiko.Transport | None, ways: _Ways) -> paramiko.Transport | _HopFailure:
    """An authenticated session on one jump host whose key matches its pin (or is pinned now)."""
    try:
        sock = _open(hop.address, hop.port, through, ways.timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if through is None:
            return _HopFailure(
                "unreachable",
                hop,
                f"cannot connect to jump host {hop} ({_reason(exc)})",
                "is the jump host up and sshd running?",
            )
        return _HopFailure(
            "unreachable",
            hop,
            f"the jump host before {hop} could not open a connection to it ({_reason(exc)})",
            f"is {hop.address} up?",
        )
    transport = paramiko.Transport(sock)
    transport.banner_timeout = ways.timeout
    try:
        transport.start_client(timeout=ways.timeout)
        key = transport.get_remote_server_key()
        failure: _HopFailure | None
        if not ways.check_hop(hop, key):  # checked before fleet offers anything to it
            failure = _HopFailure("jump_key_changed", hop, key_fingerprint=fingerprint(key))
        else:
            failure = _authenticate(transport, hop, ways.identity)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        failure = _HopFailure(
            "unreachable", hop, f"jump host {hop} gave no SSH session ({_reason(exc)})", "check sshd there"
        )
    if failure is not None:
        transport.close()
        return failure
    return transport


def _authenticate(transport: paramiko.Transport, hop: Hop, identity: Path | None) -> _HopFailure | None:
    """None once a key is accepted; else why none was (fleet's key first, then the agent's, as ssh does)."""
    user = hop.user or getpass.getuser()
    keys, unreadable = _client_keys(identity)
    for key in keys:
        try:
            transport.auth_publickey(user, key)
        except paramiko.AuthenticationException:
            continue
        if transport.is_authenticated():
            return None
    offered = f"fleet's key {identity}.pub" if identity else "no key"
    return _HopFailure(
        "unreachable",
        hop,
        f"jump host {hop} refused {offered} for user {user}{unreadable}",
        f"authorise it there (or name the user: ProxyJump=user@{hop.address})",
    )


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
