"""Notifications: what the `notify:` targets of fleet.yml are told, and telling them without holding a run.

The pure half decides and words things: which hosts are news (`note_hosts`:
new drift only, a host newly unreachable or failed), the events of a run
(`run_events`), their message (`build_message`) and the rate limit (`admit`).

The edge half sends: the controller hands every event to one `Notifier`,
whose `notify` only puts it on a queue; a thread of its own works out what
is new (through `fleet.store.notices`), applies each target's rate limit
(the rest folded into one summary once the minute is over), sends through a
`Sender` (apprise by default) and records each target's last error in the
store and the log. A target that hangs or refuses holds that thread, never a
run. URLs may carry tokens: only `mask_url`'s form is ever logged or stored.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from fleet.plan import FinishedRun, HostOutcome
from fleet.policy import NotifyRule
from fleet.vocabulary import utcnow

if TYPE_CHECKING:
    from fleet.store.db import Store

log = logging.getLogger("fleet.notify")

RATE_LIMIT = 5  # messages per target per RATE_SPAN; the rest are folded into one summary
RATE_SPAN = timedelta(minutes=1)
SEND_TIMEOUT_SECONDS = 10  # apprise's connect and read timeouts, each
MAX_HOSTS_LISTED = 20  # a message names this many hosts, then counts the rest
CLOSE_WAIT_SECONDS = 5.0  # at stop, queued messages get this long to go out


# --- pure: what is news ----------------------------------------------------------------------


@dataclass(frozen=True)
class Noted:
    """What was last notified about one host: its condition and the drifted tasks already reported."""

    condition: str = ""  # "drift" | "unreachable" | "failed" | "" (nothing open)
    tasks: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Event:
    """One message's worth: an event of one run (or of the source), with the hosts it concerns."""

    kind: str  # one of policy.NOTIFY_EVENTS
    summary: str  # one line, the message title
    lines: tuple[str, ...] = ()  # one per host (with its new tasks) or a reason
    link: str = ""  # a path under the public URL: /runs/12, /approvals, /revisions


def note_hosts(
    previous: Mapping[str, Noted], hosts: Sequence[HostOutcome]
) -> tuple[dict[str, list[HostOutcome]], dict[str, Noted]]:
    """The hosts that are news, per condition, and what to remember of every host now.

    Drift is news when a task drifted that was not reported before (a host
    not drifted before reports all of its tasks); unreachable and failed are
    news when the host was not so at the last notice. A host in sync or with
    nothing but unverified tasks closes its notice: its next drift is news.
    """
    news: dict[str, list[HostOutcome]] = {"drift": [], "unreachable": [], "failed": []}
    noted: dict[str, Noted] = {}
    for host in hosts:
        before = previous.get(host.name, Noted())
        if host.status == "drifted":
            fresh = tuple(t for t in host.drift if t not in before.tasks)
            if fresh:
                news["drift"].append(replace(host, drift=fresh))
            noted[host.name] = Noted("drift", frozenset(host.drift))
        elif host.status in ("unreachable", "failed"):
            if before.condition != host.status:
                news[host.status].append(host)
            noted[host.name] = Noted(host.status, before.tasks)  # its drift, once it is seen again, is old
        elif host.status in ("in_sync", "unverified"):
            noted[host.name] = Noted()
    return news, noted


def run_events(run: FinishedRun, news: Mapping[str, list[HostOutcome]]) -> list[Event]:
    """One event per kind of news in a run (never one per host); a converge that failed is one too."""
    link = f"/runs/{run.id}"
    events = []
    drifted = news.get("drift", [])
    if drifted:
        tasks = sum(len(h.drift) for h in drifted)
        events.append(
            Event(
                "drift",
                f"fleet: new drift on {_count(len(drifted), 'host')} "
                f"({_count(tasks, 'task')}) in {run.kind} run {run.id}",
                _host_lines(drifted, with_tasks=True),
                link,
            )
        )
    for kind in ("unreachable", "failed"):
        hosts = news.get(kind, [])
        if hosts:
            events.append(
                Event(
                    kind,
                    f"fleet: {_count(len(hosts), 'host')} {kind} in {run.kind} run {run.id}",
                    _host_lines(hosts),
                    link,
                )
            )
    if run.kind == "converge" and (run.note or run.status not in ("successful", "canceled")) and not news.get("failed"):
        reason = run.note or f"the run ended {run.status}"
        events.append(Event("failed", f"fleet: converge run {run.id} failed", (reason,), link))
    return events


def rollout_event(run_id: int | None, reason: str) -> Event:
    """A rollout stopped (the canary or too many hosts failed): told as a failure."""
    return Event("failed", "fleet: rollout stopped", (reason,), f"/runs/{run_id}" if run_id else "/runs")


def approval_event(approval_id: int, host: str, summary: str) -> Event:
    subject = f"drift on {host}" if host else "an auto converge"
    return Event(
        "approval", f"fleet: {subject} waits for approval {approval_id}", (summary,) if summary else (), "/approvals"
    )


def source_event(outcome: str, problem: str) -> Event:
    """A revision rejected or the source gone stale ("rejected" | "stale")."""
    title = "fleet: a revision was rejected" if outcome == "rejected" else "fleet: the source is stale"
    return Event(outcome, title, (problem,), "/revisions")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _host_lines(hosts: Sequence[HostOutcome], with_tasks: bool = False) -> tuple[str, ...]:
    lines = [f"{h.name}: {', '.join(h.drift)}" if with_tasks else h.name for h in hosts[:MAX_HOSTS_LISTED]]
    if len(hosts) > MAX_HOSTS_LISTED:
        lines.append(f"... and {len(hosts) - MAX_HOSTS_LISTED} more")
    return tuple(lines)


# --- pure: wording and rate ------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def build_message(event: Event, base_url: str) -> Message:
    """The title and body sent: the summary, a line per host or reason, and the link to see more."""
    body = "\n".join((*event.lines, f"{base_url.rstrip('/')}{event.link}" if event.link else ""))
    return Message(event.summary, body.strip())


def build_summary(held: Sequence[Event], base_url: str) -> Message:
    """One message for the events the rate limit held back."""
    titles = [e.summary for e in held[:MAX_HOSTS_LISTED]]
    if len(held) > MAX_HOSTS_LISTED:
        titles.append(f"... and {len(held) - MAX_HOSTS_LISTED} more")
    return Message(
        f"fleet: {_count(len(held), 'more notification')} held back by the rate limit",
        "\n".join((*titles, f"{base_url.rstrip('/')}/runs")),
    )


@dataclass(frozen=True)
class Window:
    """A target's rate-limit window: when it began and how many messages went out in it."""

    start: datetime | None = None
    sent: int = 0


def admit(window: Window, now: datetime, limit: int = RATE_LIMIT, span: timedelta = RATE_SPAN) -> tuple[bool, Window]:
    """May one more message go out at ``now``? And the window after it (a new one once ``span`` is over)."""
    if window.start is None or now - window.start >= span:
        window = Window(now, 0)
    if window.sent >= limit:
        return False, window
    return True, replace(window, sent=window.sent + 1)


def mask_url(url: str) -> str:
    """The URL with its secrets hidden: a password, and every path part or query value but a short word.

    Tokens sit in the path (Slack, Teams) or the query as often as in the password, so only the scheme,
    the host and plain path words (``/hook``) stay readable.
    """
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?", url)
    if not match:
        return "****"
    scheme, authority, path, query = match.groups()
    user, _, host = authority.rpartition("@")
    if user:
        host = f"{user.split(':')[0]}:****@{host}" if ":" in user else f"****@{host}"
    parts = [p if re.fullmatch(r"[a-z][a-z-]{0,15}", p) else "****" for p in path.split("/")[1:]]
    shown = f"{scheme}://{host}{''.join('/' + p for p in parts)}"
    return shown + ("?****" if query else "")


def target_key(url: str) -> str:
    """A target's key in the store: a hash of its URL, so the URL itself is never stored."""
    return hashlib.sha256(url.encode()).hexdigest()


# --- the edge: sending -----------------------------------------------------------------------


class Sender(Protocol):
    def send(self, url: str, message: Message) -> str:
        """Deliver ``message`` to ``url``; '' when delivered, else what went wrong (secrets masked)."""


class AppriseSender:
    """Sends through apprise (Slack, e-mail, Teams, a generic JSON webhook, ...)."""

    def __init__(self) -> None:
        _load_apprise()

    def send(self, url: str, message: Message) -> str:
        import apprise

        notifier = apprise.Apprise()
        if not notifier.add(_with_timeouts(url)):
            return f"apprise does not understand {mask_url(url)}; check the URL's scheme and form"
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
            delivered = notifier.notify(title=message.title, body=message.body)
        if delivered:
            return ""
        said = " ".join(line.strip() for line in captured.getvalue().splitlines() if line.strip())
        return f"could not deliver to {mask_url(url)}: {mask_text(said, url) or 'apprise reported a failure'}"


def _with_timeouts(url: str) -> str:
    """Bound each attempt (apprise's cto/rto): a hanging target holds the sender's thread, never for long."""
    glue = "&" if "?" in url else "?"
    return f"{url}{glue}cto={SEND_TIMEOUT_SECONDS}&rto={SEND_TIMEOUT_SECONDS}"


_apprise_loaded = threading.Lock()


def _load_apprise() -> None:
    """Import apprise and its plugins once, quietly: some plugins import modules Python deprecates
    (imghdr), which would be an error under `filterwarnings = error` and is no concern of fleet's."""
    with _apprise_loaded, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
        from apprise.apprise import N_MGR

        N_MGR.load_modules()
        assert apprise


# --- the edge: the notifier thread -------------------------------------------------------------


# What the notifier's thread is handed: a run's end or an event for some rules, a mark to set once all
# before it were handled (wait_idle), () when nothing came within a second, None to stop.
_Work: TypeAlias = (
    "tuple[Literal['run'], tuple[NotifyRule, ...], FinishedRun]"
    " | tuple[Literal['event'], tuple[NotifyRule, ...], Event]"
    " | tuple[Literal['mark'], threading.Event] | tuple[()]"
)


class Notifier:
    """Takes events from the controller at once and sends them from a thread of its own.

    ``notify_run`` and ``notify`` never wait: they queue. The thread starts
    with the first event (in the controller's thread, whose store it keeps).
    ``close`` gives queued messages a moment to go out.
    The store's half (`fleet.store.notices`) is imported where it is used: it
    builds on this module's pure half, and this module stays importable
    without a store.
    """

    def __init__(
        self,
        base_url: str,
        sender: Sender | None = None,
        limit: int = RATE_LIMIT,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.base_url, self.limit, self.clock = base_url, limit, clock
        self._sender = sender
        self._queue: queue.Queue[_Work | None] = queue.Queue()
        self._held: dict[str, tuple[str, list[Event]]] = {}  # target key -> (url, events held back)
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._lock = threading.Lock()

    def notify_run(self, rules: Sequence[NotifyRule], run: FinishedRun) -> None:
        """A run ended: its news goes to ``rules`` (worked out in the thread: it reads the store)."""
        if rules:
            self._put(("run", tuple(rules), run))

    def notify(self, rules: Sequence[NotifyRule], event: Event) -> None:
        """Send ``event`` to every rule that listens for its kind."""
        if rules:
            self._put(("event", tuple(rules), event))

    def _put(self, item: _Work) -> None:
        with self._lock:
            if self._thread is None:
                from fleet.store.db import current_store

                self._store = current_store()
                self._thread = threading.Thread(target=self._work, name="fleet-notify", daemon=True)
                self._thread.start()
        self._queue.put(item)

    def close(self, timeout: float = CLOSE_WAIT_SECONDS) -> None:
        """Let queued messages go out (for at most ``timeout`` seconds), then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once everything queued so far was handled (tests, and a clean stop)."""
        done = threading.Event()
        if self._thread is None:
            return True
        self._queue.put(("mark", done))
        return done.wait(timeout)

    def _work(self) -> None:
        while True:
            try:
                item: _Work | None = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = ()
            if item is None:
                return
            assert self._store is not None  # _put keeps the store before it starts this thread
            try:
                with self._store.bound():
                    self._handle(item)
                    self._release_held()
            except Exception:  # a notification must never end the thread; the next one is tried
                log.exception("notifying failed")

    def _handle(self, item: _Work) -> None:
        if not item:
            return
        if item[0] == "mark":
            item[1].set()
            return
        if item[0] == "run":
            rules, events = item[1], run_events(item[2], self._news(item[2]))
        else:
            rules, events = item[1], [item[2]]
        for event in events:
            for rule in rules:
                if event.kind in rule.on:
                    self._deliver(rule.url, event)

    def _news(self, run: FinishedRun) -> dict[str, list[HostOutcome]]:
        """The run's hosts that are news; what is noted of them now is remembered in the store."""
        from fleet.store import notices

        news, noted = note_hosts(notices.noted_hosts([h.name for h in run.hosts]), run.hosts)
        notices.remember_hosts(noted)
        return news

    def _deliver(self, url: str, event: Event) -> None:
        from fleet.store import notices

        key = target_key(url)
        if not notices.take_slot(key, mask_url(url), self.clock(), self.limit):
            self._held.setdefault(key, (url, []))[1].append(event)
            notices.note_held(key)
            log.info("notification to %s held back by the rate limit: %s", mask_url(url), event.summary)
            return
        self._send(key, url, build_message(event, self.base_url))

    def _release_held(self) -> None:
        """Once a target's minute is over, what it held back goes out as one summary."""
        from fleet.store import notices

        for key, (url, held) in list(self._held.items()):
            if notices.take_slot(key, mask_url(url), self.clock(), self.limit):
                del self._held[key]
                self._send(key, url, build_summary(held, self.base_url), folded=len(held))

    def _send(self, key: str, url: str, message: Message, folded: int = 0) -> None:
        from fleet.store import notices

        if self._sender is None:
            self._sender = AppriseSender()
        try:
            error = self._sender.send(url, message)
        except Exception as exc:  # noqa: BLE001  a plugin's own bug is a failed delivery, not a dead thread
            error = f"could not deliver to {mask_url(url)}: {type(exc).__name__}: {mask_text(str(exc), url)}"
        notices.record_outcome(key, self.clock(), error, folded)
        if error:
            log.warning("notification %r not sent: %s", message.title, error)
        else:
            log.info("notification sent to %s: %s", mask_url(url), message.title)


def mask_text(text: str, url: str) -> str:
    """``text`` with ``url`` (which an exception may quote) replaced by its masked form."""
    return text.replace(url, mask_url(url))
