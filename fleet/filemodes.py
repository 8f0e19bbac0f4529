"""File modes of what fleet keeps: its data directory is private, and so is the vault password.

The data directory holds diffs, Ansible output, SSH keys and the session key,
so no other local user may read it. Three layers keep it that way:

- the `fleet` command sets a umask of 077 (`use_private_umask`), so whatever
  fleet and its children (git, ssh, Ansible) create is 0600/0700;
- revision exports come out of a tar archive, whose modes would win over the
  umask, so they are extracted through `private_tar_filter`;
- what existed before (a data directory made by an older fleet, or by hand)
  is made private when the store opens (`ensure_private_dir`), with a log line.

A vault password file is refused when others could read or change it
(`check_vault_password_file`), before anything runs.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from pathlib import Path

from fleet.errors import ConfigError, StoreError

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OTHERS = 0o077  # group and other bits
# What fleet keeps at the top of its data directory (settings, source, jobs, runner, lab, web).
DATA_DIR_ENTRIES = (
    "fleet.db",
    "fleet.db-wal",
    "fleet.db-shm",
    "secret_key",
    "source.git",
    "revisions",
    "runs",
    "ssh",
    "cp",
    "lab",
)

log = logging.getLogger("fleet.filemodes")


def use_private_umask() -> int:
    """Make everything this process creates from now on private to its user; return the old umask."""
    return os.umask(PRIVATE_UMASK)


def ensure_private_dir(path: Path, entries: tuple[str, ...] = ()) -> None:
    """Create `path` as 0700, or make an existing one and its named `entries` private, with a log line.

    A directory open to others was made before fleet kept its files private.
    Making it 0700 already shuts others out of everything inside; its named
    entries (fleet's own files and directories) lose their group and other
    bits too, so they stay private if the directory is ever opened again.
    Nothing else is walked: the directory may be one the user shares with
    other things (FLEET_DATA_DIR is theirs to choose).
    """
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        fixed = [found for found in map(_tighten, [path, *(path / name for name in entries)]) if found]
    except OSError as exc:
        raise StoreError(
            f"cannot create or protect the data directory {path} ({exc.strerror}); "
            "set FLEET_DATA_DIR to a directory you own"
        ) from exc
    if fixed:
        log.warning(
            "data directory %s was open to other users; removed their access (%s)",
            path,
            ", ".join(f"{p.relative_to(path)} was {mode:04o}" for p, mode in fixed),
        )


def _tighten(path: Path) -> tuple[Path, int] | None:
    """Remove group and other bits from `path` (not following a symlink); (path, old mode) if it changed."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode) or not mode & OTHERS:
        return None
    path.chmod(mode & ~OTHERS)
    return path, mode


def make_private_file(path: Path) -> None:
    """Create `path` empty as 0600 if missing, or make it 0600; files made from it (SQLite's -wal) follow."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    path.chmod(PRIVATE_FILE)


def private_tar_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """tarfile's "data" filter (no links out of the tree), keeping only the owner's bits of each mode."""
    member = tarfile.data_filter(member, dest_path)
    if member.mode is None:  # the data filter leaves directories to the umask: not ours to trust here
        return member.replace(mode=PRIVATE_DIR, deep=False) if member.isdir() else member
    return member.replace(mode=member.mode & ~OTHERS, deep=False)


def vault_file_problem(mode: int, owner: int, uid: int) -> str:
    """Why a vault password file with this `st_mode` and owner may not be used by `uid` ('' when it may).

    Ansible runs an executable password file as a script and reads the
    password from its output: reading it reveals nothing, so only a script
    others can change (world-writable) is refused.
    """
    bits = stat.S_IMODE(mode)
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if bits & 0o111:
        return f"is an executable vault script anyone can change (mode {bits:04o})" if bits & 0o002 else ""
    if owner != uid:
        return f"is owned by uid {owner}, not by the user running fleet (uid {uid})"
    if bits & OTHERS:
        return f"can be read or changed by other users (mode {bits:04o})"
    return ""


def check_vault_password_file(path: str) -> None:
    """Raise ConfigError, naming the file and the fix, unless the vault password file is private."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(
            f"vault password file {path} cannot be read ({exc.strerror}); "
            "fix FLEET_VAULT_PASSWORD_FILE or create the file"
        ) from exc
    problem = vault_file_problem(info.st_mode, info.st_uid, os.geteuid())
    if problem:
        raise ConfigError(f"vault password file {path} {problem}; {_vault_fix(path, info)}, then run fleet again")


def _vault_fix(path: str, info: os.stat_result) -> str:
    if stat.S_IMODE(info.st_mode) & 0o111:
        return f"run `chmod o-w {path}`"
    if info.st_uid != os.geteuid():
        return "copy it to a file of your own and `chmod 600` that copy, or run fleet as its owner"
    return f"run `chmod 600 {path}`"
