"""The only module that imports ansible_runner: a JobSpec in, events out.

Every run gets its own private data directory; fleet passes no passwords
or keys through it (ansible-runner's env files are suppressed), only paths
to files that already exist, and the caller removes the directory once the
events are recorded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import ansible_runner

CALLBACK_DIR = Path(__file__).parent / "ansible_plugins" / "callback"
RUNNER_STATUSES = {"successful", "failed", "timeout", "canceled"}
# ansible-core releases fleet has run Mitogen's strategy with, same verdicts as linear: [min, max)
MITOGEN_ANSIBLE_RANGE = ((2, 10), (2, 20))

log = logging.getLogger("fleet.runner")

DEFAULT_SSH_PERSIST = 120  # seconds


@dataclass(frozen=True)
class Strategy:
    """How Ansible talks to hosts: Mitogen's strategy, or linear with SSH pipelining."""

    name: str  # "mitogen_linear" | "linear"
    plugin_dir: str | None
    reason: str


def choose_strategy(requested: str) -> Strategy:
    """Mitogen where it is installed and known to work with this ansible-core; else linear.

    `auto` falls back with a logged reason; an explicit `mitogen` that cannot
    be honoured is an error rather than a silent fallback.
    """
    if requested == "linear":
        return Strategy("linear", None, "FLEET_STRATEGY=linear")
    problem, plugin_dir = _mitogen_problem()
    if problem is None:
        return Strategy("mitogen_linear", plugin_dir, "Mitogen installed and compatible")
    if requested == "mitogen":
        from fleet.errors import ConfigError

        raise ConfigError(f"FLEET_STRATEGY=mitogen but {problem}; install mitogen or set FLEET_STRATEGY=linear")
    log.info("using the linear strategy with pipelining: %s", problem)
    return Strategy("linear", None, problem)


def _mitogen_problem() -> tuple[str | None, str | None]:
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return "Mitogen is not installed", None
    core = importlib.metadata.version("ansible-core")
    version = tuple(int(part) for part in core.split(".")[:2])
    low, high = MITOGEN_ANSIBLE_RANGE
    if not low <= version < high:
        return f"Mitogen is not known to work with ansible-core {core}", None
    plugin_dir = Path(list(spec.submodule_search_locations)[0]) / "plugins" / "strategy"
    return None, str(plugin_dir)


@dataclass(frozen=True)
class JobSpec:
    """Everything one Ansible execution needs, and nothing else."""

    kind: str  # "check" or "converge"
    project_dir: Path  # the exported revision
    playbook: str  # relative to project_dir
    inventory: Path
    private_data_dir: Path
    known_hosts: Path
    control_path_dir: Path
    ssh_persist: int = DEFAULT_SSH_PERSIST  # seconds an idle SSH master stays up for the next run
    limit_file: Path | None = None  # one host name per line
    identity: Path | None = None
    vault_password_file: str | None = None
    forks: int = 20
    strategy: Strategy = Strategy("linear", None, "default")


@dataclass(frozen=True)
class RunnerOutcome:
    status: str  # successful | failed | timeout | canceled
    rc: int


def ansible_bin_dir() -> Path:
    """Where this interpreter's ansible-playbook lives (the venv's bin)."""
    return Path(sys.executable).parent


# OpenSSH binds "<ControlPath>.<16 random chars>" first, and a socket path holds at most 107 bytes.
_SOCKET_PATH_MAX = 107 - 17
_CONNECTION_HASH = "%C"  # expands to 40 hex digits of host, port and user
_CONNECTION_HASH_DIGITS = 40


def control_path(control_path_dir: Path) -> str | None:
    """The shared ControlPath for Ansible's ssh and Mitogen, or None when the directory's path is too long.

    Naming it in the SSH arguments is what lets Mitogen, which ignores Ansible's
    control path settings, reuse the masters too. Without it Ansible's ssh
    plugin still multiplexes under the same directory with a shorter hash.
    """
    path = f"{control_path_dir}/{_CONNECTION_HASH}"
    expanded = len(path) - len(_CONNECTION_HASH) + _CONNECTION_HASH_DIGITS
    return path if expanded <= _SOCKET_PATH_MAX else None


def ansible_env(known_hosts: Path, control_path_dir: Path, ssh_persist: int = DEFAULT_SSH_PERSIST) -> dict[str, str]:
    """Environment for every Ansible process fleet starts: strict keys, fast SSH, plain output."""
    shared_path = control_path(control_path_dir)
    ssh_args = (
        f"-C -o ControlMaster=auto -o ControlPersist={ssh_persist}s "
        + (f"-o ControlPath={shared_path} " if shared_path else "")
        + f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
        "-o ConnectTimeout=10 -o ServerAliveInterval=15"
    )
    return {
        "PATH": f"{ansible_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_path_dir),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
    }


def close_connections(control_path_dir: Path) -> int:
    """Ask every SSH master under the directory to exit; return how many were asked.

    For a clean stop of the controller: masters otherwise outlive it by their
    ControlPersist time.
    """
    if not control_path_dir.is_dir():
        return 0
    sockets = [p for p in control_path_dir.iterdir() if p.is_socket()]
    for sock in sockets:
        try:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "fleet-master"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("the SSH master at %s did not answer an exit request", sock)
    return len(sockets)


def strategy_env(strategy: Strategy) -> dict[str, str]:
    if strategy.plugin_dir is None:
        return {"ANSIBLE_STRATEGY": strategy.name}
    return {"ANSIBLE_STRATEGY": strategy.name, "ANSIBLE_STRATEGY_PLUGINS": strategy.plugin_dir}


def command_line(spec: JobSpec) -> str:
    args = ["--diff"]
    if spec.kind == "check":
        args.insert(0, "--check")
    if spec.identity:
        args += ["--private-key", str(spec.identity)]
    if spec.vault_password_file:
        args += ["--vault-password-file", spec.vault_password_file]
    return " ".join(args)


def run_job(
    spec: JobSpec,
    on_event: Callable[[dict], None],
    should_cancel: Callable[[], bool] = lambda: False,
) -> RunnerOutcome:
    """Run the playbook as the spec says, calling on_event for every event as it arrives.

    The caller owns stopping: should_cancel is polled often, and the caller
    enforces its own timeout through it (so it can stop the whole process tree).
    """
    spec.private_data_dir.mkdir(parents=True, exist_ok=True)
    spec.control_path_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if control_path(spec.control_path_dir) is None:
        log.warning("the data directory's path is too long for SSH control sockets named by connection; "
                    "Mitogen will open new connections each run (use a data directory of at most 46 characters)")
    envvars = ansible_env(spec.known_hosts, spec.control_path_dir, spec.ssh_persist)
    # Our callback directory first, so fleet's awx_display (which explains skips) shadows runner's.
    envvars["ANSIBLE_CALLBACK_PLUGINS"] = str(CALLBACK_DIR)
    envvars.update(strategy_env(spec.strategy))
    result = ansible_runner.run(
        private_data_dir=str(spec.private_data_dir),
        project_dir=str(spec.project_dir),
        playbook=spec.playbook,
        inventory=str(spec.inventory),
        limit=f"@{spec.limit_file}" if spec.limit_file else None,
        forks=spec.forks,
        cmdline=command_line(spec),
        envvars=envvars,
        event_handler=lambda event: on_event(event) or False,
        cancel_callback=should_cancel,
        suppress_env_files=True,
        quiet=True,
        json_mode=False,
    )
    status = result.status if result.status in RUNNER_STATUSES else "failed"
    return RunnerOutcome(status=status, rc=result.rc if result.rc is not None else -1)
