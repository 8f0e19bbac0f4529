"""The pure parts of source.py: path safety, inventory listings, Ansible's error text."""

import os

import pytest

from fleet.source import InventoryHost, clean_ansible_error, hosts_from_listing, unsafe_path_problem


@pytest.fixture
def tree(tmp_path):
    """An exported revision next to a directory it must not reach."""
    root = tmp_path / "tree"
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "site.yml").write_text("- hosts: all\n")
    (root / "inventory").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "site.yml").write_text("- hosts: all\n")
    os.symlink(outside / "site.yml", root / "playbooks" / "escape.yml")
    os.symlink(outside, root / "escape-dir")
    os.symlink("site.yml", root / "playbooks" / "alias.yml")
    os.symlink("../inventory", root / "playbooks" / "inv")
    return root


PATH_CASES = {
    "fine path": ("playbooks/site.yml", ""),
    "fine directory with trailing slash": ("inventory/", ""),
    "the tree itself": (".", ""),
    "symlink inside the tree": ("playbooks/alias.yml", ""),
    "symlink to a directory inside the tree": ("playbooks/inv", ""),
    "absolute": ("/etc/passwd", "is absolute"),
    "climbs with dot-dot": ("playbooks/../../outside/site.yml", "climbs out of the repository with '..'"),
    "missing": ("playbooks/nope.yml", "does not exist in this revision"),
    "symlink out of the tree": ("playbooks/escape.yml", "symlink that points outside"),
    "path through a symlinked directory out of the tree": ("escape-dir/site.yml", "symlink that points outside"),
}


@pytest.mark.parametrize(("relative", "problem"), PATH_CASES.values(), ids=PATH_CASES.keys())
def test_unsafe_path_problem(tree, relative, problem):
    found = unsafe_path_problem(tree, relative)
    if problem:
        assert problem in found
    else:
        assert found == ""


def test_dangling_symlink_out_of_the_tree_is_refused(tree, tmp_path):
    os.symlink(tmp_path / "gone.yml", tree / "playbooks" / "dangling.yml")
    assert "outside" in unsafe_path_problem(tree, "playbooks/dangling.yml")


LISTING = {
    "_meta": {"hostvars": {
        "web1": {"ansible_host": "10.0.0.1", "ansible_port": 2222, "motd": "hi"},
        "db1": {"ansible_host": "10.0.1.1", "ansible_port": "2200"},
        "lonely": {"ansible_host": "lonely.example.com"},
    }},
    "all": {"children": ["ungrouped", "prod"]},
    "prod": {"children": ["web", "db"]},
    "web": {"hosts": ["web1", "web2"]},
    "db": {"hosts": ["db1"]},
    "ungrouped": {"hosts": ["lonely"]},
}


def test_hosts_from_listing():
    assert hosts_from_listing(LISTING) == [
        InventoryHost("db1", "10.0.1.1", 2200, ("db", "prod")),
        InventoryHost("lonely", "lonely.example.com", 22, ()),
        InventoryHost("web1", "10.0.0.1", 2222, ("prod", "web")),
        InventoryHost("web2", "web2", 22, ("prod", "web")),
    ]


def test_host_only_in_hostvars_is_listed():
    listing = {"_meta": {"hostvars": {"solo": {"ansible_host": "10.9.9.9"}}}, "all": {"children": []}}
    assert hosts_from_listing(listing) == [InventoryHost("solo", "10.9.9.9", 22, ())]


def test_empty_listing_has_no_hosts():
    assert hosts_from_listing({"_meta": {"hostvars": {}}, "all": {"children": ["ungrouped"]}}) == []


def test_cyclic_children_do_not_loop_forever():
    listing = {"a": {"children": ["b"], "hosts": ["h1"]}, "b": {"children": ["a"], "hosts": ["h2"]}}
    assert [(h.name, h.groups) for h in hosts_from_listing(listing)] == [("h1", ("a", "b")), ("h2", ("a", "b"))]


def test_clean_ansible_error_makes_paths_relative_and_origins_readable(tmp_path):
    tree = tmp_path / "revisions" / "abc123"
    text = (
        f"[ERROR]: YAML syntax in {tree}/playbooks/site.yml\n"
        "\n"
        f"Origin: {tree}/inventory/hosts.yml:3:1   \n"
        "[WARNING]: interpreter_discovery found python\n"
        f"while reading {tree}\n"
    )
    assert clean_ansible_error(text, tree) == (
        "[ERROR]: YAML syntax in playbooks/site.yml\n"
        "in inventory/hosts.yml, line 3, column 1\n"
        "while reading ."
    )


def test_clean_ansible_error_keeps_at_most_25_lines(tmp_path):
    text = "\n".join(f"line {i}" for i in range(40))
    lines = clean_ansible_error(text, tmp_path).splitlines()
    assert lines == [f"line {i}" for i in range(25)]


def test_clean_ansible_error_of_nothing(tmp_path):
    assert clean_ansible_error("\n  \n", tmp_path) == "Ansible gave no message"


def test_dangling_symlink_inside_the_tree_does_not_exist(tree):
    # The target is inside the tree but missing, so nothing can be read through the link.
    os.symlink("missing.yml", tree / "playbooks" / "broken.yml")
    assert unsafe_path_problem(tree, "playbooks/broken.yml") == "does not exist in this revision"
