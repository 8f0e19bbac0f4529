"""The truth suite's cases: one class of playbook each, and what a truthful check says about it.

Shared by the lab suite (tests/integration/test_truth.py), which runs them on
real hosts, and by the unit tests of fleet.drift, which replay the events
recorded from such a run (tests/unit/fixtures/truth_check.json).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One class of playbook: what an operator changes by hand, and what a truthful check says then."""

    host: str
    hand_change: str  # run on the host after a converge; '' leaves it alone
    status: str  # the verdict after the hand change
    changed: tuple[str, ...] = ()  # tasks named as drift
    unverified: tuple[str, ...] = ()  # tasks named as unverified (with a reason)
    reason: str = ""  # words the first unverified task's reason holds
    after_converge: str = "in_sync"  # the verdict of the check right after a converge


CASES = [
    Case("raw", "rm /srv/case/raw.txt", "unverified", unverified=("Mark the host with raw",),
         reason="without a reason", after_converge="unverified"),
    Case("script", "rm /srv/case/script.txt", "unverified", unverified=("Mark the host with a script",),
         reason="Check mode is not supported", after_converge="unverified"),
    Case("nolog_shell", "rm /srv/case/enrolled.txt", "unverified", unverified=("Store the enrolment token",),
         reason="no_log", after_converge="unverified"),
    Case("nolog_template", "echo tampered >> /srv/case/private.conf", "drifted",
         changed=("Write the private settings",)),
    Case("would_run", "rm /srv/case/hostname.copy", "unverified", unverified=("Keep a copy of the hostname",),
         reason="would have run"),
    Case("loop_partial", "rm /srv/case/spool-b", "unverified", unverified=("Create the spool files",),
         reason="1 of 2 loop items"),
    Case("probe_when", "rm /srv/case/agent", "unverified",
         unverified=("Is the agent installed", "Install the agent"), reason="would have run",
         after_converge="unverified"),
    Case("end_host", "rm /srv/case/version /srv/case/settings", "unverified",
         unverified=("Read the deployed version", "Deploy the release", "Write the release settings"),
         reason="would have run", after_converge="unverified"),
    Case("failed_when", "rm /srv/case/app.conf", "drifted", changed=("Write the app config",),
         unverified=("Tune the app config",), reason="failed_when"),
    Case("ignore_errors", "rm /srv/case/worker.conf", "drifted", changed=("Write the worker config",),
         unverified=("Tune the worker config",), reason="ignore_errors"),
    Case("rescue", "rm /srv/case/fallback.conf", "drifted", changed=("Fall back to the built-in configuration",)),
    Case("deleg_a", "", "in_sync"),
    Case("deleg_b", "rm /srv/case/shared.txt", "drifted", changed=("Publish the shared file on the peer",)),
    Case("executed", "", "in_sync"),
    Case("flapping", "", "drifted", changed=("Stamp the build time",), after_converge="drifted"),
    Case("vault", "sed -i s/user=app/user=intruder/ /srv/case/credentials.conf", "drifted",
         changed=("Write the database credentials",)),
    Case("accepted", "", "in_sync", unverified=("Flush the app cache",), reason="without a reason"),
    Case("handler", "echo listen=9090 > /srv/case/web.conf", "drifted", changed=("Write the web settings",)),
    Case("set_fact_taint", "rm /srv/case/feature.conf", "unverified",
         unverified=("Read the feature flag", "Write the feature settings"), reason="would have run",
         after_converge="unverified"),
    Case("vars_taint", "echo 9090 > /srv/case/port", "unverified",
         unverified=("Read the configured port", "Write the listen settings"), reason="would have run",
         after_converge="unverified"),
    Case("template_src", "echo tampered > /srv/case/banner.conf", "drifted", changed=("Write the banner",)),
    Case("control", "", "in_sync"),
]
BY_HOST = {case.host: case for case in CASES}
