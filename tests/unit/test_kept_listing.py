"""revisions: a static inventory's listing is kept in the export for later processes; validation's two Ansible runs
at once. Ansible's own ansible-inventory and ansible-playbook run here (no hosts needed)."""

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from fleet import revisions
from fleet.runner import AnsibleRunner, InventoryHost
from fleet.settings import Settings

INVENTORY = """all:
  vars:
    ansible_user: root
  children:
    web:
      hosts:
        web1: {ansible_host: 127.0.0.1, ansible_port: 2201}
        web2: {ansible_host: 127.0.0.2, ansible_ssh_common_args: "-o ProxyJump=root@127.0.0.9"}
"""


@dataclasses.dataclass(frozen=True, eq=False)
class CountingRunner(AnsibleRunner):
    """The real runner, counting the inventory listings it asks Ansible for."""

    listed: list = dataclasses.field(default_factory=list)

    def list_inventory(self, tree: Path, inventory: str, limit: str | None = None) -> list[InventoryHost]:
        self.listed.append(limit)
        return super().list_inventory(tree, inventory, limit)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "export"
    (root / "inventory").mkdir(parents=True)
    (root / "inventory" / "hosts.yml").write_text(INVENTORY)
    (root / "playbooks").mkdir()
    (root / "playbooks" / "site.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks: []\n")
    return root


@pytest.fixture
def settings(tmp_path):
    return Settings(repo="r", data_dir=tmp_path / "data")


class CountedKeptListings(revisions.KeptListings):
    """The runner fleet builds (revisions.default_runner): the real one, its listings kept; counted."""

    @property
    def listed(self) -> list:
        return self.runner.listed


def kept(counting: CountingRunner, settings: Settings) -> CountedKeptListings:
    return CountedKeptListings(counting, settings.data_dir / revisions.KEPT_DIR, counting.vault_password_file)


@pytest.fixture
def runner(tmp_path, settings):
    return kept(CountingRunner(tmp_path / "known_hosts", tmp_path / "cp"), settings)


def a_new_process():
    """What a new `fleet check` process starts with: nothing listed in memory."""
    revisions._listing.cache_clear()


def test_a_static_listing_is_asked_of_ansible_once_and_read_back_the_same_by_later_processes(tree, runner, settings):
    first = revisions.inventory_hosts(tree, settings, runner)
    a_new_process()
    again = revisions.inventory_hosts(tree, settings, runner)
    assert runner.listed == [None]
    assert again == first
    assert [(h.name, h.address, h.port, h.groups, h.user) for h in again] == [
        ("web1", "127.0.0.1", 2201, ("web",), "root"), ("web2", "127.0.0.2", 22, ("web",), "root")]
    assert again[1].ssh_args == ("", "-o ProxyJump=root@127.0.0.9", "")


def test_each_limit_is_kept_apart(tree, runner, settings):
    assert [h.name for h in revisions.inventory_hosts(tree, settings, runner, limit="web2")] == ["web2"]
    a_new_process()
    assert [h.name for h in revisions.inventory_hosts(tree, settings, runner)] == ["web1", "web2"]
    assert [h.name for h in revisions.inventory_hosts(tree, settings, runner, limit="web2")] == ["web2"]
    assert runner.listed == ["web2", None]


def test_an_ansible_setting_or_a_vault_password_changed_lists_again(tree, runner, monkeypatch, tmp_path, settings):
    revisions.inventory_hosts(tree, settings, runner)
    a_new_process()
    monkeypatch.setenv("ANSIBLE_INVENTORY_ENABLED", "yaml,ini")
    revisions.inventory_hosts(tree, settings, runner)
    assert runner.listed == [None, None]
    vault = tmp_path / "vault-password"
    vault.write_text("one\n")
    vault.chmod(0o600)
    with_vault = kept(CountingRunner(tmp_path / "known_hosts", tmp_path / "cp", vault_password_file=str(vault),
                                     listed=runner.listed), settings)
    a_new_process()
    revisions.inventory_hosts(tree, settings, with_vault)
    vault.write_text("two\n")
    a_new_process()
    revisions.inventory_hosts(tree, settings, with_vault)
    assert runner.listed == [None] * 4


def test_a_dynamic_inventory_is_never_kept(tree, runner, settings):
    script = tree / "inventory" / "script.sh"
    script.write_text('#!/bin/sh\necho \'{"_meta": {"hostvars": {}}, "all": {"hosts": ["dyn1"]}}\'\n')
    script.chmod(0o755)
    names = [h.name for h in revisions.inventory_hosts(tree, settings, runner)]
    a_new_process()
    revisions.reread_dynamic_inventories()
    revisions.inventory_hosts(tree, settings, runner)
    assert "dyn1" in names and runner.listed == [None, None]
    assert not (tree / revisions.KEPT_DIR).exists() and not (settings.data_dir / revisions.KEPT_DIR).exists()


def test_an_unreadable_kept_listing_is_listed_again(tree, runner, settings):
    first = revisions.inventory_hosts(tree, settings, runner)
    (kept,) = (settings.data_dir / revisions.KEPT_DIR).iterdir()
    kept.write_text("{not json")
    a_new_process()
    assert revisions.inventory_hosts(tree, settings, runner) == first
    assert runner.listed == [None, None]


@dataclasses.dataclass(frozen=True, eq=False)
class SlowRunner(AnsibleRunner):
    """Listing and syntax check each take a while; records when each ran."""

    spans: dict = dataclasses.field(default_factory=dict)

    def list_inventory(self, tree, inventory, limit=None):
        return self._timed("list", lambda: [InventoryHost("h1", "127.0.0.1", 22, ())])

    def syntax_problem(self, tree, playbook, inventory):
        return self._timed("syntax", lambda: "")

    def _timed(self, name, fn):
        started = time.monotonic()
        time.sleep(0.5)
        self.spans[name] = (started, time.monotonic(), threading.get_ident())
        return fn()


def test_validation_lists_the_inventory_and_checks_the_syntax_at_once(tree, tmp_path, settings):
    slow = SlowRunner(tmp_path / "known_hosts", tmp_path / "cp")
    validation = revisions.validate_revision(tree, settings, slow)
    assert validation.ok and [h.name for h in validation.hosts] == ["h1"]
    (list_start, list_end, _), (syntax_start, syntax_end, _) = slow.spans["list"], slow.spans["syntax"]
    assert list_start < syntax_end and syntax_start < list_end, "the two ran one after the other"


def test_a_real_syntax_error_is_still_reported(tree, runner, settings):
    (tree / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks:\n    - nosuchmodule_xyz: {}\n")
    assert "syntax check failed" in revisions.validate_revision(tree, settings, runner).error


def test_a_real_inventory_error_is_reported_before_the_syntax_check_and_not_kept(tree, runner, settings):
    (tree / "inventory" / "hosts.yml").write_text("all: [unbalanced\n")
    (tree / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks:\n    - nosuchmodule_xyz: {}\n")
    assert revisions.validate_revision(tree, settings, runner).error.startswith("inventory does not parse")
    assert not (tree / revisions.KEPT_DIR).exists() and not (settings.data_dir / revisions.KEPT_DIR).exists()


def another_export(tree: Path, name: str) -> Path:
    """The export of a later commit: the same files (until the test changes some)."""
    other = tree.parent / name
    shutil.copytree(tree, other, ignore=shutil.ignore_patterns(revisions.KEPT_DIR))
    return other


def test_a_later_export_with_the_same_inventory_files_reuses_the_listing(tree, runner, settings):
    first = revisions.inventory_hosts(tree, settings, runner)
    (tree / "playbooks" / "site.yml").write_text("- hosts: web\n  tasks: []\n")  # the commit changed a playbook
    later = another_export(tree, "later")
    a_new_process()
    assert revisions.inventory_hosts(later, settings, runner) == first
    assert runner.listed == [None]


def test_a_later_export_whose_group_vars_changed_lists_again(tree, runner, settings):
    revisions.inventory_hosts(tree, settings, runner)
    later = another_export(tree, "later")
    (later / "inventory" / "group_vars").mkdir()
    (later / "inventory" / "group_vars" / "web.yml").write_text("ansible_port: 2222\n")
    a_new_process()
    assert {h.name: h.port for h in revisions.inventory_hosts(later, settings, runner)} == {"web1": 2201, "web2": 2222}
    assert runner.listed == [None, None]


def test_an_export_with_its_own_ansible_cfg_keeps_its_listing_to_itself(tree, runner, settings):
    (tree / "ansible.cfg").write_text("[defaults]\nforks = 3\n")
    first = revisions.inventory_hosts(tree, settings, runner)
    a_new_process()
    assert revisions.inventory_hosts(tree, settings, runner) == first  # kept in the export
    later = another_export(tree, "later")
    a_new_process()
    revisions.inventory_hosts(later, settings, runner)
    assert runner.listed == [None, None]
    assert not (settings.data_dir / revisions.KEPT_DIR).exists()


def test_fleet_builds_the_real_runner_wrapped_in_kept_listings_and_it_passes_the_rest_on(tree, settings, tmp_path):
    built = revisions.default_runner(settings)
    assert isinstance(built, revisions.KeptListings) and isinstance(built.runner, AnsibleRunner)
    assert built.kept_in == settings.data_dir / revisions.KEPT_DIR
    assert built.syntax_problem(tree, "playbooks/site.yml", "inventory") == ""  # the real Ansible's answer
    (tree / "playbooks" / "site.yml").write_text("- hosts: all\n  tasks:\n    - nosuchmodule: {}\n")
    assert "syntax check failed" in built.syntax_problem(tree, "playbooks/site.yml", "inventory")
