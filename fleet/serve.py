"""`fleet serve`: the controller and the web UI/API in one process.

The web side runs under waitress (a production WSGI server) in a thread;
the controller loop runs in the main thread. SIGTERM or SIGINT stop both:
a running Ansible process is stopped (its whole process group) and its run
is marked canceled with the partial results kept.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Any

import waitress
from flask import Flask
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from fleet import runner, warm
from fleet.controller import Controller
from fleet.errors import ConfigError
from fleet.settings import Settings
from fleet.web import MAX_REQUEST_BYTES

log = logging.getLogger("fleet.serve")


def parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"FLEET_BIND must look like 127.0.0.1:8080, got {bind!r}")
    return host.strip("[]"), int(port)


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)  # one line per pre-flight probe otherwise


def run_service(settings: Settings, with_web: bool) -> None:
    """Run until SIGTERM/SIGINT; the controller always, the web server when asked."""
    from fleet.web import create_app

    configure_logging()
    app = create_app(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: _request_stop(stop, number))
    controller = Controller(settings, stop, store=app.extensions["fleet.store"])  # the web's store, shared
    app.extensions["fleet.controller"] = controller.status  # healthz reads it, never waiting on the loop
    server = _start_web(app, settings) if with_web else None
    try:
        controller.run_forever()
    finally:
        if server is not None:
            server.close()
        closed = runner.close_connections(settings.control_path_dir)
        log.info("closed %d SSH connections", closed)
        stopped = warm.stop_servers(str(settings.data_dir.resolve()))
        log.info("stopped %d kept Ansible processes", stopped)
    log.info("stopped")


def _request_stop(stop: threading.Event, signum: int) -> None:
    log.info("received %s; stopping", signal.Signals(signum).name)
    stop.set()


def _start_web(app: Flask, settings: Settings) -> Any:  # a waitress server (no type information)
    host, port = parse_bind(settings.bind)
    server = build_web_server(app, host, port)
    threading.Thread(target=server.run, name="web", daemon=True).start()
    log.info("web UI and API on http://%s:%s", host, port)
    return server


def build_web_server(app: Flask, host: str, port: int) -> Any:  # a waitress server (no type information)
    """A waitress server for the app that refuses oversized bodies before buffering them.

    waitress's own default buffers up to 1 GiB of body before Flask can say
    413; here waitress answers a Content-Length over the limit at once and
    stops a chunked body at the limit, then closes the connection, so a
    200 MB upload costs at most about one limit's worth of memory. Its error
    answers are JSON, like every other error of fleet's.
    """
    listeners: dict[str, Any] = {}
    server = waitress.create_server(
        app,
        map=listeners,
        host=host,
        port=port,
        threads=8,
        ident="fleet",
        # waitress refuses a body of max_request_body_size bytes or more, Flask one over MAX_REQUEST_BYTES:
        # one byte more makes both draw the line at the same place.
        max_request_body_size=MAX_REQUEST_BYTES + 1,
        max_request_header_size=MAX_HEADER_BYTES,
    )
    for listener in listeners.values():  # one per address the bind resolved to
        listener.channel_class = _JsonErrorChannel
    return server


MAX_HEADER_BYTES = 64 * 1024  # waitress allows 256 KiB; fleet's requests carry a cookie and a token


def waitress_error_json(code: int, reason: str, detail: str) -> bytes:
    """The body of an error waitress answers itself (before the app runs), shaped like the app's."""
    if code == 413:
        message = f"the request body is larger than fleet accepts ({MAX_REQUEST_BYTES} bytes); send less, or split it"
    else:
        message = f"{reason.lower()}: {detail}"
    return json.dumps({"error": message}).encode()


class _JsonErrorTask(ErrorTask):  # type: ignore[misc]  # waitress has no type information
    """waitress's own error answer (413, 431, 400 ...) as JSON; the connection still closes after it."""

    def execute(self) -> None:
        error = self.request.error
        body = waitress_error_json(error.code, error.reason, error.body)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _JsonErrorChannel(HTTPChannel):  # type: ignore[misc]  # waitress has no type information
    error_task_class = _JsonErrorTask
