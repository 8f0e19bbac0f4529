"""The fault suite: faults provoked on real processes, and a watch on the controller while they happen.

Every test here provokes one fault of issue 11 (a stalled git remote, kill -9,
an injected database error, a 200 MB body, ...) against a real `fleet serve`,
real git remotes and lab hosts, and asserts the end state. `HealthWatch`
polls `/api/v1/healthz` all along, so each test also proves the controller
kept answering; what it measured is appended to test-artifacts/faults.jsonl
(the closing note's "longest time the controller stopped answering").
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import PROJECT, ServeProcess

POLL_SECONDS = 0.25
ANSWER_TIMEOUT = 2.0
RESULTS = PROJECT / "test-artifacts" / "faults.jsonl"


class HealthWatch:
    """Polls a serve's healthz in a thread for the duration of a `with` block.

    After the block: `longest_silence` is the longest stretch (seconds) with no
    200 answer, `longest_heartbeat_age` the largest controller heartbeat age
    healthz reported (None when it reports none), `polls` how many answers came.
    """

    def __init__(self, serve: ServeProcess, label: str):
        self.serve, self.label = serve, label
        self.longest_silence = 0.0
        self.longest_heartbeat_age: float | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"healthz {label}", daemon=True)

    def __enter__(self) -> "HealthWatch":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._record()

    def _watch(self) -> None:
        last_answer = time.monotonic()
        while not self._stop.is_set():
            body = self._ask()
            now = time.monotonic()
            # The gap since the last answer counts up to this poll's end, answered or not.
            self.longest_silence = max(self.longest_silence, now - last_answer)
            if body is not None:
                self.polls += 1
                last_answer = now
                self._note_heartbeat(body)
            self._stop.wait(POLL_SECONDS)

    def _ask(self) -> dict | None:
        """healthz's JSON when it answered 200 in time, else None."""
        try:
            with urllib.request.urlopen(self.serve.url("/api/v1/healthz"), timeout=ANSWER_TIMEOUT) as resp:
                return json.loads(resp.read() or b"{}") if resp.status == 200 else None
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def _note_heartbeat(self, body: dict) -> None:
        age = (body.get("controller") or {}).get("heartbeat_age_seconds")
        if isinstance(age, (int, float)):
            self.longest_heartbeat_age = max(self.longest_heartbeat_age or 0.0, float(age))

    def _record(self) -> None:
        RESULTS.parent.mkdir(exist_ok=True)
        line = {"label": self.label, "seconds": round(time.monotonic() - self._started, 1),
                "polls": self.polls, "longest_silence": round(self.longest_silence, 2),
                "longest_heartbeat_age": self.longest_heartbeat_age}
        with RESULTS.open("a") as out:
            out.write(json.dumps(line) + "\n")


def read_results(path: Path = RESULTS) -> list[dict]:
    """Every watch recorded so far (for the closing numbers)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
