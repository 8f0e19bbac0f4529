"""Reachability and SSH host-key pinning, with paramiko.

Before a run, every target host is probed: a TCP connection and an SSH key
exchange with a short timeout. The key a host offers is compared with
fleet's own known_hosts file (the one Ansible then uses with strict
checking). Unknown hosts are pinned on first contact; a host whose key
changed is blocked until an operator accepts the new key.
"""

from __future__ import annotations

import base64
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import paramiko

PROBE_WORKERS = 32


@dataclass(frozen=True)
class Target:
    """Where one inventory host is reached."""

    name: str
    address: str
    port: int = 22


@dataclass(frozen=True)
class Probe:
    """What a probe found: `ok`, `pinned` (first contact), `unreachable` or `key_changed`."""

    name: str
    state: str
    message: str = ""
    fingerprint: str = ""

    @property
    def usable(self) -> bool:
        return self.state in ("ok", "pinned")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


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


def probe_hosts(targets: list[Target], known_hosts: Path, timeout: float) -> dict[str, Probe]:
    """Probe every target in parallel; pin first-contact keys; return a Probe per host name."""
    if not targets:
        return {}
    keys = _load(known_hosts)
    with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(targets))) as pool:
        offered = dict(zip([t.name for t in targets], pool.map(lambda t: _fetch_key(t, timeout), targets)))
    results = {}
    for target in targets:
        key = offered[target.name]
        if isinstance(key, str):
            results[target.name] = Probe(target.name, "unreachable", key)
        else:
            results[target.name] = _compare(keys, target, key)
    _save(keys, known_hosts)
    return results


def accept_key(target: Target, known_hosts: Path, timeout: float) -> Probe:
    """Replace the pinned key of a host with the one it offers now."""
    key = _fetch_key(target, timeout)
    if isinstance(key, str):
        return Probe(target.name, "unreachable", key)
    keys = _load(known_hosts)
    name = known_hosts_name(target.address, target.port)
    if name in keys:
        del keys[name]
    keys.add(name, key.get_name(), key)
    _save(keys, known_hosts)
    return Probe(target.name, "pinned", "new key accepted", fingerprint(key))


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." as ssh-keygen prints it


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


def _fetch_key(target: Target, timeout: float) -> paramiko.PKey | str:
    """The host key a target offers, or a sentence saying why it could not be reached."""
    try:
        sock = socket.create_connection((target.address, target.port), timeout=timeout)
    except OSError as exc:
        return (f"cannot connect to {target.address}:{target.port} ({exc.strerror or exc}); "
                "is the host up and sshd running?")
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return f"{target.address}:{target.port} accepted a connection but no SSH handshake ({exc}); check sshd there"
    finally:
        transport.close()


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
