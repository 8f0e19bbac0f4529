"""The Flask application: UI and JSON API over the store."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from fleet.settings import Settings, load_settings
from fleet.store import init_store


MAX_REQUEST_BYTES = 1024 * 1024  # webhooks are small; refuse anything larger with 413


def create_app(settings: Settings | None = None, test_config: dict | None = None) -> Flask:
    """App factory: settings decide the database; test_config overrides Flask config."""
    settings = settings or load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        FLEET_SETTINGS=settings,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
    )
    if test_config:
        app.config.update(test_config)
    init_store(app)
    from web import health, hooks

    app.register_blueprint(health.bp)
    app.register_blueprint(hooks.bp)
    app.register_error_handler(HTTPException, _json_error)
    return app


def _json_error(exc: HTTPException):
    """API errors are JSON {"error": ...} with the right status code."""
    return jsonify(error=exc.description or exc.name), exc.code
