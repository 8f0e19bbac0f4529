"""The store: models, reads (`queries`), writes (`records`), accounts, keyset pages and the views reads return.

Nothing outside this package touches `db.session`: the CLI, the web and the
controller call `queries` and `records`. Their reads, and the writes that hand
back what they wrote, return plain dataclasses (`views`), never ORM rows;
history lists return a `pages.Page` of them. A process opens the store with
`db.open_store(settings)` (bound to its thread for the block) or `db.Store.open(url)`;
the web attaches one to its app (fleet.web), and `db` then means the store of the request.
"""

from fleet.store.db import Store, db, open_store
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
    "Store",
    "open_store",
    "Host",
    "Revision",
    "Run",
    "RunHost",
    "RunOutput",
    "SourceState",
    "TaskResultRow",
]
