"""Every error fleet raises on purpose, as one tree.

    FleetError                      something a user can act on; exit code 1
    ├── ConfigError                 a setting or flag is wrong
    ├── SourceError                 the git source cannot be fetched or read
    │   ├── RevisionRejected        a revision failed validation (or its signature is not trusted)
    │   ├── UnsafeSourceURL         the URL names a transport that can run commands; git is never called
    │   └── GitTimeout              a clone, fetch or ls-remote outlived FLEET_GIT_TIMEOUT and was killed
    ├── LabError                    lab hosts cannot be started or stopped
    ├── StoreError                  the database cannot be opened or written
    ├── HostBusy                    another run holds a host this run needs
    ├── NotFound                    a run, host or revision does not exist
    └── AccessDenied                a login, session or API token was refused
        └── Throttled               too many failures lately; retry after `retry_after` seconds

Each message is one sentence saying what happened, followed by what to do
next, so the CLI can print it as it is instead of a traceback.
"""


class FleetError(Exception):
    """Base of every error fleet expects and explains."""


class ConfigError(FleetError):
    """A setting, flag or fleet.toml value is invalid."""


class SourceError(FleetError):
    """The git source could not be fetched, resolved or exported."""


class RevisionRejected(SourceError):
    """A revision failed validation; nothing may run from it."""

    def __init__(self, sha: str, reason: str):
        super().__init__(f"revision {sha[:12]} was rejected: {reason}")
        self.sha = sha
        self.reason = reason


class UnsafeSourceURL(SourceError):
    """The source URL would let git run a command (ext::, an unknown helper, an option); refused before git runs."""


class GitTimeout(SourceError):
    """A git network operation took longer than FLEET_GIT_TIMEOUT; git and its helpers were killed."""


class LabError(FleetError):
    """Lab hosts could not be started or stopped on this machine."""


class StoreError(FleetError):
    """The store could not be opened or written."""


class StoreRefused(StoreError):
    """The database refused an operation or could not be reached (a constraint, a lock, a lost connection).

    Every such error of a store's engine arrives as one (fleet.store.db): code outside the store catches it,
    never the database library's own types; inside, it is also the library's error it stands for.
    """


class HostBusy(FleetError):
    """A host is locked by another run; never two runs on one host at once."""


class NotFound(FleetError):
    """A run, host or revision the user named does not exist."""


class AccessDenied(FleetError):
    """Credentials were refused: wrong, expired, revoked, or their owner is disabled."""


class Throttled(AccessDenied):
    """Too many failed logins or tokens for an account or from an address; nothing was checked."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
