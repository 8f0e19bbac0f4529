"""The pure parts of source.py: path safety, URL safety, the signature verdict, and the settings they read."""

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fleet.errors import ConfigError, UnsafeSourceURL
from fleet.settings import Settings, load_settings
from fleet.source import (
    SIGNATURE_STATUS, CommitInfo, check_source_url, display_url, signature_problem, unsafe_path_problem,
    unsafe_url_problem,
)


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


# --- the source URL, checked before git sees it -------------------------------------------

URL_CASES = {
    "https": ("https://git.example.com/ops/fleet.git", ""),
    "http": ("http://127.0.0.1:8000/fleet.git", ""),
    "ssh URL": ("ssh://git@git.example.com:2222/ops/fleet.git", ""),
    "scp-like ssh": ("git@git.example.com:ops/fleet.git", ""),
    "git protocol": ("git://127.0.0.1/fleet.git", ""),
    "file URL": ("file:///srv/git/fleet.git", ""),
    "local path": ("/srv/git/fleet", ""),
    "local path with a double colon inside": ("/srv/git/a::b", ""),
    "ext helper runs a command": ("ext::sh -c touch% /tmp/pwned", "unsafe transport ext::, which can run commands"),
    "fd helper": ("fd::7", "unsafe transport fd::"),
    "any remote helper": ("foo::https://example.com/x", "unsafe transport foo::"),
    "ext as a URL scheme": ("ext://sh -c id", "unsafe transport ext://"),
    "unknown scheme goes to a helper program": ("gopher://example.com/x", "unsafe transport gopher://"),
    "option injection": ("--upload-pack=touch /tmp/pwned", "would read as an option"),
    "ssh host that is an option": ("ssh://-oProxyCommand=id/x", "host starting with '-'"),
    "scp-like host that is an option": ("-oProxyCommand=id:x", "would read as an option"),
    "newline smuggled in": ("https://example.com/x\nHEAD", "control characters"),
}


@pytest.mark.parametrize(("url", "problem"), URL_CASES.values(), ids=URL_CASES.keys())
def test_unsafe_url_problem(url, problem):
    found = unsafe_url_problem(url)
    if problem:
        assert problem in found
    else:
        assert found == ""


def test_an_unsafe_url_is_one_clear_source_error_saying_what_to_use():
    with pytest.raises(UnsafeSourceURL) as caught:
        check_source_url("ext::sh -c touch% /tmp/pwned")
    assert str(caught.value) == ("the source URL uses the unsafe transport ext::, which can run commands; "
                                 "use https, ssh, git or a local path in FLEET_REPO")


def test_a_password_in_the_url_is_never_shown():
    assert display_url("https://tess:s3cret@git.example.com/x.git") == "https://tess:***@git.example.com/x.git"
    assert display_url("https://git.example.com/x.git") == "https://git.example.com/x.git"


def test_settings_keep_a_helper_url_as_written_so_it_is_refused_by_name(tmp_path):
    settings = load_settings(flags={"repo": "ext::sh -c id"}, environ={}, cwd=tmp_path)
    assert settings.repo == "ext::sh -c id"
    assert "ext::" in unsafe_url_problem(settings.repo)


# --- signatures ---------------------------------------------------------------------------

def test_a_good_signature_by_an_untrusted_key_is_not_good():
    assert SIGNATURE_STATUS["U"] == "untrusted"
    assert [code for code, state in SIGNATURE_STATUS.items() if state == "good"] == ["G"]


def _commit(signature: str) -> CommitInfo:
    return CommitInfo(sha="a" * 40, author="Tess <tess@example.com>", authored_at=datetime.now(timezone.utc),
                      message="m", signature=signature, ref="main")


def _settings(required: bool) -> Settings:
    return Settings(repo="/srv/git/fleet", data_dir=Path("/var/lib/fleet"), require_signed_commits=required)


SIGNATURE_CASES = {
    "not required, unsigned": (False, "unsigned", ""),
    "not required, untrusted": (False, "untrusted", ""),
    "required, good": (True, "good", ""),
    "required, unsigned": (True, "unsigned", "signature unsigned: the commit is not signed"),
    "required, untrusted key": (True, "untrusted", "signature untrusted: the commit is signed by a key fleet does"),
    "required, bad": (True, "bad", "signature bad: the commit's signature does not match its content"),
    "required, expired": (True, "expired", "signature expired"),
    "required, revoked": (True, "revoked", "signature revoked"),
    "required, key unknown": (True, "unverifiable", "signature unverifiable"),
}


@pytest.mark.parametrize(("required", "signature", "problem"), SIGNATURE_CASES.values(), ids=SIGNATURE_CASES.keys())
def test_signature_problem(required, signature, problem):
    found = signature_problem(_settings(required), _commit(signature))
    if problem:
        assert found.startswith(problem)
        assert "/var/lib/fleet/trust/allowed_signers" in found and "/var/lib/fleet/trust/gnupg" in found
    else:
        assert found == ""


@pytest.mark.parametrize(("word", "value"), [("1", True), ("true", True), ("yes", True), ("on", True),
                                             ("0", False), ("false", False), ("no", False), ("off", False)])
def test_require_signed_commits_from_the_environment(tmp_path, word, value):
    settings = load_settings(environ={"FLEET_REPO": "/srv/x", "FLEET_REQUIRE_SIGNED_COMMITS": word}, cwd=tmp_path)
    assert settings.require_signed_commits is value


def test_require_signed_commits_and_git_timeout_from_fleet_toml(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text('repo = "/srv/x"\nrequire_signed_commits = true\ngit_timeout = 5\n')
    settings = load_settings(environ={}, config_path=path, cwd=tmp_path)
    assert settings.require_signed_commits is True and settings.git_timeout == 5


def test_defaults_are_off_and_a_minute(tmp_path):
    settings = load_settings(environ={"FLEET_REPO": "/srv/x"}, cwd=tmp_path)
    assert settings.require_signed_commits is False and settings.git_timeout == 60


@pytest.mark.parametrize(("name", "value"), [("FLEET_REQUIRE_SIGNED_COMMITS", "maybe"), ("FLEET_GIT_TIMEOUT", "0")])
def test_a_wrong_value_is_refused_not_guessed(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={"FLEET_REPO": "/srv/x", name: value}, cwd=tmp_path)
