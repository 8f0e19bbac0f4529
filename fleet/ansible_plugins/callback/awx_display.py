"""ansible-runner's event callback, plus why a task was skipped.

ansible-runner's `runner_on_skipped` event carries no result, so a task
skipped because of check mode looks the same as one skipped by a `when`.
fleet must tell them apart (the first is *unverified*, never in sync), so
this plugin shadows ansible-runner's `awx_display` (fleet puts its own
callback directory first on ANSIBLE_CALLBACK_PLUGINS) and adds the few
result fields that explain a skip. Nothing else of the result is added, so
no module output that might hold a secret reaches the event.
"""

from ansible_runner.display_callback.callback import awx_display as runner_display

DOCUMENTATION = runner_display.DOCUMENTATION

SKIP_FIELDS = ("skipped", "skip_reason", "false_condition", "msg", "changed")


def skip_details(result: dict) -> dict:
    if result.get("_ansible_no_log"):
        return {"skipped": True, "censored": True}
    details = {key: result[key] for key in SKIP_FIELDS if key in result}
    items = result.get("results")
    if isinstance(items, list):
        details["results"] = [skip_details(item) for item in items if isinstance(item, dict)]
    return details


class CallbackModule(runner_display.CallbackModule):
    CALLBACK_NAME = "awx_display"

    def v2_runner_on_skipped(self, result):
        with runner_display.event_context.set_local(res=skip_details(result._result)):
            super().v2_runner_on_skipped(result)
