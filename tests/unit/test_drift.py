"""Events shaped like ansible-runner's, in; task results and host verdicts, out."""

import json
from pathlib import Path

import pytest

from fleet.drift import (
    MAX_DIFF_CHARS,
    CheckContext,
    DriftTracker,
    HostHistory,
    HostVerdict,
    extract_facts,
    host_status,
    reads_path,
    render_diff,
    settle_incomplete,
    task_result_from_event,
    virtualization_kind,
)
from fleet.evidence import classify_result
from tests.truth_cases import CASES


def event(kind="runner_on_ok", res=None, host="web1", task="motd",
          action="ansible.builtin.template", uuid="u1", counter=7, **extra):
    """One runner_on_* event as ansible-runner emits it."""
    data = {
        "host": host,
        "task": task,
        "task_action": action,
        "resolved_action": action,
        "task_uuid": uuid,
        "duration": 0.5,
        "task_path": "/x/roles/baseline/tasks/main.yml:3",
        "res": res if res is not None else {},
        **extra,
    }
    return {"event": kind, "counter": counter, "event_data": data}


FILE_DIFF = {"changed": True, "diff": [
    {"before_header": "/etc/motd", "before": "old\n", "after_header": "/etc/motd", "after": "hello\n"},
]}
ATTRIBUTE_DIFF = {"changed": True, "diff": {
    "before": {"path": "/etc/hostname", "mode": "0755"},
    "after": {"path": "/etc/hostname", "mode": "0600"},
}}
LOOP = {"changed": True, "results": [
    {"changed": True, "diff": [{"before": "", "after_header": "/tmp/a", "after": "x"}], "item": "a"},
    {"changed": False, "item": "b"},
]}
CHECK_MODE_COMMAND = {"msg": "Command would have run if not in check mode", "changed": False}
CHECK_MODE_CONDITION = {"skip_reason": "Conditional result was False",
                        "false_condition": "not ansible_check_mode", "changed": False}
OS_CONDITION = {"skip_reason": "Conditional result was False",
                "false_condition": "ansible_os_family == 'RedHat'"}
NO_CHECK_SUPPORT = {"msg": "remote module (foo) does not support check mode", "skipped": True}
FACTS = {"ansible_facts": {
    "ansible_distribution": "Debian", "ansible_distribution_version": "12.11",
    "ansible_virtualization_type": "kvm", "ansible_virtualization_role": "guest",
    "ansible_kernel": "6.1",
}}


# (event, expected status, expected unverified, text the note must contain)
CHECK_MODE_CASES = {
    "unchanged template is ok": (event(res={"changed": False}), "ok", False, ""),
    "changed copy with file diff": (event(res=FILE_DIFF), "changed", False, ""),
    "file module attribute diff is changed": (event(res=ATTRIBUTE_DIFF, action="ansible.builtin.file"),
                                              "changed", False, ""),
    "changed loop": (event(res=LOOP, action="ansible.builtin.copy"), "changed", False, ""),
    "user module changed without diff": (event(res={"changed": True}, action="ansible.builtin.user"),
                                         "changed", False, ""),
    "command skipped in check mode is unverified": (
        event("runner_on_skipped", CHECK_MODE_COMMAND, action="ansible.builtin.command"),
        "skipped", True, "would have run"),
    "skip on not ansible_check_mode is unverified": (
        event("runner_on_skipped", CHECK_MODE_CONDITION),
        "skipped", True, "not ansible_check_mode"),
    "ordinary conditional skip is only skipped": (
        event("runner_on_skipped", OS_CONDITION), "skipped", False, "ansible_os_family == 'RedHat'"),
    "module without check mode is unverified": (
        event("runner_on_skipped", NO_CHECK_SUPPORT), "skipped", True, "does not support check mode"),
    "ignored failure is unverified": (
        event("runner_on_failed", {"msg": "boom"}, ignore_errors=True),
        "failed", True, "failed (ignored): boom"),
    "failure carries msg and stderr": (
        event("runner_on_failed", {"msg": "boom", "stderr": "bad"}), "failed", False, "boom bad"),
    "unreachable": (
        event("runner_on_unreachable", {"unreachable": True, "msg": "Failed to connect"}),
        "unreachable", False, "Failed to connect"),
    "no_log skip hides its output and proves nothing": (
        event("runner_on_skipped", {"skipped": True, "censored": True}),
        "skipped", True, "output hidden (no_log)"),
    "skip without any reason is unverified (raw)": (
        event("runner_on_skipped", {"changed": False}, action="ansible.builtin.raw"), "skipped", True, ""),
    "script's check-mode message is unverified": (
        event("runner_on_skipped", {"msg": "Check mode is not supported for this task.", "changed": False},
              action="ansible.builtin.script"), "skipped", True, "Check mode is not supported"),
    "empty loop is only skipped": (
        event("runner_on_skipped", {"skip_reason": "No items in the list", "skipped": True}), "skipped", False, ""),
    "ok that would have run is unverified": (
        event(res={"changed": False, "msg": "Command would have run if not in check mode", "rc": 0},
              action="ansible.builtin.command"), "ok", True, "would have run"),
    "failed_when false over a module failure is unverified": (
        event(res={"changed": False, "rc": 257, "msg": "Destination /etc/x does not exist !",
                   "failed_when_result": False}, action="ansible.builtin.lineinfile"), "ok", True, "does not exist"),
    "failed_when false over a command's rc is evaluated": (
        event(res={"changed": False, "rc": 1, "failed_when_result": False}, action="ansible.builtin.command"),
        "ok", False, ""),
    "loop with an item skipped by check mode is unverified": (
        event("runner_on_skipped", {"results": [{"item": "a", "skipped": True, **CHECK_MODE_COMMAND}]}),
        "skipped", True, ""),
}


@pytest.mark.parametrize(("evt", "status", "unverified", "note"),
                         CHECK_MODE_CASES.values(), ids=CHECK_MODE_CASES.keys())
def test_task_result_in_check_mode(evt, status, unverified, note):
    result = task_result_from_event(evt, check_mode=True)
    assert (result.status, result.unverified) == (status, unverified)
    assert note in result.note


def test_task_result_copies_the_event_fields():
    result = task_result_from_event(event(res={"changed": False}), check_mode=True)
    assert result.seq == 7
    assert result.host == "web1"
    assert result.task == "motd"
    assert result.action == "ansible.builtin.template"
    assert result.duration == 0.5
    assert result.path == "/x/roles/baseline/tasks/main.yml:3"
    assert result.handler is False


def test_nothing_is_unverified_when_converging():
    for evt in (event("runner_on_skipped", CHECK_MODE_COMMAND),
                event("runner_on_skipped", CHECK_MODE_CONDITION),
                event("runner_on_failed", {"msg": "boom"}, ignore_errors=True)):
        assert task_result_from_event(evt, check_mode=False).unverified is False


# (events, expected host status, counts ok/changed/failed/skipped/unreachable/unverified)
VERDICT_CASES = {
    "only ok tasks is in sync": (
        [event(res={"changed": False}), event(res={"changed": False}, uuid="u2")],
        "in_sync", (2, 0, 0, 0, 0, 0)),
    "a changed task is drift": (
        [event(res={"changed": False}), event(res=FILE_DIFF, uuid="u2")],
        "drifted", (1, 1, 0, 0, 0, 0)),
    "ordinary skip stays in sync": (
        [event("runner_on_skipped", OS_CONDITION)], "in_sync", (0, 0, 0, 1, 0, 0)),
    "check-mode skip makes the host unverified": (
        [event("runner_on_skipped", CHECK_MODE_COMMAND)], "unverified", (0, 0, 0, 1, 0, 1)),
    "ignored failure leaves the host unverified, not failed": (
        [event("runner_on_failed", {"msg": "boom"}, ignore_errors=True)], "unverified", (0, 0, 0, 0, 0, 1)),
    "drift beats unverified": (
        [event("runner_on_skipped", CHECK_MODE_COMMAND), event(res=FILE_DIFF, uuid="u2")],
        "drifted", (0, 1, 0, 1, 0, 1)),
    "failed beats drifted": (
        [event(res=FILE_DIFF), event("runner_on_failed", {"msg": "boom"}, uuid="u2")],
        "failed", (0, 1, 1, 0, 0, 0)),
    "unreachable beats failed": (
        [event("runner_on_failed", {"msg": "boom"}),
         event("runner_on_unreachable", {"unreachable": True, "msg": "Failed to connect"}, uuid="u2")],
        "unreachable", (0, 0, 1, 0, 1, 0)),
    "unreachable beats drifted": (
        [event(res=FILE_DIFF),
         event("runner_on_unreachable", {"unreachable": True, "msg": "Failed to connect"}, uuid="u2")],
        "unreachable", (0, 1, 0, 0, 1, 0)),
}


@pytest.mark.parametrize(("events", "status", "counts"), VERDICT_CASES.values(), ids=VERDICT_CASES.keys())
def test_check_mode_verdict(events, status, counts):
    tracker = DriftTracker(check_mode=True)
    for evt in events:
        tracker.add(evt)
    [verdict] = tracker.verdicts()
    assert verdict.status == status
    assert (verdict.ok, verdict.changed, verdict.failed, verdict.skipped,
            verdict.unreachable, verdict.unverified) == counts


HOST_STATUS_CASES = {
    "nothing counted is in sync": ({}, True, "in_sync"),
    "changed in check mode is drifted": ({"changed": 1}, True, "drifted"),
    "changed when converging is in sync": ({"changed": 1}, False, "in_sync"),
    "failed beats drifted": ({"changed": 1, "failed": 1}, True, "failed"),
    "unreachable beats failed": ({"changed": 1, "failed": 1, "unreachable": 1}, True, "unreachable"),
}


@pytest.mark.parametrize(("counts", "check_mode", "status"), HOST_STATUS_CASES.values(),
                         ids=HOST_STATUS_CASES.keys())
def test_host_status_precedence(counts, check_mode, status):
    assert host_status(HostVerdict("web1", "in_sync", **counts), check_mode) == status


def test_converge_changes_leave_the_host_in_sync():
    tracker = DriftTracker(check_mode=False)
    tracker.add(event(res=FILE_DIFF))
    tracker.add(event(res={"changed": True}, uuid="u2"))
    [verdict] = tracker.verdicts()
    assert verdict.status == "in_sync"
    assert verdict.changed == 2
    assert verdict.unverified == 0


def test_converge_ignored_failure_does_not_fail_the_host():
    # Ansible's own recap counts this as ignored=1, failed=0.
    tracker = DriftTracker(check_mode=False)
    tracker.add(event("runner_on_failed", {"msg": "boom"}, ignore_errors=True))
    [verdict] = tracker.verdicts()
    assert verdict.status == "in_sync"
    assert verdict.failed == 0


def test_failure_message_names_the_task():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event("runner_on_failed", {"msg": "boom", "stderr": "bad"}, task="install nginx"))
    [verdict] = tracker.verdicts()
    assert verdict.status == "failed"
    assert verdict.message == "install nginx: boom bad"


def test_unreachable_message_names_the_task():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event("runner_on_unreachable", {"unreachable": True, "msg": "Failed to connect"},
                      task="Gathering Facts"))
    [verdict] = tracker.verdicts()
    assert verdict.status == "unreachable"
    assert "Failed to connect" in verdict.message
    assert verdict.message.startswith("Gathering Facts")


def test_ignored_failure_leaves_no_message():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event("runner_on_failed", {"msg": "boom"}, ignore_errors=True))
    assert tracker.verdicts()[0].message == ""


def test_coverage_counts_verified_and_unverified_but_not_plain_skips():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event(res={"changed": False}, uuid="a"))
    tracker.add(event(res=FILE_DIFF, uuid="b"))
    tracker.add(event("runner_on_skipped", OS_CONDITION, uuid="c"))
    tracker.add(event("runner_on_skipped", CHECK_MODE_COMMAND, uuid="d"))
    tracker.add(event("runner_on_skipped", NO_CHECK_SUPPORT, uuid="e"))
    tracker.add(event("runner_on_failed", {"msg": "boom"}, ignore_errors=True, uuid="f"))
    [verdict] = tracker.verdicts()
    assert verdict.verified == 2  # ok + changed
    assert verdict.unverified == 3
    assert verdict.coverage_total == 5
    assert verdict.skipped == 3


def test_coverage_includes_failures_as_verified():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event(res={"changed": False}, uuid="a"))
    tracker.add(event("runner_on_failed", {"msg": "boom"}, uuid="b"))
    tracker.add(event("runner_on_skipped", CHECK_MODE_COMMAND, uuid="c"))
    [verdict] = tracker.verdicts()
    assert (verdict.verified, verdict.coverage_total) == (2, 3)


def test_tasks_that_change_nothing_stay_out_of_the_coverage():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event(res=FACTS, task="Gathering Facts", action="ansible.builtin.gather_facts", uuid="f"))
    tracker.add(event(res={"changed": False, "msg": "hello"}, action="ansible.builtin.debug", uuid="d"))
    tracker.add(event(res={"changed": False}, action="ansible.builtin.assert", uuid="a"))
    tracker.add(event(res={"changed": False}, uuid="t"))
    [verdict] = tracker.verdicts()
    assert (verdict.verified, verdict.coverage_total) == (1, 1)
    assert verdict.status == "in_sync"


def test_verdicts_are_per_host_and_sorted():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event(res=FILE_DIFF, host="web2"))
    tracker.add(event(res={"changed": False}, host="db1"))
    assert [(v.name, v.status) for v in tracker.verdicts()] == [("db1", "in_sync"), ("web2", "drifted")]


def test_events_without_a_host_are_not_task_results():
    tracker = DriftTracker(check_mode=True)
    assert tracker.add({"event": "playbook_on_task_start", "event_data": {"task": "motd"}}) is None
    assert tracker.add({"event": "runner_on_ok", "event_data": {"res": {}}}) is None
    assert tracker.add({"event": "playbook_on_stats", "event_data": {}}) is None
    assert tracker.verdicts() == []


def test_handler_results_are_marked():
    tracker = DriftTracker(check_mode=True)
    tracker.add({"event": "playbook_on_handler_task_start",
                 "event_data": {"task": "restart nginx", "task_uuid": "h1"}})
    handler = tracker.add(event(res={"changed": True}, task="restart nginx", uuid="h1"))
    ordinary = tracker.add(event(res={"changed": True}, uuid="u1"))
    assert handler.handler is True
    assert ordinary.handler is False


def test_gather_facts_fills_host_facts():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event(res=FACTS, task="Gathering Facts", action="gather_facts"))
    [verdict] = tracker.verdicts()
    assert verdict.facts == {"os": "Debian 12.11", "kernel": "6.1",
                             "virtualization": "VM", "virtualization_type": "kvm"}
    assert verdict.status == "in_sync"


def test_facts_from_an_ordinary_task_are_ignored():
    tracker = DriftTracker(check_mode=True)
    tracker.add(event(res=FACTS, action="ansible.builtin.set_fact"))
    assert tracker.verdicts()[0].facts == {}


VIRTUALIZATION_CASES = {
    "kvm guest is a VM": ("kvm", "guest", "VM"),
    "docker guest is a container": ("docker", "guest", "container"),
    "lxc guest is a container": ("lxc", "guest", "container"),
    "kvm host is bare metal": ("kvm", "host", "bare-metal"),
    "NA guest is bare metal": ("NA", "guest", "bare-metal"),
    "no facts is bare metal": ("", "", "bare-metal"),
}


@pytest.mark.parametrize(("vtype", "role", "kind"), VIRTUALIZATION_CASES.values(),
                         ids=VIRTUALIZATION_CASES.keys())
def test_virtualization_kind(vtype, role, kind):
    assert virtualization_kind(vtype, role) == kind


def test_extract_facts_of_nothing_is_empty():
    assert extract_facts({}) == {}


def test_extract_facts_falls_back_to_system():
    assert extract_facts({"ansible_system": "Linux"})["os"] == "Linux"


def test_note_host_unreachable():
    tracker = DriftTracker(check_mode=True)
    verdict = tracker.note_host("web1", "unreachable", "no route to host")
    assert verdict.status == "unreachable"
    assert (verdict.verified, verdict.coverage_total) == (0, 0), "nothing ran, so nothing was verified"
    assert verdict.message == "no route to host"
    assert tracker.verdicts() == [verdict]


def test_note_host_blocked_is_failed_without_verified_tasks():
    tracker = DriftTracker(check_mode=True)
    verdict = tracker.note_host("web1", "failed", "host key changed")
    assert verdict.status == "failed"
    assert (verdict.verified, verdict.coverage_total) == (0, 0)
    assert tracker.verdicts()[0].message == "host key changed"


# --- render_diff ---------------------------------------------------------------------------


def test_template_diff_names_the_destination_not_the_controller_temp_file():
    res = {"changed": True, "dest": "/etc/motd", "diff": [{
        "before_header": "/etc/motd", "before": "old\n",
        "after_header": "/root/.ansible/tmp/ansible-local-1/tmpx/motd.j2", "after": "new\n"}]}
    assert render_diff(res).splitlines()[:2] == ["--- before: /etc/motd", "+++ after: /etc/motd"]


def test_file_diff_is_a_real_unified_diff():
    assert render_diff(FILE_DIFF).splitlines() == [
        "--- before: /etc/motd", "+++ after: /etc/motd", "@@ -1 +1 @@", "-old", "+hello",
    ]


def test_attribute_diff_lists_keys_one_per_line():
    lines = render_diff(ATTRIBUTE_DIFF).splitlines()
    assert lines[:2] == ["--- before", "+++ after"]
    assert '-mode: "0755"' in lines
    assert '+mode: "0600"' in lines
    assert ' path: "/etc/hostname"' in lines


def test_loop_diff_comes_from_changed_items():
    assert render_diff(LOOP).splitlines() == ["--- before: /tmp/a", "+++ after: /tmp/a", "@@ -0,0 +1 @@", "+x"]


def test_changed_task_result_carries_its_diff():
    result = task_result_from_event(event(res=FILE_DIFF), check_mode=True)
    assert "+hello" in result.diff


def test_failed_task_result_has_no_diff():
    result = task_result_from_event(event("runner_on_failed", {**FILE_DIFF, "msg": "boom"}), check_mode=True)
    assert result.diff == ""


def test_missing_trailing_newline_still_gives_whole_lines():
    text = render_diff({"diff": {"before": "a\nb", "after": "a\nc"}})
    assert text.endswith("\n")
    assert text.splitlines()[-2:] == ["-b", "+c"]
    assert "\\ No newline" not in text


def test_prepared_diff_is_used_as_is():
    prepared = "--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y"
    assert render_diff({"diff": [{"prepared": prepared}]}) == prepared + "\n"


def test_no_diff_gives_empty_text():
    assert render_diff({"changed": True}) == ""
    assert render_diff({"diff": {}}) == ""
    assert render_diff({"diff": []}) == ""


def test_several_diffs_are_joined():
    res = {"diff": [
        {"before_header": "/a", "before": "1\n", "after_header": "/a", "after": "2\n"},
        {"before_header": "/b", "before": "3\n", "after_header": "/b", "after": "4\n"},
    ]}
    text = render_diff(res)
    assert text.index("--- before: /a") < text.index("--- before: /b")
    assert "+2" in text and "+4" in text


def test_huge_diff_is_cut_with_a_note():
    text = render_diff({"diff": [{"prepared": "x" * (MAX_DIFF_CHARS + 500)}]})
    note = f"\n... diff cut at {MAX_DIFF_CHARS} characters\n"
    assert text.endswith(note)
    assert len(text) == MAX_DIFF_CHARS + len(note)


def test_diff_just_under_the_limit_is_not_cut():
    body = "x" * (MAX_DIFF_CHARS - 1) + "\n"
    assert render_diff({"diff": [{"prepared": body}]}) == body


def test_tracker_knows_when_ansible_reached_its_recap():
    tracker = DriftTracker(check_mode=True)
    tracker.add({"event": "runner_on_ok", "counter": 1,
                 "event_data": {"host": "web1", "task": "t", "resolved_action": "ping", "res": {}}})
    assert not tracker.finished
    tracker.add({"event": "playbook_on_stats", "counter": 2, "event_data": {}})
    assert tracker.finished


# --- recorded from a real check of the truth cases (tests/integration/truth) ------------------------

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "truth_check.json").read_text())
REVISION = "a" * 40
FLAPPING_KEY = "playbooks/roles/flapping/tasks/main.yml|Stamp the build time"
ACCEPTED = frozenset({"Flush the app cache", "Read the feature flag", "Read the configured port"})  # as fleet.yml


def replay(events, **context) -> DriftTracker:
    """The recorded events through a tracker, as the runner would feed them."""
    hosts = frozenset(e["event_data"]["host"] for e in events if e["event_data"].get("host"))
    defaults = {"revision": REVISION, "hosts": hosts, "accept_unverified": ACCEPTED,
                "history": {h: HostHistory(last_converge_sha=REVISION, flapping=frozenset({FLAPPING_KEY}))
                            for h in hosts}}
    tracker = DriftTracker(check_mode=True, context=CheckContext(**{**defaults, **context}))
    for evt in events:
        tracker.add_all(evt)
    return tracker


def tasks_of(tracker: DriftTracker, events) -> dict[str, list]:
    """Every task result per host, as the recorder would store them."""
    again = DriftTracker(check_mode=True, context=tracker.context)
    found: dict[str, list] = {}
    for evt in events:
        for result in again.add_all(evt):
            found.setdefault(result.host, []).append(result)
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.host for c in CASES])
def test_recorded_check_gives_each_case_its_truthful_verdict(case):
    tracker = replay(RECORDED)
    verdict = {v.name: v for v in tracker.verdicts()}[case.host]
    tasks = tasks_of(tracker, RECORDED)[case.host]
    assert verdict.status == case.status
    assert [t.task for t in tasks if t.drift] == list(case.changed)
    unverified = [t for t in tasks if t.unverified]
    assert [t.task for t in unverified] == list(case.unverified)
    if case.unverified:
        assert case.reason in unverified[0].reason


def test_recorded_vault_diff_is_masked():
    [vault] = [t for t in tasks_of(replay(RECORDED), RECORDED)["vault"] if t.drift]
    assert "password=********" in vault.diff and "token=********" in vault.diff


def test_recorded_drift_after_an_unchecked_converge_is_flapping():
    history = {"nolog_template": HostHistory(last_converge_sha=REVISION, checked_since_converge=False)}
    tracker = replay(RECORDED, history=history)
    [drift] = [t for t in tasks_of(tracker, RECORDED)["nolog_template"] if t.drift]
    assert drift.flapping and drift.cause == "local"


def test_recorded_flapping_task_stays_named_until_stable():
    tracker = replay(RECORDED)
    verdicts = {v.name: v for v in tracker.verdicts()}
    assert verdicts["flapping"].flapping == {FLAPPING_KEY}
    assert [t.flapping for t in tasks_of(tracker, RECORDED)["flapping"] if t.drift] == [True]


@pytest.mark.parametrize(("history", "changed_paths", "cause"), [
    pytest.param({}, {}, "new", id="never converged"),
    pytest.param({"vault": HostHistory(last_converge_sha=REVISION)}, {}, "local", id="same revision"),
    pytest.param({"vault": HostHistory(last_converge_sha="b" * 40)},
                 {"b" * 40: frozenset({"playbooks/roles/vault/templates/credentials.conf.j2"})}, "commit",
                 id="a commit changed its template"),
    pytest.param({"vault": HostHistory(last_converge_sha="b" * 40)},
                 {"b" * 40: frozenset({"playbooks/roles/handler/templates/web.conf.j2"})}, "local",
                 id="a commit changed another role only"),
    pytest.param({"vault": HostHistory(last_converge_sha="b" * 40)}, {"b" * 40: None}, "commit",
                 id="history between the revisions unknown"),
])
def test_recorded_drift_cause(history, changed_paths, cause):
    tracker = replay(RECORDED, history=history, changed_paths=changed_paths)
    assert [t.cause for t in tasks_of(tracker, RECORDED)["vault"] if t.drift] == [cause]


@pytest.mark.parametrize(("changed_paths", "cause"), [
    pytest.param(frozenset({"playbooks/templates/banner.j2"}), "commit", id="only the template beside the playbook"),
    pytest.param(frozenset({"playbooks/roles/control/templates/control.conf.j2"}), "local",
                 id="only another task's template"),
])
def test_recorded_template_beside_the_playbook_is_its_cause(changed_paths, cause):
    history = {"template_src": HostHistory(last_converge_sha="b" * 40)}
    tracker = replay(RECORDED, history=history, changed_paths={"b" * 40: changed_paths})
    assert [t.cause for t in tasks_of(tracker, RECORDED)["template_src"] if t.drift] == [cause]


@pytest.mark.parametrize(("host", "task", "words"), [
    pytest.param("set_fact_taint", "Write the feature settings",
                 ("skipped because its condition reads `feature_on`", "set from `flag`", "'Read the feature flag'"),
                 id="set_fact from an accepted probe"),
    pytest.param("vars_taint", "Write the listen settings",
                 ("arguments", "`listen_port` (from vars)", "`port_probe`", "'Read the configured port'"),
                 id="role vars from an accepted probe"),
])
def test_recorded_taint_names_the_chain(host, task, words):
    tracker = replay(RECORDED, accept_unverified=frozenset({"Read the feature flag", "Read the configured port"}))
    [result] = [t for t in tasks_of(tracker, RECORDED)[host] if t.task == task]
    assert result.unverified and not result.accepted
    assert all(word in result.reason for word in words), result.reason
    assert {v.name: v.status for v in tracker.verdicts()}[host] == "unverified"


def test_recorded_delegation_outside_the_run_stays_with_the_host_it_ran_for():
    tracker = replay(RECORDED, hosts=frozenset({"deleg_a"}))
    verdicts = {v.name: v for v in tracker.verdicts()}
    assert verdicts["deleg_a"].status == "drifted"


def test_recorded_accepted_task_no_longer_blocks_in_sync():
    verdicts = {v.name: v for v in replay(RECORDED, accept_unverified=frozenset()).verdicts()}
    assert verdicts["accepted"].status == "unverified"
    verdicts = {v.name: v for v in replay(RECORDED).verdicts()}
    assert (verdicts["accepted"].status, verdicts["accepted"].accepted) == ("in_sync", 1)


def test_recorded_rescued_failure_does_not_fail_the_host():
    verdict = {v.name: v for v in replay(RECORDED).verdicts()}["rescue"]
    assert (verdict.status, verdict.failed) == ("drifted", 0)


def test_a_flapping_task_found_unchanged_is_stable_and_stays_so():
    key = "roles/app/tasks/main.yml|stamp"
    context = CheckContext(revision="r", history={"web1": HostHistory("r", flapping=frozenset({key}))})
    tracker = DriftTracker(check_mode=True, context=context)
    tracker.add(event(res={"changed": False}, task="stamp", uuid="s",
                      task_path="roles/app/tasks/main.yml:3"))
    tracker.add(event(res={"changed": False}, task="motd", uuid="m"))
    [verdict] = tracker.verdicts()
    assert verdict.flapping == set()


def test_a_stopped_run_does_not_prove_hosts_in_sync():
    verdicts = [HostVerdict("web1", "in_sync"), HostVerdict("web2", "drifted"), HostVerdict("db1", "unreachable"),
                HostVerdict("db2", "unverified")]
    settled = settle_incomplete(verdicts)
    assert [v.status for v in settled] == ["incomplete", "drifted", "unreachable", "incomplete"]
    assert "stopped" in settled[0].message


# --- taint: a value derived from a result check mode could not give -------------------------------

def task_event(kind="runner_on_ok", res=None, task="t", action="ansible.builtin.copy", host="web1",
               when=None, false_condition="", register="", **reads):
    """A task event with the findings fleet's callback adds: what the task's templates read, what it sets."""
    res = dict(res if res is not None else {"changed": False})
    if false_condition:
        res.update(false_condition=false_condition, skip_reason="Conditional result was False")
    skipped = kind == "runner_on_skipped"
    findings = {**classify_result(res, skipped, action), "when": list(when or {}), "register": register,
                "when_reads": dict(when or {}), "loop_reads": [], "arg_reads": [], "sets": {}, "derived": {},
                "check_mode": None, **reads}
    return event(kind, res, host=host, task=task, action=action, uuid=task, fleet=findings)


def probe(register="flag", task="Read the feature flag", host="web1"):
    return task_event("runner_on_skipped", CHECK_MODE_COMMAND, task=task, action="ansible.builtin.command",
                      register=register, host=host)


def set_fact(sets, task="Decide", **reads):
    return task_event(res={"changed": False, "ansible_facts": {}}, task=task, action="ansible.builtin.set_fact",
                      sets=sets, **reads)


FEATURE_WHEN = {"feature_on | bool": ["feature_on"]}
SKIPPED_COPY = task_event("runner_on_skipped", task="Write the feature settings", when=FEATURE_WHEN,
                          false_condition="feature_on | bool")

# (events, accepted tasks, {task: words its reason holds, or None for verified}, host status)
TAINT_CASES = {
    "set_fact from an unverified probe": (
        [probe(), set_fact({"feature_on": ["flag"]}), SKIPPED_COPY], (),
        {"Write the feature settings": "skipped because its condition reads `feature_on`, set from `flag`, "
                                       "registered by 'Read the feature flag'"}, "unverified"),
    "set_fact from an accepted probe still taints": (
        [probe(), set_fact({"feature_on": ["flag"]}), SKIPPED_COPY], ("Read the feature flag",),
        {"Write the feature settings": "`feature_on`, set from `flag`"}, "unverified"),
    "set_fact from a checked probe is clean": (
        [task_event(task="Read the feature flag", action="ansible.builtin.command", register="flag"),
         set_fact({"feature_on": ["flag"]}), SKIPPED_COPY], (),
        {"Write the feature settings": None}, "in_sync"),
    "a fact set again from checked values is clean again": (
        [probe(), set_fact({"feature_on": ["flag"]}), set_fact({"feature_on": []}, task="Reset"), SKIPPED_COPY],
        (), {"Write the feature settings": None}, "unverified"),
    "a set_fact whose condition reads a tainted value taints its facts": (
        [probe(), set_fact({"feature_on": []}, when_reads={"flag.rc == 0": ["flag"]}), SKIPPED_COPY], (),
        {"Write the feature settings": "`feature_on`, set from `flag`"}, "unverified"),
    "a register several steps on": (
        [probe(), set_fact({"a": ["flag"]}), set_fact({"feature_on": ["a"]}, task="Again"), SKIPPED_COPY], (),
        {"Write the feature settings": "`feature_on`, set from `a`, set from `flag`"}, "unverified"),
    "play or role vars derived from a probe": (
        [probe(register="port_probe", task="Read the port"),
         task_event(task="Write the listen settings", arg_reads=["listen_port"],
                    derived={"listen_port": ["port_probe"]})], ("Read the port",),
        {"Write the listen settings": "they read `listen_port` (from vars), which reads `port_probe`"},
        "unverified"),
    "include_vars from a tainted path taints what it loads": (
        [probe(), task_event(res={"changed": False}, task="Load", action="ansible.builtin.include_vars",
                             arg_reads=["flag"], sets={"feature_on": ["flag"]}), SKIPPED_COPY], (),
        {"Write the feature settings": "`feature_on`, set from `flag`"}, "unverified"),
    "a loop over a tainted fact": (
        [probe(), set_fact({"wanted": ["flag"]}),
         task_event("runner_on_skipped", {"skip_reason": "No items in the list", "skipped": True},
                    task="Create the wanted files", loop_reads=["wanted"])], (),
        {"Create the wanted files": "skipped because its loop reads `wanted`"}, "unverified"),
    "ok with tainted loop items": (
        [probe(), set_fact({"wanted": ["flag"]}), task_event(task="Create the wanted files", loop_reads=["wanted"])],
        (), {"Create the wanted files": "its loop reads `wanted`"}, "unverified"),
    "a change that read a tainted value stays drift": (
        [probe(), set_fact({"port": ["flag"]}), task_event(res=FILE_DIFF, task="Write", arg_reads=["port"])], (),
        {"Write": None}, "drifted"),
    "a task that changes nothing is not unverified by its arguments": (
        [probe(), task_event(task="Say", action="ansible.builtin.debug", arg_reads=["flag"])], (),
        {"Say": None}, "unverified"),
    "an ok task whose condition alone read a tainted value was evaluated": (
        [probe(), set_fact({"feature_on": ["flag"]}), task_event(task="Write the feature settings",
                                                                  when=FEATURE_WHEN)], ("Read the feature flag",),
        {"Write the feature settings": None}, "in_sync"),
    "the register of a task that read a tainted value is tainted": (
        [probe(), task_event(task="Say", action="ansible.builtin.debug", arg_reads=["flag"], register="said"),
         task_event("runner_on_skipped", task="Write", when={"said.msg == 'on'": ["said"]},
                    false_condition="said.msg == 'on'")], ("Read the feature flag",),
        {"Write": "`said`, registered by 'Say', which read `flag`"}, "unverified"),
    "only the condition that was false decides a skip": (
        [probe(), set_fact({"feature_on": ["flag"]}),
         task_event("runner_on_skipped", task="Write the feature settings",
                    when={"os == 'x'": ["os"], "feature_on | bool": ["feature_on"]}, false_condition="os == 'x'")],
        ("Read the feature flag",), {"Write the feature settings": None}, "in_sync"),
    "arguments that read ansible_check_mode": (
        [task_event(task="Write", arg_reads=["ansible_check_mode"])], (),
        {"Write": "they read `ansible_check_mode`"}, "unverified"),
    "arguments through vars that read ansible_check_mode": (
        [task_event(task="Write", arg_reads=["mode"], derived={"mode": ["ansible_check_mode"]})], (),
        {"Write": "`mode` (from vars), which reads `ansible_check_mode`"}, "unverified"),
    "taint stays with its host": (
        [probe(host="web2"), set_fact({"feature_on": ["flag"]}), SKIPPED_COPY], (),
        {"Write the feature settings": None}, "in_sync"),
}


@pytest.mark.parametrize(("events", "accepted", "expected", "status"), TAINT_CASES.values(), ids=TAINT_CASES.keys())
def test_taint_follows_values_derived_from_unverified_results(events, accepted, expected, status):
    tracker = DriftTracker(check_mode=True, context=CheckContext(accept_unverified=frozenset(accepted)))
    results = {}
    for evt in events:
        for result in tracker.add_all(evt):
            results[(result.host, result.task)] = result
    for task, words in expected.items():
        result = results[("web1", task)]
        if words is None:
            assert not result.unverified, result.reason
        else:
            assert result.unverified and not result.accepted, result
            assert words in result.reason, result.reason
    assert {v.name: v.status for v in tracker.verdicts()}["web1"] == status


def test_taint_is_not_applied_when_converging():
    tracker = DriftTracker(check_mode=False)
    for evt in (probe(), set_fact({"feature_on": ["flag"]}), SKIPPED_COPY):
        tracker.add(evt)
    [verdict] = tracker.verdicts()
    assert (verdict.status, verdict.unverified) == ("in_sync", 0)


# --- drift causes: every file a task reads ------------------------------------------------------------

# (task path, files and role directories it read, a path a commit changed, counts as the task's cause)
READS_PATH_CASES = {
    "its own task file": ("playbooks/site.yml:12", (), "playbooks/site.yml", True),
    "its role's template": ("playbooks/roles/app/tasks/main.yml:3", (), "playbooks/roles/app/templates/a.j2", True),
    "a template beside the playbook": ("playbooks/site.yml:12", ("playbooks/templates/banner.j2",),
                                       "playbooks/templates/banner.j2", True),
    "a copy source directory": ("playbooks/site.yml:12", ("playbooks/files/conf.d",),
                                "playbooks/files/conf.d/a.conf", True),
    "a file a lookup read": ("playbooks/roles/app/tasks/main.yml:3", ("playbooks/files/limits.txt",),
                             "playbooks/files/limits.txt", True),
    "a dependency role's defaults": ("playbooks/roles/app/tasks/main.yml:3", ("playbooks/roles/common/",),
                                     "playbooks/roles/common/defaults/main.yml", True),
    "group_vars": ("playbooks/site.yml:12", (), "inventory/group_vars/all.yml", True),
    "a template the task did not read": ("playbooks/site.yml:12", ("playbooks/templates/banner.j2",),
                                         "playbooks/templates/motd.j2", False),
    "a name that only starts like a file read": ("playbooks/site.yml:12", ("playbooks/templates/banner.j2",),
                                                 "playbooks/templates/banner.j2.orig", False),
    "another role": ("playbooks/roles/app/tasks/main.yml:3", ("playbooks/roles/app/",),
                     "playbooks/roles/db/templates/db.j2", False),
}


@pytest.mark.parametrize(("task_path", "reads", "changed", "counts"), READS_PATH_CASES.values(),
                         ids=READS_PATH_CASES.keys())
def test_reads_path(task_path, reads, changed, counts):
    assert reads_path(task_path, changed, reads) is counts


def test_a_changed_template_beside_the_playbook_is_the_cause_of_its_drift():
    tree = "/data/revisions/abc/"
    context = CheckContext(revision="new", project_dir=tree,
                           history={"web1": HostHistory(last_converge_sha="old")},
                           changed_paths={"old": frozenset({"playbooks/templates/banner.j2"})})
    tracker = DriftTracker(check_mode=True, context=context)
    drift = tracker.add(task_event(res=FILE_DIFF, task="Write the banner", action="ansible.builtin.template",
                                   task_path=f"{tree}playbooks/site.yml:20",
                                   files=[f"{tree}playbooks/templates/banner.j2", f"{tree}playbooks/site.yml"],
                                   roles=[]))
    assert drift.reads == ("playbooks/templates/banner.j2", "playbooks/site.yml")
    assert drift.cause == "commit"
    untouched = tracker.add(task_event(res=FILE_DIFF, task="Write the motd", action="ansible.builtin.template",
                                       task_path=f"{tree}playbooks/roles/motd/tasks/main.yml:2",
                                       files=[f"{tree}playbooks/roles/motd/templates/motd.j2"],
                                       roles=[f"{tree}playbooks/roles/motd"]))
    assert untouched.reads[-1] == "playbooks/roles/motd/"
    assert untouched.cause == "local"
