"""Notifications: what is news (pure tables), the wording, the rate limit, URL masking, the notify: policy,
and whole controller ticks (real store, real git source, the fake runner) posting to a loopback receiver."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from fleet import notify, policy
from fleet.controller import Controller
from fleet.fake_runner import FakeRunner, scripted_events
from fleet.plan import FinishedRun, HostOutcome
from fleet.notify import Event, Noted, Window, admit, build_message, mask_url, note_hosts
from fleet.runner import InventoryHost
from fleet.store import notices
from fleet.store.db import db, open_store
from tests.conftest import JsonReceiver, settings_for_source, wait_for

NOW = datetime(2026, 3, 2, 10, 7, tzinfo=timezone.utc)


# --- what is news -----------------------------------------------------------------------------

NEWS_CASES = [
    ("never notified, drifted", {}, HostOutcome("web1", "drifted", drift=("motd", "nginx")),
     {"drift": [HostOutcome("web1", "drifted", drift=("motd", "nginx"))]}, Noted("drift", frozenset({"motd", "nginx"}))),
    ("same drift again", {"web1": Noted("drift", frozenset({"motd"}))}, HostOutcome("web1", "drifted", drift=("motd",)),
     {}, Noted("drift", frozenset({"motd"}))),
    ("one more drifted task", {"web1": Noted("drift", frozenset({"motd"}))},
     HostOutcome("web1", "drifted", drift=("motd", "nginx")),
     {"drift": [HostOutcome("web1", "drifted", drift=("nginx",))]}, Noted("drift", frozenset({"motd", "nginx"}))),
    ("newly unreachable", {}, HostOutcome("web1", "unreachable"),
     {"unreachable": [HostOutcome("web1", "unreachable")]}, Noted("unreachable")),
    ("still unreachable", {"web1": Noted("unreachable")}, HostOutcome("web1", "unreachable"), {}, Noted("unreachable")),
    ("drifted, unreachable, drifted the same again", {"web1": Noted("unreachable", frozenset({"motd"}))},
     HostOutcome("web1", "drifted", drift=("motd",)), {}, Noted("drift", frozenset({"motd"}))),
    ("failed after drift", {"web1": Noted("drift", frozenset({"motd"}))}, HostOutcome("web1", "failed"),
     {"failed": [HostOutcome("web1", "failed")]}, Noted("failed", frozenset({"motd"}))),
    ("in sync closes the notice", {"web1": Noted("drift", frozenset({"motd"}))}, HostOutcome("web1", "in_sync"),
     {}, Noted()),
]


@pytest.mark.parametrize("name,previous,host,news,noted", NEWS_CASES, ids=[c[0] for c in NEWS_CASES])
def test_what_is_news(name, previous, host, news, noted):
    found, remembered = note_hosts(previous, [host])
    assert {kind: hosts for kind, hosts in found.items() if hosts} == news
    assert remembered[host.name] == noted


def test_an_incomplete_host_keeps_its_notice():
    found, remembered = note_hosts({"web1": Noted("drift", frozenset({"motd"}))}, [HostOutcome("web1", "incomplete")])
    assert not any(found.values()) and remembered == {}


def test_a_run_gives_one_event_per_kind_with_hosts_counts_and_link():
    run = FinishedRun(12, "check", "manual", "successful")
    news = {"drift": [HostOutcome("web1", "drifted", drift=("motd",)), HostOutcome("web2", "drifted", drift=("motd", "ntp"))],
            "unreachable": [HostOutcome("db1", "unreachable")], "failed": []}
    events = notify.run_events(run, news)
    assert [e.kind for e in events] == ["drift", "unreachable"]
    assert events[0].summary == "fleet: new drift on 2 hosts (3 tasks) in check run 12"
    assert events[0].lines == ("web1: motd", "web2: motd, ntp") and events[0].link == "/runs/12"
    message = build_message(events[1], "https://fleet.example.org/")
    assert message.title == "fleet: 1 host unreachable in check run 12"
    assert message.body == "db1\nhttps://fleet.example.org/runs/12"


def test_a_failed_converge_is_an_event_even_without_new_host_news():
    events = notify.run_events(FinishedRun(7, "converge", "manual", "failed"), {})
    assert [(e.kind, e.lines) for e in events] == [("failed", ("the run ended failed",))]
    assert notify.run_events(FinishedRun(8, "converge", "manual", "successful"), {}) == []


def test_a_long_host_list_is_cut_with_a_count():
    hosts = [HostOutcome(f"h{i}", "unreachable") for i in range(25)]
    event = notify.run_events(FinishedRun(1, "check", "manual", "successful"), {"unreachable": hosts})[0]
    assert len(event.lines) == 21 and event.lines[-1] == "... and 5 more"
    assert event.summary.startswith("fleet: 25 hosts unreachable")


# --- rate limit and masking --------------------------------------------------------------------

def test_the_rate_limit_admits_n_per_window_then_opens_a_new_one():
    window = Window()
    for _ in range(3):
        allowed, window = admit(window, NOW, limit=3)
        assert allowed
    allowed, held = admit(window, NOW + timedelta(seconds=59), limit=3)
    assert not allowed and held == window
    allowed, window = admit(window, NOW + timedelta(seconds=60), limit=3)
    assert allowed and window == Window(NOW + timedelta(seconds=60), 1)


@pytest.mark.parametrize("url,shown", [
    ("json://127.0.0.1:8080/hook", "json://127.0.0.1:8080/hook"),
    ("json://user:s3cret@host/hook", "json://user:****@host/hook"),
    ("slack://T000/B000/XXXXsecret", "slack://T000/****/****"),
    ("mailto://me:pw@example.org?to=ops@example.org", "mailto://me:****@example.org?****"),
    ("not a url", "****"),
])
def test_urls_are_masked(url, shown):
    assert mask_url(url) == shown


# --- notify: in fleet.yml -----------------------------------------------------------------------

def test_notify_targets_default_to_every_event():
    rules = policy.parse_policy('notify:\n  - url: "json://h/hook"\n  - url: "json://h/b"\n    on: [drift, stale]\n')
    assert rules.notify[0].on == frozenset(policy.NOTIFY_EVENTS)
    assert rules.notify[1].on == frozenset({"drift", "stale"})
    assert "json://" not in repr(rules), "a URL may hold a token: never in a repr"


@pytest.mark.parametrize("text,error", [
    ('notify:\n  - url: "hooks.example.org/t0ken"\n', "notify[0].url must be an apprise URL"),
    ('notify:\n  - url: "json://h"\n    on: [drift, dirft]\n', "notify[0].on[1] must be one of drift"),
    ('notify:\n  - url: "json://h"\n    on: []\n', "notify[0].on lists no event"),
    ('notify:\n  - {url: "json://h", channel: x}\n', "notify[0].channel is not a known key"),
])
def test_bad_notify_targets_are_refused_without_repeating_the_url(text, error):
    with pytest.raises(policy.PolicyError) as caught:
        policy.parse_policy(text)
    assert error in str(caught.value) and "t0ken" not in str(caught.value)


# --- whole ticks against a loopback receiver ------------------------------------------------------

@pytest.fixture
def receiver():
    server = JsonReceiver()
    yield server
    server.close()


INVENTORY = [InventoryHost("web1", "127.0.99.1", 22, ("web",)), InventoryHost("web2", "127.0.99.2", 22, ("web",))]


def controller_for(tmp_path, port: int, drifted: set, unreachable=frozenset()):
    settings = settings_for_source(tmp_path, f'notify:\n  - url: "json://127.0.0.1:{port}/hook"\n')
    runner = FakeRunner(events=lambda spec: scripted_events({h.name: "changed" if h.name in drifted else "ok"
                                                             for h in INVENTORY}),
                        hosts=INVENTORY, unreachable=unreachable)
    return settings, Controller(settings, runner=runner)


def test_drift_found_by_the_controller_is_posted_once(tmp_path, receiver):
    settings, controller = controller_for(tmp_path, receiver.port, drifted={"web1", "web2"})
    with open_store(settings):
        controller.tick(NOW)  # fetch, queue the commit check
        controller.tick(NOW)  # the check finds drift
        assert controller.notifier.wait_idle()
        assert len(receiver.posts) == 1
        post = receiver.posts[0]
        assert post["path"] == "/hook" and post["title"].startswith("fleet: new drift on 2 hosts (2 tasks)")
        assert "web1: Write the motd" in post["message"] and "web2: Write the motd" in post["message"]
        assert "http://127.0.0.1:8080/runs/" in post["message"]
        controller.tick(NOW + timedelta(minutes=30))  # a scheduled check: same drift
        controller.tick(NOW + timedelta(minutes=30))
        assert controller.notifier.wait_idle()
        assert len(receiver.posts) == 1, "the same drift again is no news"
        [target] = notices.targets()
        assert target.sent_total == 1 and target.last_error == "" and target.display == mask_url(
            f"json://127.0.0.1:{receiver.port}/hook")
        controller.notifier.close()


def test_a_receiver_that_is_down_is_logged_and_kept_and_the_run_goes_on(tmp_path, receiver, caplog):
    receiver.close()
    settings, controller = controller_for(tmp_path, receiver.port, drifted={"web1"})
    with open_store(settings), caplog.at_level(logging.WARNING, logger="fleet.notify"):
        controller.tick(NOW)
        controller.tick(NOW)
        from fleet.store.models import Run
        assert [r.status for r in db.session.query(Run)] == ["successful"], "the check ended whatever the receiver did"
        assert controller.notifier.wait_idle()
        [target] = notices.targets()
        assert target.sent_total == 0 and target.last_error.startswith(
            f"could not deliver to json://127.0.0.1:{receiver.port}/hook: A Connection error occurred")
        assert any("not sent" in r.getMessage() for r in caplog.records)
        controller.notifier.close()


class SlowSender:
    """A sender whose target takes its time: the run must not wait for it."""

    def __init__(self):
        self.release, self.sent = threading.Event(), []

    def send(self, url, message):
        self.release.wait(30)
        self.sent.append(message)
        return ""


def test_a_run_never_waits_for_a_slow_target_and_the_rate_limit_folds_the_rest(tmp_path):
    settings = settings_for_source(tmp_path, "")
    sender = SlowSender()
    notifier = notify.Notifier("http://fleet", sender=sender, limit=2, clock=lambda: NOW)
    rule = policy.NotifyRule("json://127.0.0.1:9/hook")
    with open_store(settings):
        for i in range(5):
            notifier.notify([rule], Event("stale", f"event {i}"))  # returns at once though nothing is sent
        assert sender.sent == []
        sender.release.set()
        assert notifier.wait_idle()
        assert [m.title for m in sender.sent] == ["event 0", "event 1"], "2 a minute, the rest held back"
        [target] = notices.targets()
        assert target.folded == 3 and target.sent_total == 2
        notifier.clock = lambda: NOW + timedelta(minutes=1)
        wait_for(lambda: len(sender.sent) == 3, 10, "the summary of what was held back")
        assert sender.sent[2].title == "fleet: 3 more notifications held back by the rate limit"
        assert "event 4" in sender.sent[2].body
        wait_for(lambda: notices.targets()[0].folded == 0, 10, "the held count cleared")
        notifier.close()


APPROVE_AND_AUTO = """\
remediation:
  - {group: web, mode: auto}
  - {group: db, mode: approve}
rollout: {canary: 1, batch: 50%}
notify:
  - url: "json://127.0.0.1:PORT/hook"
    on: [approval, failed, stale]
"""


def test_approvals_a_stopped_rollout_and_a_stale_source_are_each_posted_once(tmp_path, receiver):
    hosts = INVENTORY + [InventoryHost("db1", "127.0.99.3", 22, ("db",))]

    def events(spec):
        names = spec.limit_file.read_text().split()
        if spec.kind == "check":
            return scripted_events({h: "changed" for h in names})
        return scripted_events({h: "failed" for h in names})  # every converge fails: the canary stops it

    settings = settings_for_source(tmp_path, APPROVE_AND_AUTO.replace("PORT", str(receiver.port)))
    controller = Controller(settings, runner=FakeRunner(events=events, hosts=hosts))
    controller.notifier.limit = 10  # above the 7 messages this sends (the rate limit has its own test)
    with open_store(settings):
        controller.tick(NOW)
        controller.tick(NOW)
        controller.tick(NOW + timedelta(minutes=30))  # the scheduled check: the same drift, the same approval
        controller.tick(NOW + timedelta(minutes=30))
        repo = Path(settings.repo)
        repo.rename(repo.with_name("away"))
        for seconds in (60, 120, 240):  # fetches failing again and again: stale once
            assert controller.sync_source(NOW + timedelta(minutes=30, seconds=seconds)) in ("stale", "not due")
        assert controller.notifier.wait_idle()
        titles = [p["title"] for p in receiver.posts]
        # The approval is not asked again by the second check (the same drift); each failed converge is news.
        assert titles == ["fleet: drift on db1 waits for approval 1",
                          "fleet: 1 host failed in converge run 2", "fleet: rollout stopped",
                          "fleet: 1 host failed in converge run 4", "fleet: rollout stopped",
                          "fleet: the source is stale"], titles
        assert receiver.posts[1]["message"] == "web1\nhttp://127.0.0.1:8080/runs/2"
        rollout = receiver.posts[2]["message"]
        assert "canary failed" in rollout and rollout.endswith("/runs/2"), rollout
        approval = receiver.posts[0]["message"]
        assert "Write the motd" in approval and approval.endswith("http://127.0.0.1:8080/approvals")
        controller.notifier.close()
