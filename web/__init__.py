"""The Flask application: UI and JSON API over the store."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Hashable
from datetime import timedelta

from flask import Flask, current_app, has_app_context, jsonify, render_template, request
from flask.globals import app_ctx
from werkzeug.exceptions import HTTPException

from fleet.settings import Settings, load_settings
from fleet.store.db import Store, add_store_resolver

# Webhooks and forms are small; refuse anything larger with 413. fleet serve's waitress enforces
# the same cap before buffering a byte of the body, so this one only guards other WSGI servers.
MAX_REQUEST_BYTES = 1024 * 1024


def create_app(settings: Settings | None = None, test_config: dict | None = None) -> Flask:
    """App factory: settings decide the database; test_config overrides Flask config."""
    settings = settings or load_settings()
    from fleet.store.db import prepare_data_dir

    prepare_data_dir(settings)  # 0700, the SQLite files 0600: they hold diffs and output
    app = Flask(__name__)
    app.config.from_mapping(
        FLEET_SETTINGS=settings,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SECRET_KEY=load_secret_key(settings),
        SESSION_COOKIE_NAME="fleet_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Browsers drop Secure cookies over plain http; loopback (the demo) is the one place without TLS.
        SESSION_COOKIE_SECURE=not _serves_loopback(settings.bind),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    if test_config:
        app.config.update(test_config)
    attach_store(app, settings.database_url)
    from fleet.web import api, auth, health, hooks

    auth.init_auth(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(api.bp)
    app.register_error_handler(HTTPException, _json_error)
    from fleet.web import ui

    ui.init_app(app)  # the server-rendered pages
    return app


def attach_store(app: Flask, database_url: str) -> Store:
    """Open the store for this app: inside the app's contexts (each request has its own) `db` is this store,
    with one session per context, closed when the context ends."""
    store = Store.open(database_url)
    store.scope_of = _context_scope
    app.extensions["fleet.store"] = store
    app.extensions["fleet.schema"] = store.schema
    app.teardown_appcontext(lambda _error: store.end_session())
    add_store_resolver(_store_of_current_app)
    return store


def _store_of_current_app() -> Store | None:
    return current_app.extensions.get("fleet.store") if has_app_context() else None


def _context_scope() -> Hashable:
    """The session's scope: the app context (a request, or a block that pushed one), else the thread."""
    return id(app_ctx._get_current_object()) if has_app_context() else threading.get_ident()


def _json_error(exc: HTTPException):
    """API errors are JSON {"error": ...}; pages get a short HTML page; both with the right status
    and the headers the error carries (Allow, Retry-After, WWW-Authenticate)."""
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        response = jsonify(error=exc.description or exc.name)
    else:
        response = current_app.make_response(render_template("error.html", error=exc))
    response.status_code = exc.code
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def load_secret_key(settings: Settings) -> str:
    """FLEET_SECRET_KEY, or a random key generated once into the data directory (mode 0600)."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def _serves_loopback(bind: str) -> bool:
    host = bind.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
