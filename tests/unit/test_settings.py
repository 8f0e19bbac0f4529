"""load_settings: flags beat FLEET_* variables beat fleet.toml beat defaults."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fleet.errors import ConfigError
from fleet.settings import load_settings

REPO = "https://git.example.com/fleet-source.git"


@pytest.fixture
def outside_git(tmp_path, monkeypatch):
    """A working directory git will not search above, so it is in no checkout."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    return work


def write_toml(directory: Path, text: str) -> Path:
    path = directory / "fleet.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path):
    settings = load_settings(flags={"repo": REPO}, environ={}, cwd=tmp_path)
    assert settings.repo == REPO
    assert settings.branch is None
    assert settings.playbook == "playbooks/site.yml"
    assert settings.inventory == "inventory/"
    assert settings.data_dir == tmp_path / ".fleet"
    assert settings.database_url == f"sqlite:///{tmp_path / '.fleet' / 'fleet.db'}"
    assert settings.forks == 20
    assert settings.poll_interval == 60
    assert settings.known_hosts_path == tmp_path / ".fleet" / "ssh" / "known_hosts"


PRECEDENCE_CASES = {
    "default only": (None, None, None, 20),
    "toml beats default": ("forks = 5", None, None, 5),
    "environ beats toml": ("forks = 5", "7", None, 7),
    "flag beats environ": ("forks = 5", "7", 9, 9),
    "flag beats toml": ("forks = 5", None, 9, 9),
    "flag of None falls through": ("forks = 5", "7", "none", 7),
    "empty variable falls through": ("forks = 5", "", None, 5),
}


@pytest.mark.parametrize(("toml", "env", "flag", "forks"), PRECEDENCE_CASES.values(),
                         ids=PRECEDENCE_CASES.keys())
def test_precedence(tmp_path, toml, env, flag, forks):
    if toml:
        write_toml(tmp_path, toml)
    environ = {"FLEET_REPO": REPO}
    if env is not None:
        environ["FLEET_FORKS"] = env
    flags = {"forks": None} if flag == "none" else {} if flag is None else {"forks": flag}
    assert load_settings(flags=flags, environ=environ, cwd=tmp_path).forks == forks


def test_every_layer_is_used_for_different_settings(tmp_path):
    write_toml(tmp_path, 'branch = "from-toml"\nplaybook = "toml.yml"\ninventory = "toml-inv"\n')
    settings = load_settings(
        flags={"branch": "from-flag"},
        environ={"FLEET_REPO": REPO, "FLEET_PLAYBOOK": "env.yml"},
        cwd=tmp_path,
    )
    assert (settings.branch, settings.playbook, settings.inventory) == ("from-flag", "env.yml", "toml-inv")


def test_explicit_config_path_is_read(tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text(f'repo = "{REPO}"\nforks = 3\n')
    settings = load_settings(environ={}, config_path=path, cwd=tmp_path)
    assert (settings.repo, settings.forks) == (REPO, 3)


def test_relative_data_dir_is_resolved_against_cwd(tmp_path):
    settings = load_settings(environ={"FLEET_REPO": REPO, "FLEET_DATA_DIR": "state"}, cwd=tmp_path)
    assert settings.data_dir == tmp_path / "state"
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'fleet.db'}"


def test_relative_data_dir_in_toml_is_resolved_against_cwd(tmp_path):
    write_toml(tmp_path, f'repo = "{REPO}"\ndata_dir = "var/fleet"\n')
    assert load_settings(environ={}, cwd=tmp_path).data_dir == tmp_path / "var" / "fleet"


def test_absolute_data_dir_is_kept(tmp_path):
    target = tmp_path / "abs"
    settings = load_settings(flags={"repo": REPO, "data_dir": str(target)}, environ={}, cwd=tmp_path / "x")
    assert settings.data_dir == target


def test_explicit_database_url_is_kept(tmp_path):
    settings = load_settings(environ={"FLEET_REPO": REPO, "FLEET_DATABASE_URL": "postgresql://db/fleet"},
                             cwd=tmp_path)
    assert settings.database_url == "postgresql://db/fleet"


REPO_CASES = {
    "https url kept": ("https://example.com/a.git", "https://example.com/a.git"),
    "scp-like ssh kept": ("git@example.com:ops/fleet.git", "git@example.com:ops/fleet.git"),
    "relative path resolved": ("../source", "{tmp}/source"),
    "absolute path kept": ("/srv/source", "/srv/source"),
}


@pytest.mark.parametrize(("repo", "expected"), REPO_CASES.values(), ids=REPO_CASES.keys())
def test_repo_forms(tmp_path, repo, expected):
    cwd = tmp_path / "work"
    cwd.mkdir()
    settings = load_settings(environ={"FLEET_REPO": repo}, cwd=cwd)
    assert settings.repo == expected.format(tmp=tmp_path.resolve())


def test_repo_defaults_to_the_enclosing_checkout(outside_git):
    checkout = outside_git / "checkout"
    (checkout / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    settings = load_settings(environ={}, cwd=checkout / "sub")
    assert Path(settings.repo) == checkout.resolve()


def test_no_repo_outside_git_names_fleet_repo(outside_git):
    with pytest.raises(ConfigError, match="FLEET_REPO"):
        load_settings(environ={}, cwd=outside_git)


ERROR_CASES = {
    "not a number in environ": ({"FLEET_FORKS": "abc"}, None, r"FLEET_FORKS: forks must be int, got 'abc'"),
    "zero in environ": ({"FLEET_RUN_TIMEOUT": "0"}, None, r"FLEET_RUN_TIMEOUT: run_timeout must be a positive"),
    "negative in toml": ({}, "poll_interval = -1", r"poll_interval must be a positive"),
    "unknown key in toml": ({}, 'colour = "red"', r"unknown settings colour"),
    "invalid toml": ({}, "forks = = 3", r"is not valid TOML"),
    "string for int in toml": ({}, 'forks = "many"', r"forks must be int, got 'many'"),
    "empty playbook": ({"FLEET_REPO": REPO}, 'playbook = ""', r"playbook must not be empty"),
}


@pytest.mark.parametrize(("environ", "toml", "message"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_settings_raise_config_error(tmp_path, environ, toml, message):
    if toml:
        write_toml(tmp_path, toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(flags={"repo": REPO}, environ=environ, cwd=tmp_path)


def test_empty_inventory_flag_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="inventory must not be empty"):
        load_settings(flags={"repo": REPO, "inventory": ""}, environ={}, cwd=tmp_path)


def test_missing_explicit_config_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist; fix --config"):
        load_settings(flags={"repo": REPO}, environ={}, config_path=missing, cwd=tmp_path)


def test_missing_default_config_is_fine(tmp_path):
    assert load_settings(flags={"repo": REPO}, environ={}, cwd=tmp_path).forks == 20


def test_settings_are_frozen(tmp_path):
    settings = load_settings(flags={"repo": REPO}, environ={}, cwd=tmp_path)
    with pytest.raises(AttributeError):
        settings.forks = 1


def test_fractional_number_in_toml_is_an_error(tmp_path):
    # int(2.5) is 2: without a type check the value would be cut silently.
    write_toml(tmp_path, "forks = 2.5")
    with pytest.raises(ConfigError, match="forks must be int"):
        load_settings(flags={"repo": REPO}, environ={}, cwd=tmp_path)


def test_zero_forks_flag_is_an_error(tmp_path):
    # `fleet --forks 0` reaches load_settings as flags={"forks": 0}; it must be checked like FLEET_FORKS=0.
    with pytest.raises(ConfigError, match="forks must be a positive number"):
        load_settings(flags={"repo": REPO, "forks": 0}, environ={}, cwd=tmp_path)


def test_fleet_ssh_persist_is_read_from_the_environment_and_must_be_positive(tmp_path):
    settings = load_settings(environ={"FLEET_SSH_PERSIST": "600", "FLEET_REPO": "/srv/src"}, cwd=tmp_path)
    assert settings.ssh_persist == 600
    assert load_settings(environ={"FLEET_REPO": "/srv/src"}, cwd=tmp_path).ssh_persist is None
    with pytest.raises(ConfigError, match="ssh_persist must be a positive number"):
        load_settings(environ={"FLEET_SSH_PERSIST": "0", "FLEET_REPO": "/srv/src"}, cwd=tmp_path)


def test_ssh_sockets_of_a_short_data_directory_live_in_it(tmp_path):
    settings = load_settings(flags={"repo": REPO, "data_dir": "/srv/fleet"}, environ={}, cwd=tmp_path)
    assert settings.control_path_dir == Path("/srv/fleet/cp")


def test_ssh_sockets_of_a_long_data_directory_live_in_a_private_short_one(tmp_path, monkeypatch):
    """ssh refuses a ControlPath too long for a socket's name: every host read unreachable with linear."""
    from fleet.runner import control_path

    runtime = Path(tempfile.mkdtemp(prefix="run", dir="/tmp"))  # short, as /run/user/UID is (tmp_path is not)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    long_dir = tmp_path / ("d" * 60) / "data"
    first = load_settings(flags={"repo": REPO, "data_dir": str(long_dir)}, environ={}, cwd=tmp_path)
    other = load_settings(flags={"repo": REPO, "data_dir": str(long_dir) + "2"}, environ={}, cwd=tmp_path)

    assert first.control_path_dir.parent == runtime / f"fleet-warm-{os.getuid()}"
    assert (first.control_path_dir.parent.stat().st_mode & 0o777) == 0o700
    assert control_path(first.control_path_dir) is not None, "a %C socket name fits"
    assert first.control_path_dir == load_settings(flags={"repo": REPO, "data_dir": str(long_dir)}, environ={},
                                                   cwd=tmp_path).control_path_dir, "the same each time"
    assert other.control_path_dir != first.control_path_dir, "one directory per data directory"
    shutil.rmtree(runtime)
