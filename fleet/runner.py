"""The Ansible boundary: the only module that starts Ansible.

`Runner` is what the rest of fleet asks of Ansible and of the managed hosts:
list an inventory, syntax-check a playbook, probe the hosts, run a JobSpec
streaming its events. `AnsibleRunner` does it for real (ansible-runner,
ansible-inventory, ansible-playbook, paramiko); `fleet.fake_runner.FakeRunner`
replays recorded events for tests, the way httpx's MockTransport stands in
for the network.

Every run gets its own private data directory; fleet passes no passwords
or keys through it (ansible-runner's env files are suppressed), only paths
to files that already exist, and the caller removes the directory once the
events are recorded.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ansible_runner
import yaml

from fleet import filemodes, hostkeys, processes, warm
from fleet.errors import SourceError
from fleet.vocabulary import RunnerStatus

if TYPE_CHECKING:
    import paramiko

    from fleet.remote_stop import HostStop
    from fleet.settings import Settings

CALLBACK_DIR = Path(__file__).parent / "ansible_plugins" / "callback"
RUNNER_STATUSES = frozenset(RunnerStatus)
# ansible-core releases fleet has run Mitogen's strategy with, same verdicts as linear: [min, max)
MITOGEN_ANSIBLE_RANGE = ((2, 10), (2, 20))

log = logging.getLogger("fleet.runner")

DEFAULT_SSH_PERSIST = 120  # seconds
REPORT_FILE = "ansible-path.json"  # in the run's private directory: fleet-ansible-playbook says warm or cold
# How long the kept process of syntax checks waits for a new revision: revisions come at no schedule.
SYNTAX_KEPT_SECONDS = 3600
WARM_SSH_PERSIST = 600  # seconds: the ControlPersist of every run when a kept Ansible process may run it
TOOL_TIMEOUT = 300  # seconds ansible-inventory or a syntax check may take
GALAXY_TIMEOUT = 600  # seconds ansible-galaxy may take to install one revision's requirements
# Where a revision's requirements are installed, inside its export; ansible-playbook looks there first.
COLLECTIONS_DIR = ".fleet-collections"
ROLES_DIR = ".fleet-roles"
REQUIREMENTS_DONE = ".fleet-requirements-installed"
REQUIREMENTS_FILES = ("requirements.yml", "collections/requirements.yml", "roles/requirements.yml")
DEFAULT_COLLECTIONS_PATH = "~/.ansible/collections:/usr/share/ansible/collections"
DEFAULT_ROLES_PATH = "~/.ansible/roles:/usr/share/ansible/roles:/etc/ansible/roles"
ORIGIN = re.compile(r"Origin: (?P<file>\S+?):(?P<line>\d+):(?P<column>\d+)")
EventFn = Callable[[dict[str, Any]], None]
CancelFn = Callable[[], bool]


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
    warm_anchor: Path | None = None  # set by AnsibleRunner.run_job from its settings (fleet.warm)


@dataclass(frozen=True)
class RunnerOutcome:
    status: str  # successful | failed | timeout | canceled
    rc: int
    # 'warm' (forked from a kept Ansible process) or 'cold: <why>' (fleet.warm.path_text); '' not known
    ansible_path: str = ""


@dataclass(frozen=True)
class InventoryHost:
    """One host of an inventory: its name, where SSH reaches it, and its groups."""

    name: str
    address: str
    port: int
    groups: tuple[str, ...]
    user: str = ""  # ansible_user
    # ansible_ssh_args, ansible_ssh_common_args, ansible_ssh_extra_args: where a ProxyJump is named
    ssh_args: tuple[str, ...] = ()


class Runner(Hashable, Protocol):  # Hashable: revisions caches inventory listings per runner
    """Everything fleet asks of Ansible and of the managed hosts, and nothing else.

    The pre-flight probe is here too, though paramiko does it rather than
    Ansible: it is the other half of reaching the hosts, and a fake that
    replays a run must also say which hosts answered, so one seam keeps the
    two consistent (a separate probe function would be a second fake to wire).
    """

    def list_inventory(self, tree: Path, inventory: str, limit: str | None = None) -> list[InventoryHost]:
        """Hosts of the inventory at `tree` (those matching `limit`); SourceError when it does not parse."""

    def syntax_problem(self, tree: Path, playbook: str, inventory: str) -> str:
        """Why the playbook fails Ansible's syntax check ('' when it passes)."""

    def install_requirements(self, tree: Path) -> str:
        """Install the collections and roles the revision at `tree` requires into it; why it failed ('' when
        done, or nothing is required)."""

    def probe_hosts(self, hosts: list[InventoryHost]) -> dict[str, hostkeys.Probe]:
        """Reachability and host-key state of each host, by name, before anything runs on them."""

    def run_job(self, spec: JobSpec, on_event: EventFn, should_cancel: CancelFn = lambda: False) -> RunnerOutcome:
        """Run the spec, calling on_event per event; once should_cancel says True, stop with `canceled`."""

    def stop_remote_work(
        self,
        hosts: list[InventoryHost],
        touched: set[str],
        spec: JobSpec | None = None,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> dict[str, HostStop]:
        """End what a stopped run started on `hosts` (those in `touched` ran a task of it); per host, by name,
        whether that is confirmed (fleet.remote_stop). The run's spec, when known, gives become passwords;
        `keep_alive` is called between the steps of a long stop (the run renews its lease)."""


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
        "-o ConnectTimeout=10 -o ServerAliveInterval=15 "
        # A ProxyJump hop is a second ssh that inherits -F but no -o: the file carries the pins to it.
        f"-F {hostkeys.ssh_config_path(known_hosts)}"
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
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "fleet-master"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
            )
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


@dataclass(frozen=True)
class AnsibleRunner:
    """The real Runner: ansible-runner for playbooks, Ansible's own tools for inventory and syntax, paramiko probes."""

    known_hosts: Path
    control_path_dir: Path
    vault_password_file: str | None = None
    connect_timeout: float = 5
    identity: Path | None = None  # fleet's key, offered to jump hosts by the probe
    galaxy_timeout: float = GALAXY_TIMEOUT
    warm_anchor: Path | None = None  # the data directory whose kept Ansible process runs jobs and checks syntax
    warm_idle: int = DEFAULT_SSH_PERSIST  # seconds that kept process waits for the next revision

    @classmethod
    def for_settings(cls, settings: Settings) -> AnsibleRunner:
        """The runner of these settings; refuses a vault password file others could read, before anything runs."""
        if settings.vault_password_file:
            filemodes.check_vault_password_file(settings.vault_password_file)
        return cls(
            settings.known_hosts_path,
            settings.control_path_dir,
            settings.vault_password_file,
            settings.connect_timeout,
            settings.identity_path,
            warm_anchor=settings.data_dir.resolve() if settings.warm_ansible else None,
            warm_idle=settings.ssh_persist or SYNTAX_KEPT_SECONDS,
        )

    def list_inventory(self, tree: Path, inventory: str, limit: str | None = None) -> list[InventoryHost]:
        command = [str(ansible_bin_dir() / "ansible-inventory"), "-i", str(tree / inventory), "--list"]
        command += ["--limit", limit] if limit else []
        proc = self._run_tool(command + self._vault_args(), tree)
        if proc.returncode != 0:
            raise SourceError(f"inventory does not parse: {clean_ansible_error(proc.stderr, tree)}")
        try:
            listing = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise SourceError(f"ansible-inventory printed something that is not JSON ({exc})") from exc
        return hosts_from_listing(listing, ssh_arg_defaults(tree))

    def syntax_problem(self, tree: Path, playbook: str, inventory: str) -> str:
        """What ansible-playbook --syntax-check says of the playbook, or ""; from the kept Ansible process when
        there is one (a check of each new revision then does not import Ansible again)."""
        client = ansible_bin_dir() / warm.CLIENT_SCRIPT
        kept = self.warm_anchor is not None and client.exists()
        program = client if kept else ansible_bin_dir() / "ansible-playbook"
        command = [str(program), "--syntax-check", "-i", str(tree / inventory), playbook, *self._vault_args()]
        extra = {warm.ANCHOR_ENV: str(self.warm_anchor), warm.IDLE_ENV: str(self.warm_idle)} if kept else {}
        proc = self._run_tool(command, tree, extra_env=extra)
        if proc.returncode != 0:
            return f"playbook syntax check failed: {clean_ansible_error(proc.stderr or proc.stdout, tree)}"
        return ""

    def install_requirements(self, tree: Path) -> str:
        """ansible-galaxy installs requirements.yml (and collections/, roles/requirements.yml) into the export,
        once per export; a failure names what could not be installed and leaves nothing half installed."""
        if (tree / REQUIREMENTS_DONE).exists():
            return ""
        for relative in REQUIREMENTS_FILES:
            try:
                problem = self._install_file(tree, relative)
            except SourceError as exc:  # ansible-galaxy took longer than galaxy_timeout
                problem = f"{relative}: {exc}"
            if problem:
                shutil.rmtree(tree / COLLECTIONS_DIR, ignore_errors=True)
                shutil.rmtree(tree / ROLES_DIR, ignore_errors=True)
                return problem
        (tree / REQUIREMENTS_DONE).touch()
        return ""

    def _install_file(self, tree: Path, relative: str) -> str:
        path = tree / relative
        if not path.is_file():
            return ""
        try:
            wanted = requirements_of(path.read_text(errors="replace"))
        except ValueError as exc:
            return f"{relative}: {exc}"
        for kind, names in wanted.items():
            target = COLLECTIONS_DIR if kind == "collection" else ROLES_DIR
            command = [
                str(ansible_bin_dir() / "ansible-galaxy"),
                kind,
                "install",
                "-r",
                relative,
                "-p",
                str(tree / target),
            ]
            proc = self._run_tool(command, tree, self.galaxy_timeout)
            if proc.returncode != 0:
                return galaxy_problem(relative, kind, names, proc.stderr or proc.stdout, tree)
        return ""

    def probe_hosts(self, hosts: list[InventoryHost]) -> dict[str, hostkeys.Probe]:
        """Probe each host the way Ansible's ssh reaches it: directly, through its ProxyJump hops or ProxyCommand."""
        config = hostkeys.load_ssh_config()
        targets = [probe_target(h, config) for h in hosts]
        return hostkeys.probe_hosts(targets, self.known_hosts, self.connect_timeout, self.identity)

    def run_job(self, spec: JobSpec, on_event: EventFn, should_cancel: CancelFn = lambda: False) -> RunnerOutcome:
        """The job, forked from this data directory's kept Ansible process when the settings keep one (fleet.warm):
        which path a run takes is this runner's business alone (what it took comes back in the outcome)."""
        return run_job(replace(spec, warm_anchor=self.warm_anchor), on_event, should_cancel)

    def stop_remote_work(
        self,
        hosts: list[InventoryHost],
        touched: set[str],
        spec: JobSpec | None = None,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> dict[str, HostStop]:
        """Through the run's own SSH masters (the ControlPath is all that names one), as Ansible reaches hosts;
        where only root may end what is left and the login needs a password for sudo, with the inventory's."""
        from fleet import remote_stop

        connection = remote_stop.Connection(self.known_hosts, self.control_path_dir, DEFAULT_SSH_PERSIST, self.identity)
        passwords = (lambda names: become_passwords(spec, names)) if spec is not None else None
        return remote_stop.stop_remote_work(
            hosts, touched, connection, become_passwords=passwords, keep_alive=keep_alive
        )

    def _run_tool(
        self, command: list[str], tree: Path, timeout: float = TOOL_TIMEOUT, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            **ansible_env(self.known_hosts, self.control_path_dir),
            **requirements_env(tree),
            **(extra_env or {}),
        }
        try:
            return subprocess.run(
                command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise SourceError(
                f"{Path(command[0]).name} took over {timeout:g}s; check the inventory's dynamic "
                "sources, the playbook's imports and the requirements' sources"
            ) from exc

    def _vault_args(self) -> list[str]:
        return ["--vault-password-file", self.vault_password_file] if self.vault_password_file else []


# Seconds Ansible may take to read the inventory's become passwords during a stop (the run renews its lease
# before and after: it must outlast this).
BECOME_LOOKUP_TIMEOUT = 20.0


def become_passwords(spec: JobSpec, names: list[str]) -> dict[str, str]:
    """name -> the become password the run's inventory gives that host (fleet.become_lookup); {} when Ansible
    cannot say. The secret comes through a pipe and goes to the caller only: never logged, never stored."""
    request = {
        "inventory": str(spec.inventory),
        "names": names,
        "vault_password_file": spec.vault_password_file,
        "playbook_dir": str((spec.project_dir / spec.playbook).parent),
    }
    env = {**os.environ, **ansible_env(spec.known_hosts, spec.control_path_dir), **requirements_env(spec.project_dir)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fleet.become_lookup"],
            input=json.dumps(request),
            env=env,
            cwd=spec.project_dir,
            capture_output=True,
            text=True,
            timeout=BECOME_LOOKUP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        log.warning("the become passwords of %s: Ansible took over %gs", ", ".join(names), BECOME_LOOKUP_TIMEOUT)
        return {}
    if done.returncode != 0:
        log.warning("the become passwords of %s: %s", ", ".join(names), done.stderr.strip()[-500:])
        return {}
    try:
        found = json.loads(done.stdout)
    except ValueError:
        return {}
    return {name: value for name, value in found.items() if isinstance(value, str) and value}


def requirements_of(text: str) -> dict[str, list[str]]:
    """What a requirements file asks ansible-galaxy for, by kind ("collection", "role"), each as named.

    The old format (a plain list) holds roles only; the new one a mapping with `collections:` and `roles:`.
    ValueError when it is neither.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"is not YAML ({exc})") from exc
    if data is None:
        return {}
    if isinstance(data, list):
        data = {"roles": data}
    if not isinstance(data, dict):
        raise ValueError("must be a list of roles or a mapping with collections: and roles:")
    wanted = {
        kind: [_requirement_name(entry) for entry in data.get(key) or []]
        for kind, key in (("collection", "collections"), ("role", "roles"))
    }
    return {kind: names for kind, names in wanted.items() if names}


def _requirement_name(entry: object) -> str:
    if isinstance(entry, dict):
        return str(entry.get("name") or entry.get("src") or entry)
    return str(entry)


def galaxy_problem(relative: str, kind: str, names: list[str], output: str, tree: Path) -> str:
    """Why ansible-galaxy failed, naming the requirements it could not install (those its output names, else all)."""
    named = [name for name in names if name in output] or names
    # Galaxy warns that -p is outside the configured paths: true, and why fleet sets them for ansible-playbook.
    output = "\n".join(line for line in output.splitlines() if "not part of the configured Ansible" not in line)
    return (
        f"{relative}: ansible-galaxy could not install the {kind}s {', '.join(named)}; make them reachable "
        f"from this machine (a local tarball or git URL works offline) or remove them, then commit again:\n"
        f"{clean_ansible_error(output, tree)}"
    )


def requirements_env(tree: Path) -> dict[str, str]:
    """ANSIBLE_COLLECTIONS_PATH / ANSIBLE_ROLES_PATH with the revision's installed requirements first."""
    env = {}
    if (tree / COLLECTIONS_DIR).is_dir():
        env["ANSIBLE_COLLECTIONS_PATH"] = f"{tree / COLLECTIONS_DIR}{os.pathsep}{DEFAULT_COLLECTIONS_PATH}"
    if (tree / ROLES_DIR).is_dir():
        env["ANSIBLE_ROLES_PATH"] = f"{tree / ROLES_DIR}{os.pathsep}{DEFAULT_ROLES_PATH}"
    return env


def hosts_from_listing(listing: dict[str, Any], ssh_defaults: dict[str, str] | None = None) -> list[InventoryHost]:
    """Turn `ansible-inventory --list` JSON into InventoryHosts; only connection facts are kept.

    `ssh_defaults` are ssh argument variables for hosts whose own vars do not
    set them (what Ansible takes from its environment or ansible.cfg).
    """
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    groups: dict[str, set[str]] = {}
    for group in listing:
        if group != "_meta" and isinstance(listing[group], dict):
            for host in _group_hosts(listing, group):
                groups.setdefault(host, set()).add(group)
    names = sorted(set(groups) | set(hostvars))
    return [
        InventoryHost(
            name=name,
            address=str(hostvars.get(name, {}).get("ansible_host", name)),
            port=int(hostvars.get(name, {}).get("ansible_port", 22)),
            groups=tuple(sorted(groups.get(name, set()) - {"all", "ungrouped"})),
            user=str(hostvars.get(name, {}).get("ansible_user", "")),
            ssh_args=ssh_args_of({**(ssh_defaults or {}), **hostvars.get(name, {})}),
        )
        for name in names
    ]


SSH_ARG_VARS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")  # Ansible's order
# Where Ansible finds the same settings for every host: its environment, then ansible.cfg's [ssh_connection].
# (ssh_args is not here: fleet sets ANSIBLE_SSH_ARGS itself, which beats ansible.cfg.)
SSH_ARG_SETTINGS = {
    "ansible_ssh_common_args": ("ANSIBLE_SSH_COMMON_ARGS", "ssh_common_args"),
    "ansible_ssh_extra_args": ("ANSIBLE_SSH_EXTRA_ARGS", "ssh_extra_args"),
}


def ssh_arg_defaults(tree: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ssh argument variables Ansible would use, for the source at `tree`, where a host sets none."""
    variables = os.environ if environ is None else environ
    section = _ssh_connection_settings(ansible_cfg(tree, variables))
    found = {var: variables.get(env) or section.get(key, "") for var, (env, key) in SSH_ARG_SETTINGS.items()}
    return {var: value for var, value in found.items() if value}


def ansible_cfg(tree: Path, environ: Mapping[str, str]) -> Path | None:
    """The one ansible.cfg Ansible reads when it runs in `tree` (the first of its search order that exists)."""
    named = environ.get("ANSIBLE_CONFIG")
    candidates = [
        Path(named) / "ansible.cfg" if named and Path(named).is_dir() else named,
        tree / "ansible.cfg",
        Path.home() / ".ansible.cfg",
        "/etc/ansible/ansible.cfg",
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def _ssh_connection_settings(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    parser = configparser.ConfigParser(interpolation=None, strict=False, inline_comment_prefixes=(";",))
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}  # Ansible reports a broken ansible.cfg itself; the probe just goes without it
    return dict(parser["ssh_connection"]) if parser.has_section("ssh_connection") else {}


def ssh_args_of(hostvars: dict[str, Any]) -> tuple[str, ...]:
    """A host's ssh argument variables, in Ansible's order, with inventory templates evaluated; () when none."""
    values = tuple(str(hostvars.get(var) or "") for var in SSH_ARG_VARS)
    if not any(values):
        return ()
    return tuple(_template(value, hostvars) for value in values)


def _template(value: str, hostvars: dict[str, Any]) -> str:
    """`value` with Jinja evaluated against the host's inventory vars; unchanged when that cannot be done.

    The inventory is the source's own, trusted as Ansible trusts it; facts and
    extra vars are not known before a run, so a template using them stays as it is
    (probe_target then names it).
    """
    if "{{" not in value:
        return value
    from ansible.errors import AnsibleError

    from fleet import ansible_compat

    trust_as_template = ansible_compat.internal("ansible.template:trust_as_template")
    templar = ansible_compat.internal("ansible.template:Templar")
    loader = ansible_compat.internal("ansible.parsing.dataloader:DataLoader")()
    trusted = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in hostvars.items()}
    try:
        return str(templar(loader=loader, variables=trusted).template(trust_as_template(value)))
    except AnsibleError:
        return value


def probe_target(host: InventoryHost, ssh_config: paramiko.SSHConfig | None = None) -> hostkeys.Target:
    """Where the pre-flight probe finds one host and through what: its ProxyJump hops or ProxyCommand.

    From its ssh arguments first, then from `ssh_config` (a paramiko SSHConfig of
    the files Ansible's ssh also reads), as OpenSSH does.
    """
    unresolved = next((arg for arg in host.ssh_args if "{{" in arg), None)
    if unresolved is not None:
        return hostkeys.Target(
            host.name,
            host.address,
            host.port,
            user=host.user,
            problem=(
                f"the ssh arguments of {host.name} hold a template fleet cannot evaluate from the inventory "
                f"({unresolved!r}); define its variables in the inventory (group_vars, host_vars) or write them out"
            ),
        )
    try:
        jumps, command = hostkeys.route_from_ssh_args(*host.ssh_args)
    except hostkeys.ProxySpecError as exc:
        return hostkeys.Target(
            host.name,
            host.address,
            host.port,
            user=host.user,
            problem=(f"{exc}; fix ansible_ssh_common_args (or _extra_args) of {host.name} in the inventory"),
        )
    target = hostkeys.Target(host.name, host.address, host.port, jumps, command, host.user)
    if ssh_config is None:
        return target
    try:
        return hostkeys.complete_from_ssh_config(target, ssh_config, hostkeys.names_proxy(*host.ssh_args))
    except hostkeys.ProxySpecError as exc:
        return hostkeys.Target(
            host.name,
            host.address,
            host.port,
            user=host.user,
            problem=(f"{exc}; fix the Host block for {host.address} in ~/.ssh/config or /etc/ssh/ssh_config"),
        )


def _group_hosts(listing: dict[str, Any], group: str, seen: set[str] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    body = listing.get(group, {})
    hosts = set(body.get("hosts", []))
    for child in body.get("children", []):
        hosts |= _group_hosts(listing, child, seen)
    return hosts


def clean_ansible_error(text: str, tree: Path) -> str:
    """Ansible's error text, trimmed, with paths made relative to the repository."""
    text = text.replace(f"{tree}/", "").replace(str(tree), ".")
    # Ansible 2.19 says "Origin: file.yml:31:1"; say it in words a reader scans for.
    text = ORIGIN.sub(lambda m: f"in {m['file']}, line {m['line']}, column {m['column']}", text)
    lines = [line.rstrip() for line in text.splitlines()]
    keep = [line for line in lines if line.strip() and "interpreter_discovery" not in line]
    return "\n".join(keep[:25]).strip() or "Ansible gave no message"


class _AnsibleProcess:
    """The ansible-playbook of one run, known by the pid its events carry, so it can be stopped whole."""

    def __init__(self, should_cancel: CancelFn):
        self.should_cancel = should_cancel
        self.pid: int | None = None
        self.stopping = False

    def saw(self, event: dict[str, Any]) -> None:
        if self.pid is None and event.get("pid"):
            self.pid = int(event["pid"])

    def stop_requested(self) -> bool:
        """Polled by ansible-runner: when asked to stop, kill the whole tree first (Mitogen's included).

        Sticky: ansible-runner stores every answer, so a later False would turn
        the stop into a plain failure.
        """
        if not self.stopping and self.should_cancel():
            self.stopping = True
            self.kill()
        return self.stopping

    def kill(self) -> None:
        processes.kill_tree(self.pid)


def run_job(spec: JobSpec, on_event: EventFn, should_cancel: CancelFn = lambda: False) -> RunnerOutcome:
    """Run the playbook as the spec says, calling on_event for every event as it arrives.

    The caller owns deciding when to stop: should_cancel is polled often, and
    the caller enforces its own timeout through it. Stopping, and a crash or
    Ctrl-C mid-run, kill the whole Ansible process tree: it runs in a session
    of its own, so nothing else would reach it.
    """
    if spec.vault_password_file:  # again per run: a controller outlives the mode its file had at start
        filemodes.check_vault_password_file(spec.vault_password_file)
    _prepare_directories(spec)
    process = _AnsibleProcess(should_cancel)

    def handle(event: dict[str, Any]) -> bool:
        process.saw(event)
        on_event(event)
        return False  # fleet records events itself; ansible-runner need not write them to disk

    binary = warm_client(spec)
    report = spec.private_data_dir / REPORT_FILE
    report.unlink(missing_ok=True)  # a report of an earlier run in this directory says nothing of this one
    try:
        result = ansible_runner.run(
            private_data_dir=str(spec.private_data_dir),
            project_dir=str(spec.project_dir),
            playbook=spec.playbook,
            inventory=str(spec.inventory),
            limit=f"@{spec.limit_file}" if spec.limit_file else None,
            forks=spec.forks,
            # ansible-runner names the playbook only to ansible-playbook itself, not to another binary
            binary=binary,
            cmdline=command_line(spec) + (f" {shlex.quote(spec.playbook)}" if binary else ""),
            envvars=job_env(spec) | (warm_env(spec) | {warm.REPORT_ENV: str(report)} if binary else {}),
            event_handler=handle,
            cancel_callback=process.stop_requested,
            suppress_env_files=True,
            quiet=True,
            json_mode=False,
        )
    except BaseException:
        process.kill()
        raise
    status = result.status if result.status in RUNNER_STATUSES else RunnerStatus.FAILED
    return RunnerOutcome(
        status=status, rc=result.rc if result.rc is not None else -1, ansible_path=ansible_path(spec, binary, report)
    )


def ansible_path(spec: JobSpec, binary: str | None, report: Path) -> str:
    """Which path the run took, as fleet-ansible-playbook reported it, or why it never could go warm.

    '' when the client said nothing: it never started (ansible-runner failed first), or it was killed early.
    """
    if spec.warm_anchor is None:
        return warm.path_text(False, warm.DISABLED_REASON)
    if binary is None:
        return warm.path_text(
            False, f"{warm.CLIENT_SCRIPT} is not installed beside ansible-playbook ({ansible_bin_dir()})"
        )
    said = warm.read_report(report)
    return warm.path_text(*said) if said else ""


def warm_client(spec: JobSpec) -> str | None:
    """fleet-ansible-playbook, when a kept Ansible process may run this spec (fleet.warm); else None."""
    if spec.warm_anchor is None:
        return None
    client = ansible_bin_dir() / warm.CLIENT_SCRIPT
    return str(client) if client.exists() else None


def warm_env(spec: JobSpec) -> dict[str, str]:
    # The kept process lives as long as the SSH masters would: until the next scheduled check.
    return {warm.ANCHOR_ENV: str(spec.warm_anchor), warm.IDLE_ENV: str(spec.ssh_persist)}


def _prepare_directories(spec: JobSpec) -> None:
    spec.private_data_dir.mkdir(parents=True, exist_ok=True)
    spec.control_path_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if spec.identity:
        hostkeys.ensure_identity(spec.identity)
    hostkeys.write_ssh_config(spec.known_hosts, spec.identity)  # named by -F in ansible_env
    if control_path(spec.control_path_dir) is None:
        log.warning(
            "the data directory's path is too long for SSH control sockets and no private runtime "
            "directory ($XDG_RUNTIME_DIR or /tmp, fleet-warm-<uid>) is usable: connections will fail; "
            "use a data directory of at most 46 characters"
        )


# ansible-runner's callback empties a task result whose text is over this many characters (its own default:
# 700 000), and a diff over 1 MiB went with it, unseen. fleet cuts what it keeps itself (drift.MAX_DIFF_CHARS,
# records.DIFF_CAP_BYTES), saying so; a result over this is still emptied, and jobs says that instead.
MAX_EVENT_RES = 32 * 1024 * 1024


def job_env(spec: JobSpec) -> dict[str, str]:
    """The environment of one playbook run: fleet's SSH settings, its callback, the chosen strategy."""
    # With the kept process, one ControlPersist for every run: it is part of the ssh command Mitogen keys its
    # host interpreters by, and of the kept process's key; the run's own persist time is how long the kept
    # process waits for the next run (warm_env), which keeps the interpreters and their SSH connections.
    persist = WARM_SSH_PERSIST if warm_client(spec) else spec.ssh_persist
    envvars = ansible_env(spec.known_hosts, spec.control_path_dir, persist)
    # Our callback directory first, so fleet's awx_display (which explains skips) shadows runner's.
    envvars["ANSIBLE_CALLBACK_PLUGINS"] = str(CALLBACK_DIR)
    envvars["MAX_EVENT_RES"] = str(MAX_EVENT_RES)
    envvars.update(strategy_env(spec.strategy))
    envvars.update(requirements_env(spec.project_dir))
    return envvars
