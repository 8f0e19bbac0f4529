"""`fleet serve`: the controller and the web UI/API in one process.

The web side runs under waitress (a production WSGI server) in a thread;
the controller loop runs in the main thread. SIGTERM or SIGINT stop both:
a running Ansible process is stopped (its whole process group) and its run
is marked canceled with the partial results kept.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from fleet import runner
from fleet.controller import Controller
from fleet.errors import ConfigError
from fleet.settings import Settings

log = logging.getLogger("fleet.serve")


def parse_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"FLEET_BIND must look like 127.0.0.1:8080, got {bind!r}")
    return host.strip("[]"), int(port)


def configure_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("paramiko").setLevel(logging.WARNING)  # one line per pre-flight probe otherwise


def run_service(settings: Settings, with_web: bool) -> None:
    """Run until SIGTERM/SIGINT; the controller always, the web server when asked."""
    from fleet.web import create_app

    configure_logging()
    app = create_app(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: _request_stop(stop, number))
    server = _start_web(app, settings) if with_web else None
    try:
        with app.app_context():
            Controller(settings, stop).run_forever()
    finally:
        if server is not None:
            server.close()
        closed = runner.close_connections(settings.control_path_dir)
        log.info("closed %d SSH connections", closed)
    log.info("stopped")


def _request_stop(stop: threading.Event, signum: int) -> None:
    log.info("received %s; stopping", signal.Signals(signum).name)
    stop.set()


def _start_web(app, settings: Settings):
    import waitress

    host, port = parse_bind(settings.bind)
    server = waitress.create_server(app, host=host, port=port, threads=8, ident="fleet")
    threading.Thread(target=server.run, name="web", daemon=True).start()
    log.info("web UI and API on http://%s:%s", host, port)
    return server
