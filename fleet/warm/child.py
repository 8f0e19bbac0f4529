"""One run inside the kept process: a forked child becomes the run's ansible-playbook.

The child takes the run's terminal, environment and directory, then proves that Ansible's settings
for this run are the ones the kept process imported before it runs anything; it runs Ansible's own
ansible-playbook entry point and ends with its exit code.
"""

from __future__ import annotations

import ctypes
import fcntl
import io
import logging
import os
import shutil
import signal
import socket
import sys
import termios
import time
import warnings
from collections.abc import Callable
from typing import Any

from fleet import ansible_compat

# Ansible reads these while a run goes on, not at import: the child sets the run's value.
# Not COLLECTIONS_PATHS: the multiplexers serve the collections of the kept process (fleet.warm.PER_RUN_ENV).
LIVE_SETTINGS = frozenset({"CACHE_PLUGIN_CONNECTION", "DEFAULT_ROLES_PATH"})
FRESH_SETTINGS = frozenset({"DEFAULT_LOCAL_TMP"})  # a new directory per process, as a new ansible-playbook makes
_PR_SET_NAME = 15
RUN_MARK = "fleet_run"  # on a hop of Mitogen's connection stack that is this run's own (become, the run's fork)
log = logging.getLogger("fleet.warm")
_MISSING = object()
import_warnings: list[
    warnings.WarningMessage
] = []  # warnings.WarningMessage the kept process's imports gave (server.prepare_ansible)


def install_collection_loader() -> None:
    """Ansible's collection loader, as ansible-playbook installs it before it starts Mitogen: the multiplexers,
    forked from the kept process, import `ansible_collections.*` code to send it to the hosts. With the
    collections path and Python's path only, no playbook's directory (collections_problem)."""
    ansible_compat.internal("ansible.plugins.loader:init_plugin_loader")([])


def collections_problem(argv: list[str]) -> str | None:
    """Why the multiplexers cannot serve this run's collections, or None: collections beside a playbook
    (<playbook dir>/collections) are the run's own, which the multiplexers forked before it do not see.
    Any YAML file the arguments name counts as a playbook here (an inventory too): it may only go cold."""
    named = {os.path.dirname(os.path.abspath(a)) for a in argv if a.endswith((".yml", ".yaml")) and os.path.isfile(a)}
    beside = sorted(os.path.join(d, "collections") for d in named)
    beside = [path for path in beside if os.path.isdir(path)]
    if beside:
        return f"collections beside the playbook ({', '.join(beside)}) are not served by the kept process"
    return None


def serve_hops_per_run() -> None:
    """Mitogen keeps its contexts on a host (the login interpreter, sudo as root) across runs. Hops marked
    with a run's mark are that run's own: the multiplexer starts them anew (sudo asked again, a fresh fork),
    and a new run's hop ends the idle ones of earlier runs on the same path, so they do not pile up."""
    key_from_dict = ansible_compat.internal("ansible_mitogen.services:key_from_dict")
    # The wrapper calls it through `self`: missing, it must fail here, when the kept process starts, not mid-run.
    ansible_compat.internal("ansible_mitogen.services:ContextService._shutdown_unlocked")

    # Mitogen has no type information: its ContextService and its keys are Any here.
    def wrap(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def _connect(self: Any, key: Any, spec: dict[str, Any], via: Any = None) -> dict[str, Any]:
            base = None
            if spec.get(RUN_MARK):
                base = key_from_dict(via=via, **{k: v for k, v in spec.items() if k != RUN_MARK})
                with self._lock:
                    for context in list(self._key_by_context):
                        if getattr(context, "fleet_base", None) == base and (
                            not self._refs_by_context.get(context) or not run_alive(context.fleet_run)
                        ):
                            self._shutdown_unlocked(context)
            response = original(self, key, spec, via)
            if base is not None and response.get("context") is not None:
                response["context"].fleet_base, response["context"].fleet_run = base, spec[RUN_MARK]
            return response

        return _connect

    ansible_compat.patch("ansible_mitogen.services:ContextService._connect", wrap)


def run_mark() -> str:
    """This run's mark: its pid (a child of the kept process, like the multiplexers) and when it started."""
    return f"{os.getpid()}-{time.time_ns()}"


def run_alive(mark: str) -> bool:
    """Whether the run that made a mark still runs. A context of an ended run is idle whatever its count of
    users says (a worker that ended without giving its connection back leaves one behind)."""
    try:
        os.kill(int(mark.split("-", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):
        return True
    return True


def give_the_run_its_own_hops(mark: str) -> None:
    """In this run (and the workers it forks), every task runs in a context that is the run's own, as in a
    fresh ansible-playbook:
    - a privilege revoked on the host between runs must end at the next run: become hops carry the mark;
    - what modules keep at module level (the release the distro helper read, gathered once) must not outlive
      the run: tasks that run as the login user run in a fork of the login interpreter made for this run.
    The login interpreter itself then never runs a module, so each run's fork starts as clean as it does
    (modules share one interpreter within a run, as they do cold), and it costs one fork per host per run."""

    # Mitogen has no type information: its Connection is Any here; a stack is a list of hops (dicts).
    def wrap(
        original: Callable[[Any], tuple[str, list[dict[str, Any]]]],
    ) -> Callable[[Any], tuple[str, list[dict[str, Any]]]]:
        def _build_stack(self: Any) -> tuple[str, list[dict[str, Any]]]:
            name, stack = original(self)
            own = [dict(hop, **{RUN_MARK: mark}) if hop.get("method") in self.become_methods else hop for hop in stack]
            if own[-1].get("method") not in self.become_methods:
                own.append({"method": "fork", "kwargs": {}, RUN_MARK: mark})
            return name, own

        return _build_stack

    ansible_compat.patch("ansible_mitogen.connection:Connection._build_stack", wrap)


def take_controlling_terminal() -> None:
    """Make the client's terminal ours, as a fresh ansible-playbook started by ansible-runner (pexpect) has it:
    tasks such as pause ask it for its foreground group. The client gave it up for this run."""
    if os.isatty(0):
        try:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        except OSError as error:
            log.info("the run's terminal could not become its controlling terminal: %s", error)


def imported_settings() -> dict[str, object]:
    """Every Ansible setting as the kept process imported it."""
    from ansible import constants as C

    definitions = ansible_compat.internal("ansible.constants:config.get_configuration_definitions")
    return {name: getattr(C, name, _MISSING) for name in definitions()}


def settings_problem(imported: dict[str, object]) -> str | None:
    """Why this run cannot use the kept process (a setting differs), or None after adopting the live ones."""
    from ansible import constants as C

    config_value = ansible_compat.internal("ansible.constants:config.get_config_value")
    adopted = {}
    for name in imported:
        value = config_value(name, variables=vars(C))
        if name in FRESH_SETTINGS or name in LIVE_SETTINGS:
            adopted[name] = value
        elif value != imported[name]:
            return f"Ansible setting {name} differs from the kept process's"
    for name, value in adopted.items():
        setattr(C, name, value)
    return None


def take_terminal(fds: list[int]) -> None:
    """The client's stdin, stdout and stderr become ours, and Python's streams are made anew on them."""
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)


def look_like_ansible_playbook() -> None:
    """`ps` and process checks see the run as ansible-playbook (the command line stays the kept process's)."""
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, b"ansible-playbook", 0, 0, 0)
    except (OSError, AttributeError):
        pass


def run(
    request: dict[str, Any], fds: list[int], conn: socket.socket, imported: dict[str, object], program: str
) -> None:
    """Run one request in this forked child; never returns."""
    code = 1
    try:
        os.setsid()  # its own group: stopping the run stops its forks and nothing of the kept process
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as ansible-runner starts ansible-playbook
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        try:  # before taking the terminal: what it says goes to the log
            problem = settings_problem(imported) or collections_problem(request["argv"])
        except Exception as error:  # noqa: BLE001  a cold ansible-playbook will say it to the run
            problem = f"Ansible's settings could not be read: {error}"
        if problem:
            log.info("run for pid %s goes cold: %s", request.get("client_pid"), problem)
            conn.sendall(f"F {problem}\n".encode())
            os._exit(0)
        conn.close()
        take_terminal(fds)
        take_controlling_terminal()
        look_like_ansible_playbook()
        if os.environ.get("ANSIBLE_STRATEGY", "").startswith("mitogen"):
            give_the_run_its_own_hops(run_mark())
        code = run_ansible_playbook([program, *request["argv"]])
    finally:
        os._exit(code)


def run_ansible_playbook(argv: list[str]) -> int:
    from ansible import constants as C
    from ansible.utils.display import Display

    main = ansible_compat.internal("ansible.cli.playbook:main")
    sys.argv = argv
    for said in import_warnings:  # as a fresh ansible-playbook warns at import, before anything else
        warnings.showwarning(said.message, said.category, said.filename, said.lineno, sys.stderr, said.line)
    # The kept process installed the collection loader (with the same paths: proven by the key and the
    # settings); the run's CLI would otherwise warn that it is configured already.
    ansible_compat.patch(
        "ansible.plugins.loader:_configure_collection_loader", lambda _original: lambda *_args, **_kwargs: None
    )
    ansible_compat.internal("ansible.utils.display:Display._set_column_width")(Display())  # the run's terminal
    try:
        main(argv)
        code = 0
    except SystemExit as ended:
        code = ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
        shutil.rmtree(C.DEFAULT_LOCAL_TMP, ignore_errors=True)  # Ansible's atexit would; os._exit skips it
    return code
