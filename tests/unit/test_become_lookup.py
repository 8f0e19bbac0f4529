"""fleet.become_lookup and runner.become_passwords: a host's become password as Ansible reads its inventory
(vaulted in host_vars, templated from group vars, or none), through the subprocess a stop uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fleet.runner import JobSpec, become_passwords

INVENTORY = """\
all:
  vars:
    shared_secret: from-a-template
  hosts:
    db1: {ansible_host: 127.0.0.9, ansible_user: deploy}
    web1: {ansible_become_pass: "{{ shared_secret }}"}
    web2: {}
"""


def source(tmp_path: Path) -> JobSpec:
    vault = tmp_path / "vault-password"
    vault.write_text("lookup-vault\n")
    vault.chmod(0o600)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "inventory" / "host_vars").mkdir(parents=True)
    (tmp_path / "inventory" / "hosts.yml").write_text(INVENTORY)
    vaulted = subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
                              "--vault-password-file", str(vault), "--name", "ansible_become_password", "Vaulted-7"],
                             capture_output=True, text=True, check=True).stdout
    (tmp_path / "inventory" / "host_vars" / "db1.yml").write_text(vaulted)
    return JobSpec(kind="converge", project_dir=tmp_path, playbook="playbooks/site.yml",
                   inventory=tmp_path / "inventory" / "hosts.yml", private_data_dir=tmp_path / "run",
                   known_hosts=tmp_path / "known_hosts", control_path_dir=tmp_path / "cp",
                   vault_password_file=str(vault))


def test_vaulted_templated_and_absent_passwords(tmp_path):
    spec = source(tmp_path)
    assert become_passwords(spec, ["db1", "web1", "web2", "not-in-inventory"]) == {
        "db1": "Vaulted-7", "web1": "from-a-template"}


def test_a_password_that_cannot_be_read_costs_only_its_host(tmp_path):
    spec = source(tmp_path)
    blind = JobSpec(**{**spec.__dict__, "vault_password_file": None})
    assert become_passwords(blind, ["db1", "web1"]) == {"web1": "from-a-template"}, (
        "db1's is vaulted and the vault's password is not given: the stop goes on without it for db1")
