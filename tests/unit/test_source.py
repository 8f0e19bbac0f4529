"""The pure parts of source.py: path safety."""

import os

import pytest

from fleet.source import unsafe_path_problem


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


def test_dangling_symlink_inside_the_tree_does_not_exist(tree):
    # The target is inside the tree but missing, so nothing can be read through the link.
    os.symlink("missing.yml", tree / "playbooks" / "broken.yml")
    assert unsafe_path_problem(tree, "playbooks/broken.yml") == "does not exist in this revision"
