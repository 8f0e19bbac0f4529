"""Settings: command-line flags, then FLEET_* variables, then fleet.toml, then defaults."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet import warm
from fleet.errors import ConfigError

# A socket's name holds at most 107 bytes; ssh names a master's <ControlPath>.<16 random characters> while it
# starts it, and fleet's ControlPath is <directory>/%C (40 hex digits): the directory's path may be this long.
CONTROL_DIR_MAX = 107 - 17 - 40 - 1


def short_control_dir(data_dir: Path) -> Path | None:
    """A directory for one data directory's SSH sockets inside the user's private runtime directory (the kept
    Ansible processes' own), named by a hash of the data directory; None when there is no safe one."""
    base = warm.runtime_dir()
    if base is None:
        return None
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    path = base / f"cp-{digest}"
    return path if len(str(path)) <= CONTROL_DIR_MAX else None


@dataclass(frozen=True)
class Settings:
    repo: str
    branch: str | None = None
    playbook: str = "playbooks/site.yml"
    inventory: str = "inventory/"
    data_dir: Path = Path(".fleet")
    database_url: str = ""
    poll_interval: int = 60
    forks: int = 20
    bind: str = "127.0.0.1:8080"
    webhook_secret: str | None = None
    secret_key: str | None = None
    vault_password_file: str | None = None
    run_timeout: int = 3600
    connect_timeout: int = 5
    strategy: str = "auto"  # auto | mitogen | linear
    ssh_persist: int | None = None  # seconds; None: until the next scheduled check
    lease_seconds: int = 30  # a run or the leading controller unheard of this long is presumed dead
    login_window_seconds: int = 900  # failed logins/tokens are counted over this window, then forgotten
    git_timeout: int = 60  # seconds any git clone, fetch or ls-remote may take before it is killed
    # Controller-side on purpose: a pushed fleet.yml must not be able to switch it off.
    require_signed_commits: bool = False
    public_url: str = ""  # base of links in notifications; empty: http://<bind>
    executor: str = "local"  # local: Ansible runs in this process | celery: shards run on `fleet worker`s
    broker_url: str = ""  # the Celery broker (redis://... or amqp://...) for FLEET_EXECUTOR=celery
    shard_hosts: int = 50  # at most this many hosts in one shard (a run has at least one shard per free worker slot)
    warm_ansible: bool = True  # runs fork from a kept Ansible process that keeps Mitogen's host interpreters

    @property
    def link_base(self) -> str:
        """Where notifications' links point: FLEET_PUBLIC_URL, else the address fleet serve listens on."""
        return (self.public_url or f"http://{self.bind}").rstrip("/")

    @property
    def control_path_dir(self) -> Path:
        """Where the SSH masters' sockets live: `<data dir>/cp`, or a private directory with a shorter path when
        that one is too long for a socket's name (ssh would refuse every connection: every host unreachable)."""
        own = self.data_dir / "cp"
        if len(str(own)) <= CONTROL_DIR_MAX:
            return own
        return short_control_dir(self.data_dir) or own

    @property
    def known_hosts_path(self) -> Path:
        return self.data_dir / "ssh" / "known_hosts"

    @property
    def identity_path(self) -> Path:
        return self.data_dir / "ssh" / "id_ed25519"


def boolean(value: Any) -> bool:
    """A TOML boolean, or a FLEET_* word for one; anything else is refused rather than guessed."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


# name in fleet.toml / FLEET_<NAME> -> converter
_FIELDS: dict[str, Any] = {
    "repo": str,
    "branch": str,
    "playbook": str,
    "inventory": str,
    "data_dir": Path,
    "database_url": str,
    "poll_interval": int,
    "forks": int,
    "bind": str,
    "webhook_secret": str,
    "secret_key": str,
    "vault_password_file": str,
    "run_timeout": int,
    "connect_timeout": int,
    "strategy": str,
    "ssh_persist": int,
    "lease_seconds": int,
    "login_window_seconds": int,
    "git_timeout": int,
    "require_signed_commits": boolean,
    "public_url": str,
    "executor": str,
    "broker_url": str,
    "shard_hosts": int,
    "warm_ansible": boolean,
}
STRATEGIES = ("auto", "mitogen", "linear")
EXECUTORS = ("local", "celery")


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge the four layers of configuration into one frozen Settings."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    values: dict[str, Any] = {}
    values.update(_read_toml(config_path, cwd))
    values.update(_read_environ(environ))
    values.update({k: _convert(k, v, f"--{k.replace('_', '-')}") for k, v in (flags or {}).items() if v is not None})
    return _build(values, cwd)


def _read_toml(config_path: str | os.PathLike[str] | None, cwd: Path) -> dict[str, Any]:
    explicit = config_path is not None
    path = Path(config_path) if config_path is not None else cwd / "fleet.toml"
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist; fix --config or create it")
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix the file") from exc
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{path} has unknown settings {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
    return {name: _convert(name, value, str(path)) for name, value in raw.items()}


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name in _FIELDS:
        raw = environ.get(f"FLEET_{name.upper()}")
        if raw not in (None, ""):
            values[name] = _convert(name, raw, f"FLEET_{name.upper()}")
    return values


def _convert(name: str, value: Any, origin: str) -> Any:
    if _FIELDS[name] is int and isinstance(value, (bool, float)):
        raise ConfigError(f"{origin}: {name} must be int, got {value!r}")
    try:
        converted = _FIELDS[name](value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {name} must be {_FIELDS[name].__name__}, got {value!r}") from exc
    if _FIELDS[name] is int and converted <= 0:
        raise ConfigError(f"{origin}: {name} must be a positive number, got {value!r}")
    return converted


def _build(values: dict[str, Any], cwd: Path) -> Settings:
    data_dir = Path(values.pop("data_dir", cwd / ".fleet"))
    if not data_dir.is_absolute():
        data_dir = cwd / data_dir
    repo = values.pop("repo", None) or _enclosing_checkout(cwd)
    if not _looks_remote(repo) and not Path(repo).is_absolute():
        repo = str((cwd / repo).resolve())
    values.setdefault("database_url", f"sqlite:///{data_dir / 'fleet.db'}")
    if values.get("strategy", "auto") not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {values['strategy']!r}")
    if values.get("executor", "local") not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {values['executor']!r}")
    if values.get("executor") == "celery" and not values.get("broker_url"):
        raise ConfigError("FLEET_EXECUTOR=celery needs FLEET_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    if values.get("shard_hosts", 50) < 1:
        raise ConfigError("shard_hosts must be at least 1")
    for field in ("playbook", "inventory"):
        if field in values and not values[field]:
            raise ConfigError(f"{field} must not be empty")
    return Settings(repo=repo, data_dir=data_dir, **values)


def _looks_remote(repo: str) -> bool:
    # "<transport>::<address>" too: kept as written, so source.py can refuse it by name, not as a path.
    return (
        "://" in repo
        or (":" in repo and "@" in repo.split(":", 1)[0])
        or re.match(r"[A-Za-z][A-Za-z0-9+.-]*::", repo) is not None
    )


def _enclosing_checkout(cwd: Path) -> str:
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(
            "no git source configured and the current directory is not inside a git checkout; "
            "set FLEET_REPO or pass --repo"
        ) from exc
    return top


def replace(settings: Settings, **changes: Any) -> Settings:
    """A copy of settings with some fields changed (tests and the CLI use it)."""
    return dataclasses.replace(settings, **changes)
