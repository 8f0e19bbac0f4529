"""What one result proves: changed, or why check mode did not evaluate it (tables of real result shapes)."""

import pytest

from fleet.evidence import classify_result, failure_evidence, names_read, short_action

WOULD_RUN = {"changed": False, "msg": "Command would have run if not in check mode", "rc": 0}
EXISTS = {"changed": False, "msg": "Would not run command since '/etc/hostname' exists", "rc": 0}

# (result, reported skipped, action, changed, words the reason holds ('' = evaluated))
CASES = {
    "unchanged module is evaluated": ({"changed": False}, False, "copy", False, ""),
    "changed module is evaluated": ({"changed": True}, False, "template", True, ""),
    "raw skipped without a word": ({"changed": False}, True, "raw", False, "without a reason"),
    "script's own message": ({"msg": "Check mode is not supported for this task."}, True, "script", False,
                             "Check mode is not supported"),
    "a real when that was false": ({"false_condition": "ansible_os_family == 'RedHat'"}, True, "package", False,
                                   ""),
    "a when on check mode": ({"false_condition": "not ansible_check_mode"}, True, "command", False,
                             "condition on check mode"),
    "an empty loop": ({"skip_reason": "No items in the list"}, True, "user", False, ""),
    "ok but would have run": (WOULD_RUN, False, "command", False, "would have run"),
    "a creates that already holds": (EXISTS, False, "command", False, ""),
    "loop half looked at": ({"changed": False, "results": [EXISTS, WOULD_RUN]}, False, "command", False,
                            "1 of 2 loop items"),
    "loop item that would change": ({"results": [EXISTS, {**WOULD_RUN, "changed": True}]}, False, "command",
                                    True, "1 of 2 loop items"),
    "failed_when hid a module failure": ({"rc": 257, "msg": "Destination /x does not exist !",
                                          "failed_when_result": False}, False, "lineinfile", False,
                                         "failed_when"),
    "failed_when read a program's rc": ({"rc": 1, "failed_when_result": False}, False, "command", False, ""),
    "failed_when over a module exception": ({"exception": "Traceback", "msg": "boom", "failed_when_result": False},
                                            False, "service", False, "boom"),
}


@pytest.mark.parametrize(("res", "skipped", "action", "changed", "reason"), CASES.values(), ids=CASES.keys())
def test_classify_result(res, skipped, action, changed, reason):
    found = classify_result(res, skipped, action)
    assert found["changed"] is changed
    if reason:
        assert reason in found["not_evaluated"]
    else:
        assert found["not_evaluated"] == ""


def test_failure_evidence_needs_a_sign_of_failure():
    assert failure_evidence({"changed": False, "msg": "line added"}, "lineinfile") == ""
    assert failure_evidence({"rc": 2, "stderr": "no such file"}, "stat") == "rc=2 no such file"


@pytest.mark.parametrize(("action", "short"), [("ansible.builtin.copy", "copy"), ("ansible.legacy.shell", "shell"),
                                               ("raw", "raw")])
def test_short_action(action, short):
    assert short_action(action) == short


# (value, read as a bare expression (`when`), the variables it reads)
NAMES_READ_CASES = {
    "a plain string reads nothing": ("/etc/feature.conf", False, set()),
    "a template reads its variables": ("{{ (flag.stdout | default('off')) == 'on' }}", False, {"flag"}),
    "a condition is an expression without braces": ("feature_on | bool", True, {"feature_on"}),
    "a condition with braces is a template": ("{{ feature_on }}", True, {"feature_on"}),
    "filters and tests are not variables": ("x is defined and y | length > 0", True, {"x", "y"}),
    "a loop variable is the template's own": ("{% for line in probe.stdout_lines %}{{ line }}{% endfor %}", False,
                                             {"probe"}),
    "a set variable is the template's own": ("{% set port = base + 1 %}{{ port }}", False, {"base"}),
    "vars['x'] reads x": ("{{ vars['listen_port'] }}", False, {"listen_port"}),
    "lookup('vars', ...) reads its names": ("{{ lookup('vars', 'a', 'b') }}", False, {"a", "b"}),
    "a lookup of a file reads no variable": ("{{ lookup('file', 'motd.txt') }}", False, set()),
    "module arguments: strings inside dicts and lists": ({"dest": "/x/{{ name }}", "opts": ["{{ a }}", 3, True]},
                                                         False, {"name", "a"}),
    "a template Jinja cannot parse reads nothing known": ("{{ unclosed", False, set()),
    "non-strings read nothing": (42, False, set()),
}


@pytest.mark.parametrize(("value", "expression", "names"), NAMES_READ_CASES.values(), ids=NAMES_READ_CASES.keys())
def test_names_read(value, expression, names):
    assert names_read(value, expression=expression) == names
