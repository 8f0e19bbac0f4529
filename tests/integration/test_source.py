"""Validation of real git sources, through the `fleet` command (no hosts needed)."""

from __future__ import annotations

import os

from tests.conftest import FleetCli, git


def fleet_for(tmp_path, repo, *extra_env) -> FleetCli:
    return FleetCli(tmp_path / "data", repo, tmp_path)


def revisions(cli) -> dict:
    result = cli("revisions", "--json")
    assert result.code == 0, result.stderr
    return result.json()


def test_playbook_syntax_error_is_rejected_with_file_and_line(tmp_path, tmp_source):
    site = tmp_source / "playbooks" / "site.yml"
    site.write_text(site.read_text() + "\n- hosts: all\n  tasks:\n    - ansible.builtin.copy: {dest: /x\n")
    git(tmp_source, "commit", "-qam", "typo")
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("check")
    assert result.code == 1
    assert "syntax" in result.stderr and "site.yml" in result.stderr and "line" in result.stderr
    assert "no earlier revision validated" in result.stderr
    listing = revisions(cli)
    assert listing["revisions"][0]["status"] == "rejected"
    assert listing["source"]["desired"] is None


def test_playbook_path_outside_the_repository_is_rejected(tmp_path, tmp_source):
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("--playbook", "../../etc/passwd", "check")
    assert result.code == 1 and "climbs out of the repository" in result.stderr


def test_symlink_out_of_the_repository_is_rejected(tmp_path, tmp_source):
    os.symlink("/etc", tmp_source / "playbooks" / "escape")
    git(tmp_source, "add", "-A")
    git(tmp_source, "commit", "-qm", "a link out")
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("--playbook", "playbooks/escape/passwd", "check")
    assert result.code == 1
    assert "outside" in result.stderr


def test_missing_repository_is_a_clear_error(tmp_path):
    cli = FleetCli(tmp_path / "data", tmp_path / "nowhere", tmp_path)
    result = cli("check")
    assert result.code == 1
    assert "cannot fetch the git source" in result.stderr and "FLEET_REPO" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_branch_is_a_clear_error(tmp_path, tmp_source):
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("--branch", "no-such-branch", "check")
    assert result.code == 1 and "FLEET_BRANCH" in result.stderr


def test_each_revision_is_exported_once_into_its_own_directory(tmp_path, tmp_source):
    cli = fleet_for(tmp_path, tmp_source)
    cli("check")  # the hosts are unreachable; the export happens first
    first_sha = git(tmp_source, "rev-parse", "HEAD").strip()
    (tmp_source / "playbooks" / "site.yml").write_text(
        (tmp_source / "playbooks" / "site.yml").read_text() + "\n# a comment\n")
    git(tmp_source, "commit", "-qam", "second")
    cli("check")
    second_sha = git(tmp_source, "rev-parse", "HEAD").strip()
    exported = {p.name for p in (tmp_path / "data" / "revisions").iterdir()}
    assert {first_sha, second_sha} <= exported
    first_site = tmp_path / "data" / "revisions" / first_sha / "playbooks" / "site.yml"
    assert "# a comment" not in first_site.read_text()
