"""Each host's become password as its inventory gives it: for the reaper of a stopped run (fleet.remote_stop).

A login that needs a password for sudo cannot reach the root processes a stopped run left on a host
without it. Ansible knows that password (inventory vars, vault decrypted, templates evaluated); this
module asks Ansible's own variable manager for it, in a process of its own (`python -m
fleet.become_lookup`), so the controller neither imports Ansible nor keeps the secret anywhere: the
request comes on stdin, the passwords leave on stdout, to the caller's pipe, never to a log or the store.

Only the inventory's variables count (group_vars and host_vars beside the inventory or the playbook,
the inventory itself): a password set by a play's `vars:` or on a task is not known without the play.
"""

from __future__ import annotations

import json
import os
import sys

# Ansible's names for the become password, in the order its sudo plugin reads them.
PASSWORD_VARS = ("ansible_become_password", "ansible_become_pass", "ansible_sudo_password", "ansible_sudo_pass")


def lookup(inventory: str, playbook_dir: str, names: list[str], vault_password_file: str | None) -> dict[str, str]:
    """name -> become password, for the hosts among `names` whose inventory sets one."""
    from fleet.ansible_compat import internal

    templar = internal("ansible.template:Templar")
    loader = internal("ansible.parsing.dataloader:DataLoader")()
    loader.set_basedir(playbook_dir)  # group_vars beside the playbook count, as in a run
    if vault_password_file:
        setup_vault_secrets = internal("ansible.cli:CLI.setup_vault_secrets")
        loader.set_vault_secrets(
            setup_vault_secrets(loader, vault_ids=[], auto_prompt=False, vault_password_files=[vault_password_file])
        )
    inventory_manager = internal("ansible.inventory.manager:InventoryManager")(loader=loader, sources=[inventory])
    variables = internal("ansible.vars.manager:VariableManager")(loader=loader, inventory=inventory_manager)
    found = {}
    for name in names:
        host = inventory_manager.get_host(name)
        if host is None:
            continue
        hostvars = variables.get_vars(host=host, include_hostvars=False)
        var = next((v for v in PASSWORD_VARS if v in hostvars), None)
        if var is None:
            continue
        try:  # one host's password that cannot be read (a vault without its password) costs only that host
            found[name] = str(templar(loader=loader, variables=hostvars).template(hostvars[var]))
        except Exception as error:  # noqa: BLE001  Ansible's errors have no common base worth naming here
            print(f"fleet: {name}: {var} cannot be read: {type(error).__name__}", file=sys.stderr)
    return {name: value for name, value in found.items() if value}


def main() -> int:
    request = json.load(sys.stdin)
    try:
        found = lookup(
            request["inventory"], request["playbook_dir"], request["names"], request.get("vault_password_file")
        )
    except Exception as error:  # noqa: BLE001  whatever Ansible raises, the caller goes on without passwords
        print(f"fleet: no become passwords: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    json.dump(found, sys.stdout)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ANSIBLE_DEPRECATION_WARNINGS", "False")
    sys.exit(main())
