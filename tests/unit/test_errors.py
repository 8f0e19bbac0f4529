"""fleet's error tree (fleet.errors): every error a user can act on is a FleetError, which the command line
turns into one line and exit code 1; the errors that carry data keep it."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from fleet import cli, errors


def test_every_error_fleet_raises_on_purpose_is_a_fleet_error():
    for name in ("ConfigError", "SourceError", "RevisionRejected", "UnsafeSourceURL", "GitTimeout", "LabError",
                 "StoreError", "HostBusy", "NotFound", "AccessDenied", "Throttled"):
        assert issubclass(getattr(errors, name), errors.FleetError), name
    assert not issubclass(errors.FleetError, (ValueError, OSError, RuntimeError))  # never caught by accident


@pytest.mark.parametrize("child,parent", [
    (errors.RevisionRejected, errors.SourceError), (errors.UnsafeSourceURL, errors.SourceError),
    (errors.GitTimeout, errors.SourceError), (errors.Throttled, errors.AccessDenied),
])
def test_the_tree_as_the_module_draws_it(child, parent):
    assert issubclass(child, parent)


def test_a_rejected_revision_names_its_short_sha_and_keeps_the_whole_one():
    sha = "0123456789abcdef" * 2 + "01234567"
    rejected = errors.RevisionRejected(sha, "playbook syntax check failed: site.yml line 3")
    assert str(rejected) == "revision 0123456789ab was rejected: playbook syntax check failed: site.yml line 3"
    assert rejected.sha == sha and rejected.reason.endswith("line 3")


def test_throttled_says_when_to_retry():
    throttled = errors.Throttled("too many failed logins for ann; retry in 42 seconds", retry_after=42)
    assert throttled.retry_after == 42 and str(throttled).startswith("too many failed logins")
    with pytest.raises(errors.AccessDenied):
        raise throttled


def guarded(exc: BaseException) -> click.Command:
    @click.command()
    @cli._guard
    def command():
        raise exc

    return command


@pytest.mark.parametrize("exc", [
    errors.ConfigError("FLEET_FORKS must be a number, got 'many'"),
    errors.RevisionRejected("f" * 40, "inventory does not parse"),
    errors.HostBusy("web1 is held by run 7; wait for it or cancel it"),
    errors.Throttled("too many failures; retry in 5 seconds", 5),
])
def test_the_command_line_prints_a_fleet_error_as_one_line_and_exits_1(exc):
    result = CliRunner().invoke(guarded(exc))
    assert result.exit_code == 1
    assert result.stderr == f"fleet: {exc}\n" and result.stdout == ""


def test_an_unexpected_error_is_not_dressed_up_as_a_fleet_error():
    result = CliRunner().invoke(guarded(ZeroDivisionError("a bug")))
    assert isinstance(result.exception, ZeroDivisionError)  # a bug shows as one, with its traceback


def test_an_interrupted_command_exits_130_and_says_the_run_is_recorded_as_canceled():
    result = CliRunner().invoke(guarded(KeyboardInterrupt()))
    assert result.exit_code == 130
    assert "interrupted; the run is recorded as canceled" in result.stderr
