#!/usr/bin/python
"""Writes a marker file whose text comes from the collection's module_utils."""
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.compat.dirc.plugins.module_utils.render import marker_text


def main():
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True},
                                          "name": {"type": "str", "required": True}}, supports_check_mode=True)
    path = module.params["path"]
    wanted = marker_text(module.params["name"])
    before = open(path).read() if os.path.exists(path) else ""
    changed = before != wanted
    if changed and not module.check_mode:
        with open(path, "w") as out:
            out.write(wanted)
    module.exit_json(changed=changed, diff={"before": before, "after": wanted})


if __name__ == "__main__":
    main()
