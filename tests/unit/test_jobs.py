"""Exit codes and run status from host verdicts."""

import pytest

from fleet.drift import HostVerdict
from fleet.jobs import _run_status, exit_code


def verdicts(*statuses):
    return [HostVerdict(f"host{i}", status) for i, status in enumerate(statuses)]


EXIT_CASES = {
    "no hosts": ((), 0),
    "all in sync": (("in_sync", "in_sync"), 0),
    "any drifted": (("in_sync", "drifted"), 2),
    "unreachable": (("in_sync", "unreachable"), 3),
    "failed": (("failed",), 3),
    "drifted and unreachable": (("drifted", "unreachable"), 3),
    "unreachable before drifted": (("unreachable", "drifted"), 3),
    "drifted and failed": (("failed", "drifted", "in_sync"), 3),
    "unverified without drift": (("in_sync", "unverified"), 4),
    "drift beats unverified": (("unverified", "drifted"), 2),
    "unreachable beats unverified": (("unverified", "unreachable"), 3),
    "incomplete is not proven": (("incomplete", "unverified"), 3),
}


@pytest.mark.parametrize(("statuses", "code"), EXIT_CASES.values(), ids=EXIT_CASES.keys())
def test_exit_code(statuses, code):
    assert exit_code(verdicts(*statuses)) == code


RUN_STATUS_CASES = {
    "successful run of healthy hosts": ("successful", ("in_sync", "drifted"), "successful"),
    "successful run with a failed host": ("successful", ("in_sync", "failed"), "failed"),
    "successful run with an unreachable host": ("successful", ("unreachable",), "failed"),
    "runner failure stays failed": ("failed", ("in_sync",), "failed"),
    "timeout stays timeout": ("timeout", ("unreachable",), "timeout"),
    "canceled stays canceled": ("canceled", (), "canceled"),
}


@pytest.mark.parametrize(("runner_status", "statuses", "status"), RUN_STATUS_CASES.values(),
                         ids=RUN_STATUS_CASES.keys())
def test_run_status(runner_status, statuses, status):
    assert _run_status(runner_status, verdicts(*statuses)) == status
