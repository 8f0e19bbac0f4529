"""Every internal of Ansible, ansible-runner and Mitogen that fleet reaches into, named once.

Internals are no API: any release may move them. fleet uses a few (to read a result before `no_log`
censors it, to mask what a vault decrypts, to fork runs from a kept Ansible process, ...), and each is
listed in INTERNALS with what it is for. Code elsewhere gets them only through `internal()` and
`patch()`, which refuse a name not listed here and raise InternalMoved, naming it, when the installed
release lacks it. `python -m fleet.ansible_compat` (and tests/unit/test_ansible_compat.py) lists every
listed internal the installed releases lack: run it first when moving to a new ansible-core.

Tested with ansible-core 2.19 (PyPI's `ansible` 12), ansible-runner 2.4 and Mitogen 0.3 on Python 3.11.
ansible-core 2.20 and 2.21 need Python 3.12 or later on the controller; the move touches this table
first, then the code its entries name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from fleet.errors import FleetError

CALLBACK = "the event callback (fleet/ansible_plugins/callback/awx_display.py)"
WARM = "the kept Ansible process (fleet/warm)"

# "module:attribute.attribute" -> who uses it, and what for.
INTERNALS: dict[str, str] = {
    # -- the event callback: secrets never leave ansible-playbook
    "ansible.parsing.vault:VaultLib.decrypt_and_get_vault_id": f"{CALLBACK}: mask every value a vault decrypts",
    "ansible.utils.display:Display.display": f"{CALLBACK}: mask secrets in Ansible's output",
    "ansible_runner.display_callback.callback.awx_display:event_context.get_begin_dict": f"{CALLBACK}: mask secrets in every event ansible-runner writes",  # noqa: E501
    # -- the event callback: what a verdict needs from the real result
    "ansible.executor.task_result:_RawTaskResult.as_callback_task_result": f"{CALLBACK}: read each result before no_log censors the callbacks' copy",  # noqa: E501
    "ansible.plugins.strategy:StrategyBase._convert_wire_task_result_to_raw": f"{CALLBACK}: keep the task as the play wrote it on each result (its expressions, not their values)",  # noqa: E501
    "ansible.plugins.strategy:StrategyBase._execute_meta": f"{CALLBACK}: hosts that meta end_host/end_play stopped (Ansible sends no event for them)",  # noqa: E501
    "ansible.executor.task_executor:TaskExecutor.run": f"{CALLBACK}: the files each task read (drift cause)",
    "ansible.parsing.dataloader:DataLoader.path_dwim_relative_stack": f"{CALLBACK}: files found by search path",
    "ansible.parsing.dataloader:DataLoader.path_dwim_relative": f"{CALLBACK}: files found by search path",
    "jinja2:FileSystemLoader.get_source": f"{CALLBACK}: templates a template includes (drift cause)",
    "ansible.constants:config.get_config_value_and_origin": f"{CALLBACK}: whether ansible.cfg sets internal_poll_interval (fleet's default is 10 ms)",  # noqa: E501
    # -- the kept Ansible process
    "ansible.plugins.loader:init_plugin_loader": f"{WARM}: the collection loader before Mitogen's muxes fork",
    "ansible.plugins.loader:_configure_collection_loader": f"{WARM}: a run must not configure it a second time",
    "ansible.constants:config.get_configuration_definitions": f"{WARM}: every setting, to prove a run's equal",
    "ansible.constants:config.get_config_value": f"{WARM}: a setting's value for the run's environment",
    "ansible.cli.playbook:main": f"{WARM}: a forked run is ansible-playbook's own entry point",
    "ansible.utils.display:Display._set_column_width": f"{WARM}: the run's terminal width, not the kept one's",
    "ansible_mitogen.affinity:policy": f"{WARM}: runs keep the CPUs they were given (Mitogen's pins them)",
    "ansible_mitogen.affinity:Policy": f"{WARM}: the policy that pins nothing",
    "ansible_mitogen.process:get_classic_worker_model": f"{WARM}: the multiplexers' pids (kept-process health)",
    "ansible_mitogen.services:ContextService._connect": f"{WARM}: become hops and forks that are a run's own",
    "ansible_mitogen.services:ContextService._shutdown_unlocked": f"{WARM}: end an ended run's contexts",
    "ansible_mitogen.services:key_from_dict": f"{WARM}: a run's hops keyed without the run's mark",
    "ansible_mitogen.connection:Connection._build_stack": f"{WARM}: mark the run's own hops",
    # -- outside a run
    "ansible.template:Templar": "fleet.runner: templated ssh arguments; fleet.become_lookup: become passwords",
    "ansible.template:trust_as_template": "fleet.runner: the inventory's strings are templates (2.19's trust)",
    "ansible.cli:CLI.setup_vault_secrets": "fleet.become_lookup: open the inventory's vaulted become passwords",
    "ansible.inventory.manager:InventoryManager": "fleet.become_lookup: the run's inventory",
    "ansible.vars.manager:VariableManager": "fleet.become_lookup: a host's variables as a run sees them",
    "ansible.parsing.dataloader:DataLoader": "fleet.runner, fleet.become_lookup: Ansible's file loader",
}
_HOOKED = "_fleet_hook"  # set on every replacement: patching twice keeps one


class InternalMoved(FleetError):
    """An internal fleet relies on is not where this release of Ansible or Mitogen has it."""

    def __init__(self, path: str, why: str):
        super().__init__(
            f"{path} is missing from the installed release ({release()}); fleet uses it for {why}. "
            "Install the versions fleet is tested with (docs/architecture.md: Ansible versions)"
        )
        self.path = path


def release() -> str:
    found = []
    for name, module in (("ansible-core", "ansible.release"), ("mitogen", "mitogen")):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        version = getattr(imported, "__version__", "")
        found.append(f"{name} {'.'.join(map(str, version)) if isinstance(version, tuple) else version}")
    return ", ".join(found) or "no Ansible"


def internal(path: str) -> Any:
    """The object at `path` ("module:attr.attr"), which INTERNALS must list; InternalMoved when it is missing."""
    if path not in INTERNALS:
        raise KeyError(f"{path} is not listed in fleet.ansible_compat.INTERNALS: list it, with what it is for")
    try:
        return _resolve(path)
    except (ImportError, AttributeError) as error:
        raise InternalMoved(path, INTERNALS[path]) from error


def patch(path: str, wrap: Callable[[Any], Any]) -> None:
    """Replace the attribute at `path` with wrap(original), once however often it is asked."""
    original = internal(path)
    if getattr(original, _HOOKED, False):
        return
    replacement = wrap(original)
    setattr(replacement, _HOOKED, True)
    module_name, _, attributes = path.partition(":")
    *owner, name = attributes.split(".")
    setattr(_resolve(f"{module_name}:{'.'.join(owner)}"), name, replacement)


def _resolve(path: str) -> Any:
    module_name, _, attributes = path.partition(":")
    found: Any = importlib.import_module(module_name)
    for attribute in filter(None, attributes.split(".")):
        found = getattr(found, attribute)
    return found


def missing() -> dict[str, str]:
    """Every listed internal the installed releases lack, with what fleet uses it for."""
    lacking = {}
    for path, why in INTERNALS.items():
        try:
            internal(path)
        except InternalMoved:
            lacking[path] = why
    return lacking


def main() -> int:
    lacking = missing()
    for path, why in lacking.items():
        print(f"missing: {path} ({why})")
    print(f"{len(INTERNALS) - len(lacking)} of {len(INTERNALS)} internals found in {release()}")
    return 1 if lacking else 0


if __name__ == "__main__":
    sys.exit(main())
