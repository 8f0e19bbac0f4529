"""Pinned SSH host keys, kept in the store so every fleet process (the controller, each `fleet worker`,
the CLI) enforces the same pins.

The store's host_keys table is the truth; each process's known_hosts file
(`<data>/ssh/known_hosts`) is a copy of it, written before every probe,
because Ansible's ssh reads that file with StrictHostKeyChecking=yes. The
probe (fleet.hostkeys, paramiko only) still pins first-contact keys in the
file; `record_new_pins` then carries them into the store, where the first
process to pin a name wins: a process that pinned a different key for the
same name at the same moment gets the store's pin back, and its caller
blocks the host as if the key had changed.

A pin is "new" only for a name the store holds no key for at all, as the
probe treats a name with any pinned key: a different key, of any type, is a
changed key, never a second pin.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from fleet import hostkeys
from fleet.store.db import db
from fleet.store.models import HostKey
from fleet.vocabulary import utcnow

Pin = tuple[str, str, str]  # (known_hosts name, key type, base64 key)


def stored_pins() -> list[Pin]:
    """Every pin in the store, sorted."""
    rows = db.session.execute(
        select(HostKey.name, HostKey.key_type, HostKey.key_b64).order_by(HostKey.name, HostKey.key_type)
    ).all()
    return [(name, key_type, key_b64) for name, key_type, key_b64 in rows]


@contextmanager
def probing(path: Path) -> Iterator[None]:
    """Hold the known_hosts file at `path` for one probe: written from the store, probed, recorded.

    Why: two runs using one data directory at once (a worker's concurrent
    shards; the controller and a `fleet check`) would otherwise rewrite the
    file from the store between the other's probe and its recording, and lose
    the keys that probe pinned on first contact. Ansible's runs are not held.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def write_known_hosts(path: Path) -> list[Pin]:
    """Make the known_hosts file at `path` hold exactly the store's pins (atomic replace, 0600, parent 0700);
    return them (what a probe then starts from: `record_new_pins` takes them).

    Called before every probe. Upgrading from a fleet that kept pins only in
    this file: when the store holds no pin at all and the file holds some,
    they are adopted first (`adopt_file_pins`), so the upgraded controller
    keeps trusting what it trusted instead of re-pinning on first contact.
    In practice that happens once per store, as the table is never emptied
    by fleet afterwards (only by hand, with SQL: then the next file adopted
    is that of whichever process probes first).
    """
    pins = stored_pins()
    if not pins and path.exists():
        adopt_file_pins(path)
        pins = stored_pins()
    _write_file(path, pins)
    return pins


def adopt_file_pins(path: Path) -> int:
    """Import the file's pins into an EMPTY store table (an upgrade); return how many this call inserted.

    Does nothing when the store holds any pin: the store is the truth then, and
    a file differing from it is an old copy. Two processes adopting at once
    each insert what the other has not (insert-if-absent).
    """
    if db.session.execute(select(HostKey.id).limit(1)).first() is not None:
        return 0
    by = f"{process_name()} (adopted from {path})"
    return sum(_insert_if_absent(pin, by) for pin in hostkeys.pinned_entries(path))


def record_new_pins(path: Path, pinned_by: str, written: list[Pin] | None = None) -> list[str]:
    """After a probe: put the keys the file pins for names the probe met first (absent from `written`, what
    `write_known_hosts` wrote before it; by default, from the store now) into the store; return the names
    whose freshly pinned key lost to a different one another process pinned first (the caller blocks them).

    The store wins a race: the file is rewritten from it in any case, and what
    this call inserted for a lost name is taken back, so when two processes
    pinned different key types for one name at once, neither is trusted and
    the next probe pins the name anew.
    """
    before = _by_name(stored_pins() if written is None else written)
    fresh = {name: keys for name, keys in _by_name(hostkeys.pinned_entries(path)).items() if name not in before}
    inserted = [pin for name in sorted(fresh) for pin in sorted(fresh[name]) if _insert_if_absent(pin, pinned_by)]
    stored = _by_name(stored_pins())
    lost = sorted(name for name, keys in fresh.items() if stored.get(name) != keys)
    _withdraw([pin for pin in inserted if pin[0] in lost])
    _write_file(path, stored_pins())
    return lost


def replace_pin(name: str, key_type: str, key_b64: str, by: str) -> None:
    """Pin exactly this key for `name` (an accepted key, a lab host's): the name's other keys are removed."""
    _set_pins(name, [(name, key_type, key_b64)], by)


def replace_pins_from_file(path: Path, name: str, by: str) -> bool:
    """Pin in the store exactly the keys the file at `path` holds for `name` (`hostkeys.accept_key` wrote them
    there); False, and nothing changed, when the file holds none for it."""
    keys = [pin for pin in hostkeys.pinned_entries(path) if pin[0] == name]
    if keys:
        _set_pins(name, keys, by)
    return bool(keys)


def process_name() -> str:
    """How a pin names the process that made it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _set_pins(name: str, pins: list[Pin], by: str) -> None:
    db.session.execute(delete(HostKey).where(HostKey.name == name))
    db.session.add_all(HostKey(name=n, key_type=t, key_b64=b, pinned_at=utcnow(), pinned_by=by) for n, t, b in pins)
    db.session.commit()


def _by_name(pins: list[Pin]) -> dict[str, frozenset[Pin]]:
    grouped: dict[str, set[Pin]] = {}
    for pin in pins:
        grouped.setdefault(pin[0], set()).add(pin)
    return {name: frozenset(keys) for name, keys in grouped.items()}


def _insert_if_absent(pin: Pin, by: str) -> bool:
    """Insert one pin unless (name, key type) is pinned already; True when this call inserted it."""
    name, key_type, key_b64 = pin
    db.session.add(HostKey(name=name, key_type=key_type, key_b64=key_b64, pinned_at=utcnow(), pinned_by=by))
    try:
        db.session.commit()
    except IntegrityError:  # another process pinned this name and type between our read and our write
        db.session.rollback()
        return False
    return True


def _withdraw(pins: list[Pin]) -> None:
    for name, key_type, key_b64 in pins:
        db.session.execute(
            delete(HostKey).where(HostKey.name == name, HostKey.key_type == key_type, HostKey.key_b64 == key_b64)
        )
    if pins:
        db.session.commit()


def _write_file(path: Path, pins: list[Pin]) -> None:
    """Replace the file at once (a running ssh reads the old copy or the new, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    text = "".join(f"{name} {key_type} {key_b64}\n" for name, key_type, key_b64 in pins)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # several writers at once
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        os.fchmod(file.fileno(), 0o600)  # whatever the umask, and whatever mode a leftover tmp had
        file.write(text)
    os.replace(tmp, path)
