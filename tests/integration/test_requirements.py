"""A source's requirements.yml, offline: a collection built in the test (a local tarball) and a role from a
local git repository are installed into the revision's export by ansible-galaxy, and a real `fleet check`
runs the collection's module and the role on a lab host; a collection only Galaxy could give rejects the
revision, naming it, and the last good one stays desired."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import FleetCli, git, make_source

SUBNET = 35  # this area's lab subnet (issue 12's dynamic inventories and collections)
GALAXY = str(Path(__import__("sys").executable).parent / "ansible-galaxy")

MODULE = '''#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={"name": {"type": "str", "default": "fleet"}}, supports_check_mode=True)
    module.exit_json(changed=False, greeting="hello " + module.params["name"])


if __name__ == "__main__":
    main()
'''

PLAYBOOK = """- name: Uses a collection and a role the source requires
  hosts: all
  gather_facts: false
  roles:
    - greeter
  tasks:
    - name: Greet through the local collection
      fleettest.local.greet:
        name: lab
"""

ROLE_TASKS = "- name: Say hello from the git role\n  ansible.builtin.debug:\n    msg: hello\n"
ROLE_META = ("galaxy_info:\n  author: fleet\n  description: test role\n  license: MIT\n"
             "  min_ansible_version: '2.15'\n  platforms: []\ndependencies: []\n")


def build_collection(workdir: Path, output: Path) -> str:
    """`ansible-galaxy collection build` of a collection with one module; the tarball's file name."""
    subprocess.run([GALAXY, "collection", "init", "fleettest.local", "--init-path", str(workdir)], check=True,
                   capture_output=True)
    modules = workdir / "fleettest" / "local" / "plugins" / "modules"
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "greet.py").write_text(MODULE)
    subprocess.run([GALAXY, "collection", "build", "--output-path", str(output)],
                   cwd=workdir / "fleettest" / "local", check=True, capture_output=True)
    return "fleettest-local-1.0.0.tar.gz"


def make_role_repo(path: Path) -> Path:
    (path / "tasks").mkdir(parents=True)
    (path / "meta").mkdir()
    (path / "tasks" / "main.yml").write_text(ROLE_TASKS)
    (path / "meta" / "main.yml").write_text(ROLE_META)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "a role")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One lab host and a source whose playbook needs a local collection and a role from a local git repo."""
    root = tmp_path_factory.mktemp("requirements")
    cli = FleetCli(root / "data", root / "source", root)
    up = cli("lab", "up", "--hosts", "1", "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        repo = make_source(root / "source", (root / "data" / "lab" / "hosts.yml").read_text())
        tarball = build_collection(root / "collection", repo)
        role = make_role_repo(root / "role-repo")
        (repo / "requirements.yml").write_text(
            f"collections:\n  - name: ./{tarball}\n    type: file\n"
            f"roles:\n  - name: greeter\n    src: git+file://{role}\n")
        (repo / "playbooks" / "site.yml").write_text(PLAYBOOK)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "requires a local collection and a git role")
        yield cli, repo
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def revisions(cli: FleetCli) -> dict[str, dict]:
    listed = cli("revisions", "--json")
    assert listed.code == 0, listed.stderr
    return {r["sha"]: r for r in listed.json()["revisions"]}


def test_a_local_collection_and_git_role_are_installed_per_revision_and_run(lab):
    cli, repo = lab
    checked = cli("check", "--json")
    assert checked.code == 0, checked.stdout + checked.stderr
    [host] = checked.json()["hosts"]
    assert host["status"] == "in_sync", host
    head = git(repo, "rev-parse", "HEAD").strip()
    export = cli.data_dir / "revisions" / head
    assert (export / ".fleet-collections" / "ansible_collections" / "fleettest" / "local").is_dir()
    assert (export / ".fleet-roles" / "greeter" / "tasks" / "main.yml").is_file()
    # Ansible's own output: both tasks ran on the host (the module from the collection, the role from git).
    shown = cli("show", str(checked.json()["run"]["id"]), "--stdout")
    assert shown.code == 0, shown.stderr
    for task in ("greeter : Say hello from the git role", "Greet through the local collection"):
        assert f"TASK [{task}]" in shown.stdout, shown.stdout[-3000:]
    assert "failed=0" in shown.stdout and "unreachable=0" in shown.stdout


def test_a_collection_only_galaxy_could_give_rejects_the_revision_and_the_last_good_stays(lab):
    cli, repo = lab
    good = git(repo, "rev-parse", "HEAD").strip()
    # Fetched and validated (if the test above has not), and no host matched: nothing runs, it stays desired.
    fetched = cli("check", "--limit", "no-such-host")
    assert "no inventory host matches" in fetched.stderr and revisions(cli)[good]["desired"], fetched.stderr
    text = (repo / "requirements.yml").read_text()
    (repo / "requirements.yml").write_text(text.replace("roles:", "  - name: community.nonexistent\nroles:"))
    git(repo, "commit", "-qam", "requires a collection from Galaxy")
    bad = git(repo, "rev-parse", "HEAD").strip()
    refused = cli("check")
    assert refused.code == 1
    print(refused.stderr)  # the message an operator reads, kept in the test log
    assert "community.nonexistent" in refused.stderr and f"stays {good[:12]}" in refused.stderr, refused.stderr
    listed = revisions(cli)
    assert listed[bad]["status"] == "rejected" and "community.nonexistent" in listed[bad]["error"]
    assert listed[good]["desired"] and not listed[bad]["desired"]
    assert not (cli.data_dir / "revisions" / bad / ".fleet-collections").exists()  # nothing half installed
