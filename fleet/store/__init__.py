"""The store: models, reads (`queries`), writes (`records`), accounts, keyset pages and the views reads return.

Nothing outside this package touches `db.session`: the CLI, the web and the
controller call `queries` and `records`. Their reads, and the writes that hand
back what they wrote, return plain dataclasses (`views`), never ORM rows;
history lists return a `pages.Page` of them. A process opens the store with
`db.open_store(settings)` (the CLI) or binds it to its app with
`db.init_store(app)` (the web).
"""

from fleet.store.db import db, init_store, open_store
from fleet.store.models import (
    Approval,
    ControllerState,
    Host,
    HostLock,
    Revision,
    Run,
    RunHost,
    RunOutput,
    SourceState,
    TaskResultRow,
)
from fleet.store.pages import Page
from fleet.store.views import (
    ApprovalView,
    ControllerView,
    HostView,
    OutputView,
    RevisionView,
    RunHostView,
    RunView,
    SourceView,
    TaskView,
)

__all__ = [
    "Approval",
    "ApprovalView",
    "ControllerState",
    "ControllerView",
    "HostLock",
    "HostView",
    "OutputView",
    "Page",
    "RevisionView",
    "RunHostView",
    "RunView",
    "SourceView",
    "TaskView",
    "db",
    "init_store",
    "open_store",
    "Host",
    "Revision",
    "Run",
    "RunHost",
    "RunOutput",
    "SourceState",
    "TaskResultRow",
]
