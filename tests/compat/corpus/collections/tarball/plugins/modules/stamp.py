#!/usr/bin/python
"""Writes "stamp <version>" to a file: what the collection's version does to a host."""
import os

from ansible.module_utils.basic import AnsibleModule

VERSION = "@VERSION@"


def main():
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True}}, supports_check_mode=True)
    path = module.params["path"]
    wanted = "stamp %s\n" % VERSION
    before = open(path).read() if os.path.exists(path) else ""
    changed = before != wanted
    if changed and not module.check_mode:
        with open(path, "w") as out:
            out.write(wanted)
    module.exit_json(changed=changed, version=VERSION, diff={"before": before, "after": wanted,
                                                             "before_header": path, "after_header": path})


if __name__ == "__main__":
    main()
