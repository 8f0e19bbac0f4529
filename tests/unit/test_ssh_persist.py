"""When the next scheduled check is, and reading FLEET_SSH_PERSIST.

What jobs and the runner make of them (how long SSH masters outlive a run, the
control path they share) is tested in test_jobs.py and test_runner.py; these two
belong in test_policy.py and test_settings.py, whose owners move them there.
"""

from datetime import datetime, timezone

import pytest

from fleet import policy
from fleet.errors import ConfigError
from fleet.settings import load_settings

NOW = datetime(2026, 11, 27, 14, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("schedule", "now", "expected"), [
    ("*/30 * * * *", NOW, 20 * 60),
    ("*/30 * * * *", datetime(2026, 11, 27, 14, 30, 0, tzinfo=timezone.utc), 30 * 60),
    ("0 * * * *", datetime(2026, 11, 27, 14, 59, 59, 500000, tzinfo=timezone.utc), 1),
    ("0 3 * * *", NOW, (24 - 14 + 3) * 3600 - 10 * 60),
])
def test_seconds_until_next_check(schedule, now, expected):
    assert policy.seconds_until_next_check(policy.Policy(schedule=schedule), now) == expected


def test_fleet_ssh_persist_is_read_from_the_environment_and_must_be_positive(tmp_path):
    settings = load_settings(environ={"FLEET_SSH_PERSIST": "600", "FLEET_REPO": "/srv/src"}, cwd=tmp_path)
    assert settings.ssh_persist == 600
    assert load_settings(environ={"FLEET_REPO": "/srv/src"}, cwd=tmp_path).ssh_persist is None
    with pytest.raises(ConfigError, match="ssh_persist must be a positive number"):
        load_settings(environ={"FLEET_SSH_PERSIST": "0", "FLEET_REPO": "/srv/src"}, cwd=tmp_path)
