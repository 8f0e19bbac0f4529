"""File modes: private data directory, private revision exports, and which vault password files are refused."""

from __future__ import annotations

import io
import logging
import os
import stat
import tarfile

import pytest

from fleet import filemodes
from fleet.errors import ConfigError, StoreError

ME = os.geteuid()
SOMEONE = ME + 1
FILE, DIR = stat.S_IFREG, stat.S_IFDIR

# case -> (st_mode, owner, what the refusal says, or "" when the file may be used)
VAULT_FILES = {
    "private file": (FILE | 0o600, ME, ""),
    "owner read-only file": (FILE | 0o400, ME, ""),
    "file readable by others": (FILE | 0o644, ME, "can be read or changed by other users (mode 0644)"),
    "file readable by the group": (FILE | 0o640, ME, "can be read or changed by other users (mode 0640)"),
    "file writable by the group only": (FILE | 0o620, ME, "can be read or changed by other users (mode 0620)"),
    "private file of someone else": (FILE | 0o600, SOMEONE, f"is owned by uid {SOMEONE}"),
    "executable script readable by all": (FILE | 0o755, ME, ""),
    "executable script of someone else": (FILE | 0o755, SOMEONE, ""),
    "executable script anyone can change": (FILE | 0o777, ME, "is an executable vault script anyone can change"),
    "group-executable script writable by others": (FILE | 0o612, ME,
                                                   "is an executable vault script anyone can change"),
    "directory": (DIR | 0o700, ME, "is not a regular file"),
}


@pytest.mark.parametrize("case", VAULT_FILES)
def test_vault_file_problem(case):
    mode, owner, expected = VAULT_FILES[case]
    problem = filemodes.vault_file_problem(mode, owner, ME)
    assert (problem == "") if not expected else problem.startswith(expected), problem


def test_a_vault_file_others_can_read_is_refused_with_the_file_and_the_fix(tmp_path):
    vault = tmp_path / "vault-pass"
    vault.write_text("secret\n")
    vault.chmod(0o644)
    with pytest.raises(ConfigError) as refused:
        filemodes.check_vault_password_file(str(vault))
    assert str(vault) in str(refused.value)
    assert f"chmod 600 {vault}" in str(refused.value)
    vault.chmod(0o600)
    filemodes.check_vault_password_file(str(vault))  # accepted: no error


def test_a_world_writable_vault_script_is_refused_with_chmod_o_w(tmp_path):
    script = tmp_path / "vault-client"
    script.write_text("#!/bin/sh\necho secret\n")
    script.chmod(0o757)
    with pytest.raises(ConfigError, match=f"chmod o-w {script}"):
        filemodes.check_vault_password_file(str(script))
    script.chmod(0o755)
    filemodes.check_vault_password_file(str(script))


def test_a_missing_vault_file_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="FLEET_VAULT_PASSWORD_FILE"):
        filemodes.check_vault_password_file(str(tmp_path / "nowhere"))


def test_a_new_private_dir_is_0700_whatever_the_umask(tmp_path, umask_022):
    target = tmp_path / "a" / "data"
    filemodes.ensure_private_dir(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_an_open_dir_and_its_named_entries_are_made_private_and_logged(tmp_path, caplog):
    data = tmp_path / "data"
    (data / "revisions" / "abc").mkdir(parents=True)
    (data / "fleet.db").write_text("")
    (data / "notes.txt").write_text("")  # not fleet's: left as it is
    for path, mode in [(data, 0o755), (data / "revisions", 0o755), (data / "fleet.db", 0o644),
                       (data / "notes.txt", 0o644)]:
        path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="fleet.filemodes"):
        filemodes.ensure_private_dir(data, ("fleet.db", "revisions", "runs"))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "revisions").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "fleet.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "notes.txt").stat().st_mode) == 0o644
    assert "was open to other users" in caplog.text and "fleet.db was 0644" in caplog.text


def test_a_private_dir_is_left_alone_silently(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    with caplog.at_level(logging.WARNING, logger="fleet.filemodes"):
        filemodes.ensure_private_dir(data, ("fleet.db",))
    assert caplog.text == ""


def test_a_data_dir_that_cannot_be_created_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="set FLEET_DATA_DIR"):
        filemodes.ensure_private_dir(blocker / "data")


def test_make_private_file_creates_or_fixes_0600(tmp_path, umask_022):
    fresh, existing = tmp_path / "fresh.db", tmp_path / "old.db"
    existing.write_text("kept")
    existing.chmod(0o644)
    for path in (fresh, existing):
        filemodes.make_private_file(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert existing.read_text() == "kept"


def _archive(*members: tuple[str, int, bytes | None]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode, data in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def test_exports_keep_only_the_owners_bits(tmp_path):
    with _archive(("roles", 0o755, None), ("roles/site.yml", 0o644, b"---\n"),
                  ("roles/probe.sh", 0o775, b"#!/bin/sh\n")) as tar:
        tar.extractall(tmp_path, filter=filemodes.private_tar_filter)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*")}
    assert modes == {"roles": 0o700, "site.yml": 0o600, "probe.sh": 0o700}


def test_exports_still_refuse_links_out_of_the_tree(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar, pytest.raises(tarfile.FilterError):
        tar.extractall(tmp_path, filter=filemodes.private_tar_filter)


def test_the_private_umask_is_077_and_the_old_one_is_returned():
    old = os.umask(0o022)
    try:
        assert filemodes.use_private_umask() == 0o022
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(old)


@pytest.fixture
def umask_022():
    """The umask most users have, so a mode test proves fleet sets the mode itself."""
    old = os.umask(0o022)
    yield
    os.umask(old)
