"""The store: Flask-SQLAlchemy models and the queries the CLI, UI and API need."""

from fleet.store.db import db, init_store
from fleet.store.models import (
    Approval, ControllerState, Host, HostLock, Revision, Run, RunHost, RunOutput, SourceState, TaskResultRow,
)

__all__ = [
    "Approval", "ControllerState", "HostLock", "db", "init_store", "Host", "Revision", "Run", "RunHost", "RunOutput", "SourceState", "TaskResultRow",
]
