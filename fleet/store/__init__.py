"""The store: Flask-SQLAlchemy models and the queries the CLI, UI and API need."""

from fleet.store.db import db, init_store
from fleet.store.models import Host, Revision, Run, RunHost, RunOutput, SourceState, TaskResultRow

__all__ = [
    "db", "init_store", "Host", "Revision", "Run", "RunHost", "RunOutput", "SourceState", "TaskResultRow",
]
