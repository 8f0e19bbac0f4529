"""ansible-runner's event callback, plus the evidence fleet's verdicts need.

fleet puts this directory first on ANSIBLE_CALLBACK_PLUGINS, so this module
shadows ansible-runner's `awx_display` and runs inside ansible-playbook. It
adds, to every task event, a `fleet` object with findings read from the
*real* result before `no_log` censors it (changed, why check mode did not
evaluate it) and the task facts a verdict depends on (`when`, `register`,
`check_mode`, delegation, rescue). It never adds module output.

It also:
- reports hosts that `meta: end_host`/`end_play` stopped, with the tasks
  they will never reach (Ansible sends no event for an executed meta task);
- masks every value Ansible decrypts from vault (files and inline `!vault`)
  as `********` in events and in the output, before anything leaves this
  process, so no secret reaches ansible-runner's artifacts or fleet's store.

The hooks below patch Ansible's internals, each named in fleet.ansible_compat
with what it is for. Without the ones that mask secrets this callback does
not load (no run goes on unmasked); without any other, a run goes on and
warns, naming the internal a release moved.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ansible.playbook.handler import Handler
from ansible.utils.display import Display
from ansible_runner.display_callback.callback import awx_display as runner_display

from fleet import ansible_compat
from fleet.evidence import classify_result, names_read
from fleet.processes import die_with_parent_if_asked

if TYPE_CHECKING:
    from jinja2 import Environment

die_with_parent_if_asked()  # under `fleet worker`: this ansible-playbook dies with the worker

DOCUMENTATION = runner_display.DOCUMENTATION

MASK = "********"
MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words and numbers all over the output
MAX_SCANNED_FILE = 4 * 1024 * 1024
ENDING_METAS = {"end_host", "end_play"}
SKIP_FIELDS = ("skipped", "skip_reason", "false_condition", "msg", "changed")


# --- secrets --------------------------------------------------------------------


class Secrets:
    """Values decrypted from vault in this process, and masking of any text holding them."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self._ordered: list[str] = []

    def add_plaintext(self, value: object) -> None:
        """A decrypted value: itself, and each line of it (diffs show lines)."""
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        candidates = [text.strip()] + [line.strip() for line in text.splitlines()]
        new = {c for c in candidates if len(c) >= MIN_SECRET_CHARS} - self.values
        if new:
            self.values |= new
            self._ordered = sorted(self.values, key=len, reverse=True)  # longest first: no partial leftovers

    def add_document(self, data: object) -> None:
        """Every string leaf of a decrypted vars document."""
        if isinstance(data, dict):
            for value in data.values():
                self.add_document(value)
        elif isinstance(data, (list, tuple)):
            for value in data:
                self.add_document(value)
        elif isinstance(data, (str, bytes)) or type(data).__name__ == "EncryptedString":
            self.add_plaintext(str(data) if not isinstance(data, (str, bytes)) else data)

    def mask(self, value: object) -> object:
        """The value with every secret replaced, through dicts and lists."""
        if not self._ordered:
            return value
        if isinstance(value, str):
            for secret in self._ordered:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {key: self.mask(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.mask(item) for item in value]
        return value


SECRETS = Secrets()


def scan_vaulted_files(root: str, loader: Any) -> None:  # an Ansible DataLoader
    """Decrypt every vault in the project up front, so its values are masked before first use.

    Inline `!vault` values are otherwise decrypted lazily, sometimes only in
    a worker process, where this process would never learn them.
    """
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            path = os.path.join(folder, name)
            try:
                if os.path.getsize(path) > MAX_SCANNED_FILE:
                    continue
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                continue
            if b"$ANSIBLE_VAULT" in data:
                _learn_vaulted_file(path, data, loader)


def _learn_vaulted_file(path: str, data: bytes, loader: Any) -> None:
    if data.lstrip().startswith(b"$ANSIBLE_VAULT"):
        try:
            SECRETS.add_plaintext(loader._vault.decrypt(data))  # the whole file is secret
        except Exception:  # noqa: BLE001 - a vault this password cannot open is not ours to mask
            return
    try:
        SECRETS.add_document(loader.load_from_file(path))
    except Exception:  # noqa: BLE001 - not YAML (a vaulted key file): its lines are masked above
        pass


def _hook_vault() -> None:
    """Anything decrypted in this process later (vars_files outside the project) is masked too."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def decrypt_and_get_vault_id(self: Any, vaulttext: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
            plaintext, vault_id, secret = original(self, vaulttext, *args, **kwargs)
            SECRETS.add_plaintext(plaintext)
            return plaintext, vault_id, secret

        return decrypt_and_get_vault_id

    ansible_compat.patch("ansible.parsing.vault:VaultLib.decrypt_and_get_vault_id", wrap)


def _hook_display() -> None:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def display(self: Any, msg: str, *args: Any, **kwargs: Any) -> Any:
            return original(self, SECRETS.mask(msg), *args, **kwargs)

        return display

    ansible_compat.patch("ansible.utils.display:Display.display", wrap)


def _hook_events() -> None:
    """Mask the event dict ansible-runner is about to write, whatever field holds a secret."""

    def wrap(original: Callable[[], Any]) -> Callable[[], object]:
        def get_begin_dict() -> object:
            return SECRETS.mask(original())

        return get_begin_dict

    ansible_compat.patch("ansible_runner.display_callback.callback.awx_display:event_context.get_begin_dict", wrap)


# --- findings from the real result ------------------------------------------------


def _hook_results() -> None:
    """Classify each result from its uncensored data, as Ansible makes the callbacks' copy."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def as_callback_task_result(self: Any) -> Any:
            copy = original(self)
            copy._fleet_raw = {
                "data": self._return_data,
                "delegated_host": (self._return_data.get("_ansible_delegated_vars") or {}).get(
                    "ansible_delegated_host"
                ),
                "task": getattr(self, "_fleet_task", None),
            }
            return copy

        return as_callback_task_result

    ansible_compat.patch("ansible.executor.task_result:_RawTaskResult.as_callback_task_result", wrap)


def _hook_task_as_written() -> None:
    """Keep, on each result, the task as the play wrote it: the result's own task carries the arguments the
    worker templated (set_fact's value, not the expression), and what a task reads is in the expressions."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def _convert_wire_task_result_to_raw(self: Any, wire_task_result: Any) -> Any:
            raw = original(self, wire_task_result)
            entry = self._queued_task_cache.get((raw.host.name, wire_task_result.task_uuid)) or {}
            raw._fleet_task = entry.get("task")
            return raw

        return _convert_wire_task_result_to_raw

    ansible_compat.patch("ansible.plugins.strategy:StrategyBase._convert_wire_task_result_to_raw", wrap)


def task_findings(result: Any, skipped: bool) -> dict[str, Any]:
    """The `fleet` object of one task event."""
    task = result._task
    raw = getattr(result, "_fleet_raw", None) or {"data": result._result, "delegated_host": None}
    written = raw.get("task") or task  # the task before the worker templated it (see _hook_task_as_written)
    action = getattr(task, "resolved_action", None) or task.action
    data = raw["data"] if isinstance(raw["data"], dict) else {}
    findings = classify_result(data, skipped, action or "")
    no_log = bool(task.no_log or data.get("_ansible_no_log"))
    if no_log and findings["not_evaluated"]:  # the reason quotes module output, which no_log hides
        findings["not_evaluated"] = "check mode did not evaluate it (no_log hides Ansible's message)"
    findings.update(
        no_log=no_log,
        when=[str(c) for c in (task.when or [])],
        register=task.register or "",
        check_mode=task.check_mode if isinstance(task.check_mode, bool) else None,
        delegated_host=str(raw["delegated_host"]) if raw["delegated_host"] else "",
        in_rescued_block=in_rescued_block(task),
        handler=isinstance(task, Handler),
    )
    findings.update(task_reads(written, data, action or ""))
    findings.update(files=files_read(task, data), roles=role_paths(task))
    return findings


# --- what a task reads: variables (taint through set_fact, vars, loops) and files (drift causes) -----

SET_FACT_ACTIONS = {"set_fact"}
INCLUDE_VARS_ACTIONS = {"include_vars"}
MAX_DERIVED_NAMES = 200  # names followed through vars definitions per task: enough for any real play


_reads_of_task: dict[
    tuple[str | None, str], dict[str, Any]
] = {}  # (task uuid, action) -> its task_reads: the same for every host (include_vars aside)
MAX_REMEMBERED_TASKS = 10_000


def task_reads(task: Any, data: dict[str, Any], action: str) -> dict[str, Any]:
    """The variable names the task's templates read, and how variables it reads are defined from others.

    `when_reads` maps each condition to the names it reads; `loop_reads` and `arg_reads` are the loop's
    and the arguments' names (task and block `vars` are followed through `derived`, as are play and role
    vars); `sets` names the variables a set_fact or include_vars gives a value, each with what it reads.
    Names only, never values: fleet.drift follows a result check mode could not give through them.
    """
    short = action.rsplit(".", 1)[-1]
    key = (getattr(task, "_uuid", None), short)
    if key[0] and short not in INCLUDE_VARS_ACTIONS and key in _reads_of_task:
        return _reads_of_task[key]
    found = _task_reads(task, data, short)
    if key[0] and short not in INCLUDE_VARS_ACTIONS and len(_reads_of_task) < MAX_REMEMBERED_TASKS:
        _reads_of_task[key] = found
    return found


def _task_reads(task: Any, data: dict[str, Any], short: str) -> dict[str, Any]:
    args = task.args if isinstance(task.args, dict) else {}
    when = {str(c): sorted(names_read(c, expression=True)) for c in (task.when or [])}
    loop = sorted(names_read(task.loop))
    sets: dict[str, list[str]] = {}
    if short in SET_FACT_ACTIONS:
        sets = {str(k): sorted(names_read(v)) for k, v in args.items() if k != "cacheable"}
        arg_names: set[str] = set()
    else:
        arg_names = names_read(args)
    if short in INCLUDE_VARS_ACTIONS:
        loaded = (data.get("ansible_facts") or {}) if isinstance(data.get("ansible_facts"), dict) else {}
        sets = {str(k): sorted(arg_names) for k in loaded}
    direct = arg_names.union(loop, *when.values(), *sets.values())
    return {
        "when_reads": when,
        "loop_reads": loop,
        "arg_reads": sorted(arg_names),
        "sets": sets,
        "derived": derived_names(task, direct),
    }


def derived_names(task: Any, names: set[str]) -> dict[str, list[str]]:
    """For each variable reached from `names` that task, block, play or role vars define by a template,
    the names its template reads (followed until no new name turns up)."""
    definitions = visible_definitions(task)
    derived: dict[str, list[str]] = {}
    pending = [n for n in names if n in definitions]
    while pending and len(derived) < MAX_DERIVED_NAMES:
        name = pending.pop()
        if name in derived:
            continue
        reads = names_read(definitions[name]) - {name}
        derived[name] = sorted(reads)
        pending += [n for n in reads if n in definitions and n not in derived]
    return {name: reads for name, reads in derived.items() if reads}


def visible_definitions(task: Any) -> dict[str, Any]:
    """Variable definitions a task sees besides inventory and facts: role defaults and vars, play vars,
    then block and task vars (later ones win, as in Ansible's precedence)."""
    found: dict[str, Any] = {}
    role: Any = getattr(task, "_role", None)  # an Ansible Role (no type information); None: the except below
    play = _play_of(task)
    getters: tuple[Callable[[], Any], ...] = (  # typed here: a lambda with no declared type is an untyped call
        lambda: role.get_default_vars(),
        lambda: play.vars,
        lambda: role.get_vars(include_params=True),
        lambda: task.get_vars(),
    )
    for getter in getters:
        try:
            values = getter()
        except Exception:  # noqa: BLE001 - a part this task does not have (no role, no play)
            continue
        if isinstance(values, dict):
            found.update(values)
    return found


def _play_of(task: Any) -> Any:  # an Ansible Play, or None
    parent = getattr(task, "_parent", None)
    while parent is not None:
        play = getattr(parent, "_play", None)
        if play is not None:
            return play
        parent = getattr(parent, "_parent", None)
    return None


def files_read(task: Any, data: dict[str, Any]) -> list[str]:
    """Files of the source this task's result depends on: the ones its action and lookups found on the
    controller (templates, copy sources, vars files), its play's file and the play's vars_files."""
    found = set(data.get(FILES_KEY) or [])
    play = _play_of(task)
    origin = getattr(getattr(play, "_origin", None), "path", None)
    if origin:
        found.add(str(origin))
        base = os.path.dirname(str(origin))
        for name in play.get_vars_files() if hasattr(play, "get_vars_files") else []:
            if isinstance(name, str) and "{{" not in name:
                found.add(os.path.normpath(os.path.join(base, name)))
    return sorted(str(f) for f in found)


def role_paths(task: Any) -> list[str]:
    """The task's role and every role whose defaults and vars it sees (its dependencies and parents)."""
    role = getattr(task, "_role", None)
    if role is None:
        return []
    roles = [role]
    for getter in (role.get_all_dependencies, lambda: role._parents):
        try:
            roles += list(getter() or [])
        except Exception:  # noqa: BLE001 - an ansible-core without this part: the task's own role still counts
            pass
    return sorted({str(r._role_path) for r in roles if getattr(r, "_role_path", None)})


# Files each task's action found on the controller: recorded inside the worker process that ran it and
# carried back in its result under a key Ansible strips before callbacks and `register` see it.
FILES_KEY = "_ansible_fleet_files"
_files_found: list[str] | None = None  # set while a worker runs a task


def _hook_file_reads() -> None:
    """Record the files Ansible's search paths resolve while a worker runs a task (template and copy `src`,
    `lookup('file')`, `lookup('template')`, include_vars, templates a template includes), and hand them
    back with the task's result."""
    for name in ("path_dwim_relative_stack", "path_dwim_relative"):
        ansible_compat.patch(f"ansible.parsing.dataloader:DataLoader.{name}", _recording)
    _hook_template_includes()

    def wrap(run: Callable[..., Any]) -> Callable[..., Any]:
        def run_recording(self: Any) -> Any:
            global _files_found
            _files_found = []
            try:
                result = run(self)
                if isinstance(result, dict) and _files_found:
                    result[FILES_KEY] = sorted(set(_files_found))
                return result
            finally:
                _files_found = None

        return run_recording

    ansible_compat.patch("ansible.executor.task_executor:TaskExecutor.run", wrap)


def _hook_template_includes() -> None:
    """Templates a template pulls in (`{% include %}`, `{% import %}`, `{% extends %}`) are read through
    Jinja's own loader, not Ansible's search path: record them too."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def get_source(self: Any, environment: Environment, template: str) -> Any:
            source = original(self, environment, template)
            if _files_found is not None and isinstance(source, tuple) and len(source) > 1 and source[1]:
                _note_found(str(source[1]))
            return source

        return get_source

    ansible_compat.patch("jinja2:FileSystemLoader.get_source", wrap)


def _note_found(path: str) -> None:
    """Keep a file the task read, unless it is Ansible's own scratch copy (the template action renders
    into the controller's local temp directory, which is no part of the source)."""
    from ansible import constants

    scratch = os.path.dirname(str(getattr(constants, "DEFAULT_LOCAL_TMP", "") or "").rstrip("/"))
    if (scratch and path.startswith(scratch + "/")) or not os.path.exists(path):
        return
    assert _files_found is not None  # its callers note files only while a task runs
    _files_found.append(path)


def _recording(original: Callable[..., Any]) -> Callable[..., Any]:
    def lookup(self: Any, *args: Any, **kwargs: Any) -> Any:
        path = original(self, *args, **kwargs)
        if _files_found is not None and isinstance(path, (str, bytes)):
            _note_found(path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path)
        return path

    return lookup


def in_rescued_block(task: Any) -> bool:
    """Is the task inside the `block:` part of a block that has a `rescue:`?"""
    child, parent = task, getattr(task, "_parent", None)
    while parent is not None:
        if getattr(parent, "rescue", None) and any(
            getattr(item, "_uuid", None) == getattr(child, "_uuid", object()) for item in parent.block or []
        ):
            return True
        child, parent = parent, getattr(parent, "_parent", None)
    return False


# --- hosts that a meta task stopped ----------------------------------------------

_meta_listeners: list[Callable[[Any, Any, str, list[dict[str, Any]]], None]] = []  # (task, host, action, never_reached)


def _hook_meta() -> None:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def _execute_meta(self: Any, task: Any, play_context: Any, iterator: Any, target_host: Any) -> Any:
            results = original(self, task, play_context, iterator, target_host)
            action = task.args.get("_raw_params") if isinstance(task.args, dict) else None
            if action in ENDING_METAS and not any(r._return_data.get("skipped") for r in results):
                for listener in _meta_listeners:
                    listener(task, target_host, action, tasks_after(iterator, task))
            return results

        return _execute_meta

    ansible_compat.patch("ansible.plugins.strategy:StrategyBase._execute_meta", wrap)


def tasks_after(iterator: Any, meta_task: Any) -> list[dict[str, Any]]:
    """The play's tasks that come after the meta task: the ones a stopped host never reaches."""
    ordered: list[Any] = []  # Ansible Tasks (no type information)
    for block in getattr(iterator, "_blocks", []):
        _collect_tasks(block, ordered)
    uuids = [t._uuid for t in ordered]
    if meta_task._uuid not in uuids:
        return []
    rest = ordered[uuids.index(meta_task._uuid) + 1 :]
    # Named as ansible-runner names tasks in events, so both lists read alike.
    return [{"task": t.name or t.action, "action": t.action, "path": _path(t)} for t in rest if not t.implicit]


def _collect_tasks(block: Any, into: list[Any]) -> None:
    for item in getattr(block, "block", None) or []:
        if hasattr(item, "block"):
            _collect_tasks(item, into)
        else:
            into.append(item)


def _path(task: Any) -> str:
    try:
        return task.get_path() or ""
    except AttributeError:
        return ""


# --- how often the main process looks for results ---------------------------------

# Ansible's default is 0.001 s. Each look also asks every worker process whether it exited (a waitpid per
# fork), so at 1 ms ansible-playbook's main process spends a few percent of a core just looking, the whole run
# long, on a controller that is CPU-bound; at 10 ms a task's end is noticed at most 10 ms later.
RESULTS_POLL_INTERVAL = 0.01


def _hook_results_poll() -> None:
    """Look for results every RESULTS_POLL_INTERVAL unless ansible.cfg sets internal_poll_interval (it has no
    environment variable, and fleet must not replace the source's ansible.cfg to set it)."""
    from ansible import constants

    value_and_origin = ansible_compat.internal("ansible.constants:config.get_config_value_and_origin")
    _value, origin = value_and_origin("DEFAULT_INTERNAL_POLL_INTERVAL")
    if origin == "default":
        constants.DEFAULT_INTERNAL_POLL_INTERVAL = RESULTS_POLL_INTERVAL  # read by the strategy at each wait


# Masking secrets is not optional: without it this callback must not run (Ansible then says why and stops).
for _hook in (_hook_vault, _hook_display, _hook_events):
    _hook()
# Without the others a run goes on, and says loudly which evidence it lacks.
for _hook in (_hook_results, _hook_task_as_written, _hook_meta, _hook_results_poll, _hook_file_reads):
    try:
        _hook()
    except ansible_compat.InternalMoved as _moved:
        Display().warning(f"fleet: {_moved}")


# --- the callback ------------------------------------------------------------------


def skip_details(result: dict[str, Any]) -> dict[str, Any]:
    """The few result fields that explain a skip (ansible-runner sends none)."""
    if result.get("_ansible_no_log"):
        return {"skipped": True, "censored": True}
    details = {key: result[key] for key in SKIP_FIELDS if key in result}
    items = result.get("results")
    if isinstance(items, list):
        details["results"] = [skip_details(item) for item in items if isinstance(item, dict)]
    return details


# Ansible's objects the hooks receive (results, tasks, hosts, playbooks) are Any: ansible-core has no type information.
class CallbackModule(runner_display.CallbackModule):  # type: ignore[misc]  # ansible-runner has no type information
    CALLBACK_NAME = "awx_display"

    def __init__(self) -> None:
        super().__init__()
        _meta_listeners[:] = [self._host_ended]

    def v2_playbook_on_start(self, playbook: Any) -> None:
        loader = getattr(playbook, "_loader", None)
        if loader is not None:
            scan_vaulted_files(os.getcwd(), loader)
        super().v2_playbook_on_start(playbook)

    def v2_runner_on_ok(self, result: Any) -> None:
        with runner_display.event_context.set_local(fleet=task_findings(result, skipped=False)):
            super().v2_runner_on_ok(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        with runner_display.event_context.set_local(fleet=task_findings(result, skipped=False)):
            super().v2_runner_on_failed(result, ignore_errors)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        with runner_display.event_context.set_local(fleet=task_findings(result, skipped=False)):
            super().v2_runner_on_unreachable(result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        with runner_display.event_context.set_local(
            res=skip_details(result._result), fleet=task_findings(result, skipped=True)
        ):
            super().v2_runner_on_skipped(result)

    def _host_ended(self, task: Any, host: Any, action: str, never_reached: list[dict[str, Any]]) -> None:
        """One event for a host a meta task stopped, shaped like a task result."""
        findings = {
            "changed": False,
            "not_evaluated": "",
            "meta": action,
            "never_reached": never_reached,
            "when": [str(c) for c in (task.when or [])],
            "register": "",
            "check_mode": None,
            "delegated_host": "",
            "in_rescued_block": False,
            "no_log": False,
            "handler": False,
            **task_reads(task, {}, "meta"),
        }
        event_data = {
            "host": host.get_name(),
            "remote_addr": host.address,
            "task": task,
            "res": {"changed": False, "msg": action},
            "fleet": findings,
        }
        with self.capture_event_data("runner_on_ok", **event_data):
            pass
