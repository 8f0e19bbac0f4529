"""fleet.revisions: a revision is exported with its requirements, validated once (paths, inventory, syntax,
fleet.yml), and an inventory is told static or dynamic (dynamic ones are listed again by every run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet import revisions
from fleet.errors import RevisionRejected
from fleet.fake_runner import FakeRunner, hosts_of, load_events
from fleet.revisions import sync_source, validate_revision
from fleet.runner import InventoryHost
from fleet.settings import Settings
from fleet.store.db import open_store
from tests.conftest import settings_for_source

RECORDED = load_events(Path(__file__).parent / "fixtures" / "truth_check.json")
CASE_HOSTS = hosts_of(RECORDED, groups=("cases",))
FLEET_YML = "accept_unverified:\n  - Flush the app cache\n"
WEB = [InventoryHost("web1", "127.0.99.1", 22, ("web",)), InventoryHost("web2", "127.0.99.2", 22, ("web",))]


@pytest.fixture
def settings(tmp_path):
    return settings_for_source(tmp_path, FLEET_YML)


@pytest.fixture
def store(settings):
    with open_store(settings):
        yield


VALIDATION_CASES = {
    "a good revision": ({}, FakeRunner(hosts=CASE_HOSTS), ""),
    "playbook out of the repository": ({"playbook": "../site.yml"}, FakeRunner(), "playbook path '../site.yml' climbs"),
    "missing inventory": ({"inventory": "hosts/"}, FakeRunner(), "inventory path 'hosts/' does not exist"),
    "inventory Ansible cannot parse": ({}, FakeRunner(inventory_error="line 3"), "inventory does not parse: line 3"),
    "syntax error": ({}, FakeRunner(syntax_error="line 7"), "playbook syntax check failed: line 7"),
    "fleet.yml that is not a policy": ({"fleet_yml": "schedule: [not, cron\n"}, FakeRunner(), "fleet.yml"),
}


@pytest.mark.parametrize(("changes", "fake", "problem"), VALIDATION_CASES.values(), ids=VALIDATION_CASES.keys())
def test_validate_revision(tmp_path, changes, fake, problem):
    tree = tmp_path / "tree"
    (tree / "playbooks").mkdir(parents=True)
    (tree / "playbooks" / "site.yml").write_text("- hosts: all\n")
    (tree / "inventory").mkdir()
    (tree / "fleet.yml").write_text(changes.pop("fleet_yml", FLEET_YML))
    validation = validate_revision(tree, Settings(repo="r", **changes), runner=fake)
    assert validation.ok == (not problem)
    assert problem in validation.error if problem else validation.error == ""
    assert validation.hosts == (tuple(CASE_HOSTS) if validation.ok else ())


DYNAMIC_CASES = {
    "static YAML and INI": ({"hosts.yml": "all:\n  hosts: {a: {}}\n", "more.ini": "[web]\nb\n"}, False),
    "a YAML file naming a plugin": ({"aws_ec2.yml": "plugin: amazon.aws.aws_ec2\nregions: [x]\n"}, True),
    "an executable script": ({"hosts.py": "#!/bin/sh\necho {}\n", "+x": "hosts.py"}, True),
    "a script in a subdirectory": ({"cloud/list": "#!/bin/sh\n", "+x": "cloud/list"}, True),
    "executable variables are still variables": ({"group_vars/all.sh": "#!/bin/sh\n", "+x": "group_vars/all.sh"},
                                                 False),
    "YAML that does not parse is left to Ansible": ({"hosts.yml": "all: [unclosed\n"}, False),
    "a plugin key below the top level": ({"hosts.yml": "all:\n  vars: {plugin: x}\n"}, False),
}


@pytest.mark.parametrize(("files", "dynamic"), DYNAMIC_CASES.values(), ids=DYNAMIC_CASES.keys())
def test_is_dynamic_inventory(tmp_path, files, dynamic):
    files = dict(files)
    executable = files.pop("+x", None)
    for name, content in files.items():
        (tmp_path / "inv" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "inv" / name).write_text(content)
    if executable:
        (tmp_path / "inv" / executable).chmod(0o700)
    assert revisions.is_dynamic_inventory(tmp_path / "inv") is dynamic


def test_an_inventory_script_named_as_the_inventory_path_is_dynamic(tmp_path):
    script = tmp_path / "hosts.sh"
    script.write_text("#!/bin/sh\necho {}\n")
    script.chmod(0o700)
    assert revisions.is_dynamic_inventory(script) and not revisions.is_dynamic_inventory(tmp_path / "missing")


def test_requirements_are_installed_into_the_export_before_it_is_validated(settings, store):
    fake = FakeRunner(hosts=WEB)
    desired = sync_source(settings, runner=fake)
    assert set(fake.installs) == {desired.tree}  # the real runner installs once per export (a marker file)


def test_a_rejected_fleet_yml_names_each_mistake_then_what_stays_desired_on_lines_of_their_own(tmp_path):
    settings = settings_for_source(tmp_path, "schedule: every hour\nrollout:\n  batch: 0\n")
    with open_store(settings), pytest.raises(RevisionRejected) as raised:
        sync_source(settings, runner=FakeRunner())
    lines = str(raised.value).splitlines()
    assert lines[0].endswith("was rejected: fleet.yml has 2 mistakes:")
    assert [line.split(":")[0] for line in lines[1:3]] == ["fleet.yml line 1", "fleet.yml line 3"]
    assert lines[3] == "no earlier revision validated, so nothing runs until a fixed commit lands"
    assert len(lines) == 4
