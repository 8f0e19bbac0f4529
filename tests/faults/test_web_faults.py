"""Hostile HTTP input against a real `fleet serve`: a 200 MB body, and 50 wrong passwords.

A body over 1 MiB, announced (Content-Length) or not (chunked), is refused
by waitress before it is buffered: the answer is 413 (or the connection is
closed under a client still sending), the server's peak memory stays put and
healthz answers all along. (With waitress's defaults the whole 200 MB was
read, about 30 s per upload, and spooled to a temporary file before Flask's
413: the bytes the client got to send are what this test bounds; peak RSS
guards against buffering in memory.) Fifty wrong logins lock the account: the right
password is refused with 429 and Retry-After, every failure and refusal is
in the audit log with the address, and the account works again once the
window (shortened through FLEET_LOGIN_WINDOW_SECONDS) has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.cookiejar
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from fleet.settings import load_settings
from fleet.store import accounts, db
from fleet.store.db import open_store
from fleet.store.models import AuditEntry
from tests.conftest import FleetCli, ServeProcess, make_source
from tests.faults.conftest import HealthWatch

PASSWORD = "correct horse battery"
WEBHOOK_SECRET = "webhook-secret-for-the-fault-suite"
WINDOW_SECONDS = 30  # long enough for 51 logins on a loaded machine, short enough to wait out
BODY_BYTES = 200 * 1000 * 1000
PIECE = b"x" * (64 * 1024)
RSS_GROWTH_LIMIT_KB = 20 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One real `fleet serve` (webhook on, a short login window) over a source without hosts, and a user."""
    root = tmp_path_factory.mktemp("web-faults")
    cli = FleetCli(root / "data", make_source(root / "source", "all:\n  hosts: {}\n"), root)
    with store_of(cli):
        accounts.add_user("vera", PASSWORD, "viewer")
    serve = ServeProcess(cli, poll_seconds=2, env={"FLEET_WEBHOOK_SECRET": WEBHOOK_SECRET,
                                                   "FLEET_LOGIN_WINDOW_SECONDS": str(WINDOW_SECONDS)})
    serve.start()
    try:
        yield cli, serve
    finally:
        serve.stop()
    assert "Traceback" not in serve.log.read_text()


def store_of(cli: FleetCli):
    return open_store(load_settings(flags={"repo": str(cli.repo), "data_dir": str(cli.data_dir)}, environ={},
                                    cwd=cli.cwd))


# --- a 200 MB body ------------------------------------------------------------------------------

@dataclass
class Upload:
    status: int | None  # None: the server closed the connection without an answer we could read
    sent: int  # body bytes the client got into the socket before the server hung up
    seconds: float


def upload(port: int, path: str, chunked: bool) -> Upload:
    """Stream a 200 MB body from a generator over a raw socket; stop when the server hangs up."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % BODY_BYTES
    head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%s\r\n\r\n" % (
        path.encode(), framing)
    started, sent = time.monotonic(), 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for piece in body_pieces(chunked):
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return Upload(read_status(sock), sent, time.monotonic() - started)


def body_pieces(chunked: bool):
    for _ in range(BODY_BYTES // len(PIECE)):
        yield b"%x\r\n%s\r\n" % (len(PIECE), PIECE) if chunked else PIECE
    if chunked:
        yield b"0\r\n\r\n"


def read_status(sock: socket.socket) -> int | None:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else None


def peak_rss_kb(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM): any buffering would raise it."""
    with open(f"/proc/{pid}/status") as status_file:
        status = status_file.read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def signed_hook(serve: ServeProcess) -> int:
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    status, _ = serve.request("POST", "/api/v1/hooks/git", body,
                              {"X-Hub-Signature-256": signature, "Content-Type": "application/json"})
    return status


def test_a_200_mb_body_is_refused_without_being_buffered(served):
    cli, serve = served
    assert signed_hook(serve) == 202  # warm: the app has answered a hook and a page before the baseline
    assert Browser(serve).open("/login").status == 200
    baseline = peak_rss_kb(serve.proc.pid)
    kinds = [(path, chunked) for path in ("/api/v1/hooks/git", "/login") for chunked in (False, True)]
    with HealthWatch(serve, "web: 200 MB bodies (Content-Length and chunked) to the webhook and /login, "
                            "4 at once, 3 rounds") as watch:
        with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
            uploads = [(kind, pool.submit(upload, serve.port, *kind)) for kind in kinds * 3]
            uploads = [(kind, future.result()) for kind, future in uploads]
    growth = peak_rss_kb(serve.proc.pid) - baseline
    for (path, chunked), result in uploads:
        framing = "chunked" if chunked else "content-length"
        print(f"{path} {framing}: status {result.status}, {result.sent / 1e6:.1f} MB sent, "
              f"{result.seconds:.2f}s; peak RSS growth {growth} kB")
        assert result.status in (413, None), (path, framing, result)
        assert result.sent < BODY_BYTES // 10, f"{path} {framing}: the server read {result.sent} bytes"
    assert any(result.status == 413 for _, result in uploads), "waitress answers 413 where it can"
    assert growth < RSS_GROWTH_LIMIT_KB, f"peak RSS grew by {growth} kB"
    assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"
    assert signed_hook(serve) == 202  # and a webhook of the normal size still works


def test_the_413_of_an_announced_body_is_json(served):
    _, serve = served
    with socket.create_connection(("127.0.0.1", serve.port), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/hooks/git HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                     % BODY_BYTES)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"Content-Type: application/json" in head
    assert b'"error": "the request body is larger than fleet accepts (1048576 bytes)' in body


# --- 50 wrong passwords --------------------------------------------------------------------------

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 302 after login is the answer we want to see


class Browser:
    """A cookie-keeping client for the real login form."""

    def __init__(self, serve: ServeProcess):
        self.serve = serve
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect())

    def open(self, path: str, form: dict | None = None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            return self.opener.open(self.serve.url(path), data=data, timeout=30)
        except urllib.error.HTTPError as answer:
            return answer

    def log_in(self, name: str, password: str):
        page = self.open("/login").read().decode()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        return self.open("/login", {"name": name, "password": password, "csrf_token": csrf})


def audited(cli: FleetCli, action: str) -> list[tuple[str, str]]:
    with store_of(cli):
        return [(e.actor, e.remote_addr) for e in db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))]


def test_fifty_wrong_logins_lock_the_account_until_the_window_passes(served):
    cli, serve = served
    browser = Browser(serve)
    with HealthWatch(serve, "web: 50 wrong logins, then the right one, then the window passes") as watch:
        statuses = [browser.log_in("vera", f"guess number {n}").status for n in range(50)]
        right = browser.log_in("vera", PASSWORD)
        retry_after = int(right.headers["Retry-After"])
        refusal = right.read().decode()
        time.sleep(retry_after + 1)  # waiting the window out, as a user would
        later = browser.log_in("vera", PASSWORD)
    assert statuses == [401] * 5 + [429] * 45
    assert right.status == 429, "the right password is refused while the account is locked"
    assert 0 < retry_after <= WINDOW_SECONDS
    assert "too many failed logins for &#39;vera&#39;" in refusal
    assert audited(cli, "login.failed") == [("vera", "127.0.0.1")] * 5
    assert audited(cli, "login.throttled") == [("vera", "127.0.0.1")] * 46
    assert later.status == 302 and later.headers["Location"] == "/", "the account works after the window"
    assert browser.open("/api/v1/hosts").status == 200
    assert audited(cli, "login")[-1] == ("vera", "127.0.0.1")
    assert watch.longest_silence < 5, f"healthz went unanswered for {watch.longest_silence:.1f}s"
