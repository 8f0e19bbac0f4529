"""How long SSH masters outlive a run, and the control path they share."""

from datetime import datetime, timezone
from pathlib import Path

import pytest

from fleet import policy, runner
from fleet.jobs import ssh_persist
from fleet.errors import ConfigError
from fleet.settings import Settings, load_settings

NOW = datetime(2026, 11, 27, 14, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("schedule", "now", "expected"), [
    ("*/30 * * * *", NOW, 20 * 60),
    ("*/30 * * * *", datetime(2026, 11, 27, 14, 30, 0, tzinfo=timezone.utc), 30 * 60),
    ("0 * * * *", datetime(2026, 11, 27, 14, 59, 59, 500000, tzinfo=timezone.utc), 1),
    ("0 3 * * *", NOW, (24 - 14 + 3) * 3600 - 10 * 60),
])
def test_seconds_until_next_check(schedule, now, expected):
    assert policy.seconds_until_next_check(policy.Policy(schedule=schedule), now) == expected


def tree_with(tmp_path: Path, fleet_yml: str | None) -> Path:
    if fleet_yml is not None:
        (tmp_path / "fleet.yml").write_text(fleet_yml)
    return tmp_path


def test_connections_last_until_five_minutes_past_the_next_scheduled_check(tmp_path):
    tree = tree_with(tmp_path, "schedule: '0 * * * *'\n")
    assert ssh_persist(Settings(repo="r"), tree, NOW) == 50 * 60 + 300


def test_default_schedule_when_the_source_has_no_fleet_yml(tmp_path):
    assert ssh_persist(Settings(repo="r"), tree_with(tmp_path, None), NOW) == 20 * 60 + 300


def test_a_broken_fleet_yml_falls_back_to_the_default_schedule(tmp_path):
    tree = tree_with(tmp_path, "schedule: [not, cron\n")
    assert ssh_persist(Settings(repo="r"), tree, NOW) == 20 * 60 + 300


def test_the_setting_overrides_the_schedule(tmp_path):
    tree = tree_with(tmp_path, "schedule: '0 * * * *'\n")
    assert ssh_persist(Settings(repo="r", ssh_persist=45), tree, NOW) == 45


def test_ssh_arguments_name_the_shared_control_path_and_persist_time():
    data = Path("/var/lib/fleet")
    env = runner.ansible_env(data / "ssh" / "known_hosts", data / "cp", 1500)
    args = env["ANSIBLE_SSH_ARGS"]
    assert "-o ControlPersist=1500s" in args
    assert "-o ControlPath=/var/lib/fleet/cp/%C" in args
    assert "StrictHostKeyChecking=yes" in args and "UserKnownHostsFile=/var/lib/fleet/ssh/known_hosts" in args


def test_a_control_directory_too_long_for_a_socket_leaves_the_path_to_ansible():
    fits = Path("/var/lib/fleet/cp")
    too_long = Path("/srv/" + "x" * 60 + "/cp")
    assert runner.control_path(fits) == "/var/lib/fleet/cp/%C"
    assert runner.control_path(too_long) is None
    args = runner.ansible_env(Path("/k"), too_long, 300)["ANSIBLE_SSH_ARGS"]
    assert "ControlPath" not in args and "ControlPersist=300s" in args


def test_fleet_ssh_persist_is_read_from_the_environment_and_must_be_positive(tmp_path):
    settings = load_settings(environ={"FLEET_SSH_PERSIST": "600", "FLEET_REPO": "/srv/src"}, cwd=tmp_path)
    assert settings.ssh_persist == 600
    assert load_settings(environ={"FLEET_REPO": "/srv/src"}, cwd=tmp_path).ssh_persist is None
    with pytest.raises(ConfigError, match="ssh_persist must be a positive number"):
        load_settings(environ={"FLEET_SSH_PERSIST": "0", "FLEET_REPO": "/srv/src"}, cwd=tmp_path)
