"""The Flask application: UI and JSON API over the store."""

from __future__ import annotations

from flask import Flask

from fleet.settings import Settings, load_settings
from fleet.store import init_store


def create_app(settings: Settings | None = None, test_config: dict | None = None) -> Flask:
    """App factory: settings decide the database; test_config overrides Flask config."""
    settings = settings or load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        FLEET_SETTINGS=settings,
    )
    if test_config:
        app.config.update(test_config)
    init_store(app)
    from web import health

    app.register_blueprint(health.bp)
    return app
