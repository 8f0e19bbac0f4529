"""What one Ansible result proves about a host, read from the real result.

Pure: dicts in, a small dict out, no Ansible import. fleet's callback plugin
runs `classify_result` inside ansible-playbook on the *uncensored* result
(before `no_log` hides it), and puts only the verdict-relevant findings in
the event, never the module's output. `fleet.drift` runs the same function
on an event's `res` when an event carries no findings (events recorded
without fleet's callback).

A result is *evaluated* when the module really looked at the host in check
mode. It is not when check mode skipped it (a module without check-mode
support, a command that "would have run"), when only some loop items were
looked at, or when a failure was suppressed (`failed_when: false`): then
`not_evaluated` says why, in words an operator can act on.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2
    import jinja2.nodes

WOULD_HAVE_RUN = "would have run"  # what Ansible says of a command check mode did not run
# A skip that says there was nothing to do: an empty loop evaluates nothing and changes nothing.
NOTHING_TO_DO = ("no items in the list",)
# Keys a module failure leaves behind even when `failed_when` turned `failed` off.
FAILURE_EVIDENCE_KEYS = ("exception", "module_stderr")
# Actions whose rc is the program's own answer, which `failed_when` legitimately interprets.
PROGRAM_ACTIONS = {"command", "shell", "raw", "script"}


def classify_result(res: dict[str, Any], skipped: bool, action: str = "") -> dict[str, Any]:
    """Findings of one result (a task's, or a loop item's): changed, and why it was not evaluated.

    `skipped` is whether Ansible reported the task skipped (the event kind);
    `action` the module's name, which says how to read a non-zero rc.
    Returns {"changed": bool, "not_evaluated": str} ('' when evaluated).
    """
    if skipped or res.get("skipped"):
        return {"changed": False, "not_evaluated": skip_reason(res)}
    items = res.get("results")
    if isinstance(items, list) and items:
        return _classify_loop(res, items, action)
    return {"changed": bool(res.get("changed")), "not_evaluated": _unevaluated_ok(res, action)}


def skip_reason(res: dict[str, Any]) -> str:
    """Why a skip leaves the host unverified; '' for a skip that a real condition explains.

    In check mode a skip proves nothing unless a `when` that was really false
    caused it: `raw` is skipped with no message, `script` with one that old
    marker lists missed.
    """
    condition = str(res.get("false_condition") or "")
    if condition and "ansible_check_mode" not in condition:
        return ""
    message = str(res.get("msg") or res.get("skip_reason") or "")
    if any(marker in message.lower() for marker in NOTHING_TO_DO):
        return ""
    items = res.get("results")
    if isinstance(items, list) and items:
        reasons = [skip_reason(i) if isinstance(i, dict) else "" for i in items]
        return _item_summary(reasons, len(items))
    if condition:
        return f"skipped by its condition on check mode ({condition})"
    if message:
        return f"check mode skipped it: {message}"
    return "check mode skipped it without a reason (the module does not support check mode)"


def _classify_loop(res: dict[str, Any], items: list[Any], action: str) -> dict[str, Any]:
    findings = [classify_result(i, bool(i.get("skipped")), action) if isinstance(i, dict) else {} for i in items]
    changed = bool(res.get("changed")) or any(f.get("changed") for f in findings)
    reasons = [f.get("not_evaluated", "") for f in findings]
    return {"changed": changed, "not_evaluated": _item_summary(reasons, len(items))}


def _item_summary(reasons: list[str], total: int) -> str:
    missing = [r for r in reasons if r]
    if not missing:
        return ""
    return f"{len(missing)} of {total} loop items not evaluated: {missing[0]}"


def _unevaluated_ok(res: dict[str, Any], action: str) -> str:
    """An ok or changed result that still did not look at the host ('' when it did)."""
    message = str(res.get("msg") or "")
    if WOULD_HAVE_RUN in message.lower():
        return f"check mode did not run it: {message}"
    evidence = failure_evidence(res, action) if res.get("failed_when_result") is False else ""
    if evidence:
        return f"it failed in check mode and `failed_when` hid the failure: {evidence}"
    return ""


def failure_evidence(res: dict[str, Any], action: str = "") -> str:
    """The sign of a module failure in a result whose `failed` flag was overridden ('' when none)."""
    rc = res.get("rc")
    if isinstance(rc, int) and rc != 0 and short_action(action) not in PROGRAM_ACTIONS:
        return f"rc={rc} {res.get('msg') or res.get('stderr') or ''}".strip()[:500]
    for key in FAILURE_EVIDENCE_KEYS:
        if res.get(key):
            return str(res.get("msg") or key)[:500]
    return ""


def short_action(action: str) -> str:
    """`ansible.builtin.copy` and `ansible.legacy.copy` -> `copy`."""
    return action.rsplit(".", 1)[-1]


# --- which variables a templated value reads (for taint through set_fact, vars, loops) ---------

# Names every template may read that never carry a result from the host: left out of what a task reads.
TEMPLATE_BUILTINS = frozenset(
    {
        "lookup",
        "query",
        "q",
        "range",
        "dict",
        "lipsum",
        "cycler",
        "joiner",
        "namespace",
        "omit",
        "now",
        "undef",
        "true",
        "false",
        "none",
        "True",
        "False",
        "None",
        "loop",
        "varname",
        "vars",
        "hostvars",
    }
)


def names_read(value: object, expression: bool = False) -> set[str]:
    """The variables a templated value reads: a string, or the strings inside lists and dicts.

    `expression`: the string is a bare Jinja expression (`when`, `changed_when`, `until`), not a template.
    A string that Jinja cannot parse reads nothing known (Ansible then fails the task itself).
    """
    if isinstance(value, dict):
        return set().union(*(names_read(v, expression) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(names_read(v, expression) for v in value)) if value else set()
    if isinstance(value, bool) or not isinstance(value, str):
        return set()
    if expression and "{{" not in value and "{%" not in value:
        return set(_template_names("{{ (" + value + "\n) }}"))
    if "{{" not in value and "{%" not in value:
        return set()
    return set(_template_names(value))


@functools.lru_cache(maxsize=4096)
def _template_names(text: str) -> frozenset[str]:
    """Names a template loads and does not assign itself (cached: a play repeats its expressions per host)."""
    ast = _parse(text)
    return _names_in(ast) if ast is not None else frozenset()


@functools.lru_cache(maxsize=1)
def _parser() -> jinja2.Environment:
    import jinja2  # Ansible's own templating is Jinja2; only the parser is needed, never its filters

    return jinja2.Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])


def _parse(text: str) -> jinja2.nodes.Template | None:
    import jinja2

    try:
        return _parser().parse(text)
    except jinja2.TemplateSyntaxError:
        return None


def _names_in(ast: jinja2.nodes.Template) -> frozenset[str]:
    from jinja2 import nodes

    stored = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    loaded = {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"} - stored
    for item in ast.find_all(nodes.Getitem):  # vars['x'], hostvars[inventory_hostname]['x']
        if isinstance(item.node, nodes.Name) and item.node.name == "vars" and isinstance(item.arg, nodes.Const):
            loaded.add(str(item.arg.value))
    for call in ast.find_all(nodes.Call):  # lookup('vars', 'x', 'y')
        if (
            isinstance(call.node, nodes.Name)
            and call.node.name in ("lookup", "query", "q")
            and call.args
            and isinstance(call.args[0], nodes.Const)
            and call.args[0].value == "vars"
        ):
            loaded |= {str(a.value) for a in call.args[1:] if isinstance(a, nodes.Const)}
    return frozenset(loaded - TEMPLATE_BUILTINS)
