"""One run inside the kept process: a forked child becomes the run's ansible-playbook.

The child takes the run's terminal, environment and directory, then proves that Ansible's settings
for this run are the ones the kept process imported before it runs anything; it runs Ansible's own
ansible-playbook entry point and ends with its exit code.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import shutil
import signal
import socket
import sys

# Ansible reads these while a run goes on, not at import: the child sets the run's value.
LIVE_SETTINGS = frozenset({"CACHE_PLUGIN_CONNECTION", "DEFAULT_ROLES_PATH", "COLLECTIONS_PATHS"})
FRESH_SETTINGS = frozenset({"DEFAULT_LOCAL_TMP"})  # a new directory per process, as a new ansible-playbook makes
_PR_SET_NAME = 15
log = logging.getLogger("fleet.warm")
_MISSING = object()


def imported_settings() -> dict[str, object]:
    """Every Ansible setting as the kept process imported it."""
    from ansible import constants as C

    return {name: getattr(C, name, _MISSING) for name in C.config.get_configuration_definitions()}


def settings_problem(imported: dict[str, object]) -> str | None:
    """Why this run cannot use the kept process (a setting differs), or None after adopting the live ones."""
    from ansible import constants as C

    adopted = {}
    for name in imported:
        value = C.config.get_config_value(name, variables=vars(C))
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


def run(request: dict, fds: list[int], conn: socket.socket, imported: dict[str, object],
        program: str) -> None:
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
            problem = settings_problem(imported)
        except Exception as error:  # noqa: BLE001  a cold ansible-playbook will say it to the run
            problem = f"Ansible's settings could not be read: {error}"
        if problem:
            log.info("run for pid %s goes cold: %s", request.get("client_pid"), problem)
            conn.sendall(f"F {problem}\n".encode())
            os._exit(0)
        conn.close()
        take_terminal(fds)
        look_like_ansible_playbook()
        code = run_ansible_playbook([program, *request["argv"]])
    finally:
        os._exit(code)


def run_ansible_playbook(argv: list[str]) -> int:
    from ansible import constants as C
    from ansible.cli.playbook import main
    from ansible.utils.display import Display

    sys.argv = argv
    Display()._set_column_width()  # the run's terminal, not the kept process's
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
