"""Which revision the fleet should match: fetch the source, export and validate each new head once, and the
desired state a run starts from (the revision, its exported tree, its inventory's hosts).

    fetch -> export (+ requirements) -> validate (paths, inventory, syntax, fleet.yml) -> record -> desired

A head that fails validation is recorded as rejected and raised as RevisionRejected; the last good revision
stays desired. Ansible is reached only through a `runner.Runner` (`runner=`, default the real one), so this
is tested with `fake_runner.FakeRunner`. Running a revision is `fleet.jobs`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import git
import yaml

from fleet import policy, source
from fleet.errors import FleetError, RevisionRejected, SourceError
from fleet.hostkeys import Probe
from fleet.runner import (
    COLLECTIONS_DIR,
    ROLES_DIR,
    AnsibleRunner,
    CancelFn,
    EventFn,
    InventoryHost,
    JobSpec,
    Runner,
    RunnerOutcome,
    ansible_cfg,
)
from fleet.settings import Settings
from fleet.store import queries, records
from fleet.store.views import RevisionView, view_of
from fleet.vocabulary import RevisionStatus

if TYPE_CHECKING:
    from fleet.remote_stop import HostStop

log = logging.getLogger("fleet.revisions")


@dataclass(frozen=True)
class RevisionSummary:
    """A validated revision as callers read it; attribute names are the store's."""

    sha: str
    status: str  # valid | rejected
    error: str
    rewrites_history: bool


@dataclass(frozen=True)
class DesiredState:
    """The revision the fleet should match, its exported tree and its inventory."""

    revision: RevisionSummary
    tree: Path
    hosts: tuple[InventoryHost, ...]


@dataclass(frozen=True)
class Validation:
    """Whether a revision may run; if not, why (file and line where Ansible says)."""

    ok: bool
    error: str = ""
    hosts: tuple[InventoryHost, ...] = ()


def default_runner(settings: Settings) -> Runner:
    """The real Ansible boundary, set up from the settings (what every `runner=None` means), its static
    inventories' listings kept for later processes."""
    runner = AnsibleRunner.for_settings(settings)
    return KeptListings(runner, settings.data_dir / KEPT_DIR, settings.vault_password_file)


@functools.lru_cache(maxsize=16)
def load_policy(tree: Path) -> policy.Policy:
    """fleet.yml of an exported revision, parsed once: exports never change, and Policy is frozen."""
    path = tree / "fleet.yml"
    return policy.parse_policy(path.read_text(errors="replace") if path.exists() else None)


def sync_source(settings: Settings, runner: Runner | None = None) -> DesiredState:
    """Fetch the source, validate its head once, and return the desired state.

    A head that fails validation (or, with require_signed_commits, is not
    signed by a trusted key) is recorded as rejected and raised as
    RevisionRejected; the last good revision stays desired.
    """
    return adopt_fetch(settings, lambda: source.fetch_head(settings), runner)


def adopt_fetch(settings: Settings, fetch: Callable[[], source.Head], runner: Runner | None = None) -> DesiredState:
    """Record what `fetch` brought (its head, or the SourceError it raises) and return the desired state.

    The network half of a sync (`source.fetch_head`) touches no store, so the
    controller runs it in a thread and hands its outcome here as `fetch`.
    """
    runner = runner or default_runner(settings)
    shown = source.display_url(settings.repo)  # a password in the URL is never stored
    try:
        head = fetch()
    except SourceError as exc:
        records.record_fetch(shown, None, None, error=str(exc))
        raise
    repo, info = head.repo, head.info
    revision = _judged_revision(repo, settings, info, runner)
    if revision.status == RevisionStatus.REJECTED:
        records.record_fetch(shown, info.sha, None)
        raise RevisionRejected(info.sha, _error_then_hint(revision.error, _withdraw_if_desired(info.sha)))
    revision = _judge_history_again(repo, revision)
    tree = prepare_export(repo, settings, info.sha, runner)
    hosts = inventory_hosts(tree, settings, runner)  # listed once already, by the validation
    records.sync_hosts(hosts)
    records.record_fetch(shown, info.sha, info.sha)
    return DesiredState(revision=view_of(RevisionSummary, revision), tree=tree, hosts=tuple(hosts))


def _error_then_hint(error: str, hint: str) -> str:
    """The error followed by what stays desired (``hint``, "; ..."): after an error of several lines
    (fleet.yml's mistakes, one a line) on a line of its own, where it would read as part of the last one."""
    if "\n" in error:
        return f"{error}\n{hint.removeprefix('; ')}"
    return f"{error}{hint}"


def _withdraw_if_desired(sha: str) -> str:
    """What stays desired once `sha` is rejected, said as the end of the message.

    Only a signature judged again (trust removed, require_signed_commits
    switched on) can reject the desired revision itself; then nothing is
    desired until a commit passes, rather than running one that no longer does.
    """
    if queries.desired_sha() != sha:
        return _last_good_hint()
    records.withdraw_desired()
    return "; it was the desired revision, so nothing runs until a commit that passes lands"


def _judged_revision(repo: git.Repo, settings: Settings, info: source.CommitInfo, runner: Runner) -> RevisionView:
    """The stored verdict on a commit: validated once, but its signature judged on every fetch.

    Trust lives in the data directory and may change (a key added, the
    setting switched on), so an untrusted commit is refused before anything
    of it is exported or read by Ansible (an inventory script would run), and
    one refused for its signature alone is validated once it is trusted.
    """
    stored = queries.get_revision(info.sha)
    problem = source.signature_problem(settings, info)
    if problem:
        if stored is None or stored.status != RevisionStatus.REJECTED or stored.error != problem:
            stored = records.record_revision(
                info, ok=False, error=problem, rewrites_history=_rewrites_history(repo, info.sha)
            )
        return stored
    if stored is None or stored.error.startswith(source.SIGNATURE_REJECTION):
        return _record_validation(repo, settings, info, runner)
    return stored


def desired_state(settings: Settings, runner: Runner | None = None) -> DesiredState:
    """The desired revision as the store knows it, without fetching (the controller's runs)."""
    sha = queries.desired_sha()
    revision = queries.get_revision(sha) if sha else None
    if sha is None or revision is None:
        raise FleetError("no revision of the source has validated yet; fix the source, then the controller fetches it")
    runner = runner or default_runner(settings)
    tree = source.export_path(settings, sha)
    if not tree.exists():
        tree = source.export_revision(source.fetch_source(settings), settings, sha)
    install_requirements(tree, runner)  # at once when installed already (an export pruned is exported again)
    reread_dynamic_inventories()  # a run of the controller lists a dynamic inventory afresh
    hosts = inventory_hosts(tree, settings, runner)
    if is_dynamic_inventory(tree / settings.inventory):
        records.sync_hosts(hosts)  # hosts the source added or dropped since the last run show in status now
    return DesiredState(revision=view_of(RevisionSummary, revision), tree=tree, hosts=tuple(hosts))


def inventory_hosts(
    tree: Path, settings: Settings, runner: Runner | None = None, limit: str | None = None
) -> list[InventoryHost]:
    """Hosts of an exported revision matching `limit` (all without one).

    An export never changes, so a static inventory is listed by Ansible once
    per (revision, limit) and process, and reused: by validation, sync, target
    resolution. A dynamic one (a script or plugin) answers from outside the
    revision, so its listing is reused only until the next run starts
    (`reread_dynamic_inventories`): within one run, never across runs.
    """
    generation = _inventory_generation if is_dynamic_inventory(tree / settings.inventory) else 0
    return list(_listing(runner or default_runner(settings), tree, settings.inventory, limit, generation))


# Bumped when a run starts: the key under which dynamic inventories' listings are cached.
_inventory_generation = 0


def reread_dynamic_inventories() -> None:
    """Make the next listing of any dynamic inventory ask its script or plugin again (static ones stay cached)."""
    global _inventory_generation
    _inventory_generation += 1


@functools.lru_cache(maxsize=64)
def _listing(
    runner: Runner, tree: Path, inventory: str, limit: str | None, generation: int
) -> tuple[InventoryHost, ...]:
    return tuple(runner.list_inventory(tree, inventory, limit))


# What Ansible said once about a static inventory (its listings), so that later processes need not ask again:
# in the export, or in the data directory for every export whose inventory files are the same.
KEPT_DIR = ".fleet-kept"


@dataclass(frozen=True)
class KeptListings:
    """A Runner whose listings of a static inventory outlive the process (`kept_listing`); the rest it passes on."""

    runner: Runner
    kept_in: Path  # the data directory's share, for exports whose inventory files are the same
    vault_password_file: str | None = None

    def list_inventory(self, tree: Path, inventory: str, limit: str | None = None) -> list[InventoryHost]:
        if is_dynamic_inventory(tree / inventory):  # it answers from outside the export: ask it each time
            return self.runner.list_inventory(tree, inventory, limit)
        return list(kept_listing(self.runner, tree, inventory, limit, self.kept_in, self.vault_password_file))

    def syntax_problem(self, tree: Path, playbook: str, inventory: str) -> str:
        return self.runner.syntax_problem(tree, playbook, inventory)

    def install_requirements(self, tree: Path) -> str:
        return self.runner.install_requirements(tree)

    def probe_hosts(self, hosts: list[InventoryHost]) -> dict[str, Probe]:
        return self.runner.probe_hosts(hosts)

    def run_job(self, spec: JobSpec, on_event: EventFn, should_cancel: CancelFn = lambda: False) -> RunnerOutcome:
        return self.runner.run_job(spec, on_event, should_cancel)

    def stop_remote_work(
        self,
        hosts: list[InventoryHost],
        touched: set[str],
        spec: JobSpec | None = None,
        keep_alive: Callable[[], None] = lambda: None,
    ) -> dict[str, HostStop]:
        return self.runner.stop_remote_work(hosts, touched, spec, keep_alive)


def kept_listing(
    runner: Runner, tree: Path, inventory: str, limit: str | None, shared_dir: Path, vault_password_file: str | None
) -> tuple[InventoryHost, ...]:
    """The listing of a static inventory as a process listed it before under the same conditions (ANSIBLE_*
    environment, ansible.cfg, vault password), else from Ansible and then kept.

    An export never changes, so neither does what Ansible lists from it under those conditions; `fleet check`
    is a new process each time, and this spares each one an ansible-inventory run. A new commit that leaves the
    inventory's files as they were (and brings no ansible.cfg or requirements of its own) finds the listing of
    an earlier export in `shared_dir`, so its first check does not list again either.
    """
    conditions = _conditions_key(vault_password_file, tree, inventory, limit or "")
    content = inventory_content_key(tree, inventory)
    path = (
        shared_dir / f"inventory-{content}-{conditions}.json"
        if content
        else tree / KEPT_DIR / f"inventory-{conditions}.json"
    )
    try:
        return tuple(
            InventoryHost(**{**host, "groups": tuple(host["groups"]), "ssh_args": tuple(host["ssh_args"])})
            for host in json.loads(path.read_text())
        )
    except (OSError, ValueError, TypeError, KeyError):
        pass  # not listed yet (or unreadable): ask Ansible
    hosts = tuple(runner.list_inventory(tree, inventory, limit))
    _keep(path, json.dumps([dataclasses.asdict(host) for host in hosts]))
    return hosts


def _conditions_key(vault: str | None, tree: Path, *names: str) -> str:
    """A digest of everything besides the export that can change what Ansible lists or parses from it."""
    cfg = ansible_cfg(tree, dict(os.environ))
    parts = [
        *names,
        sorted((k, v) for k, v in os.environ.items() if k.startswith("ANSIBLE_")),
        _file_digest(cfg),
        vault or "",
        _file_digest(Path(vault) if vault else None),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def inventory_content_key(tree: Path, inventory: str) -> str:
    """A digest of every file a static inventory's listing is read from: the inventory (a file or a directory),
    the group_vars/ and host_vars/ beside it and at the top of the tree. '' when the listing may depend on more
    of the tree: an ansible.cfg or requirements installed in it can bring plugins that read other files.
    """
    if any((tree / name).exists() for name in ("ansible.cfg", COLLECTIONS_DIR, ROLES_DIR)):
        return ""
    source = tree / inventory
    base = source if source.is_dir() else source.parent
    roots = {source, base / "group_vars", base / "host_vars", tree / "group_vars", tree / "host_vars"}
    files = sorted({file for root in roots for file in _files_under(root)})
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(tree)}\0{_file_digest(file)}\0".encode())
    return digest.hexdigest()[:32]


def _files_under(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return [path for path in root.rglob("*") if path.is_file()] if root.is_dir() else []


def _file_digest(path: Path | None) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else ""
    except OSError:
        return ""


def _keep(path: Path, text: str) -> None:
    """Write `text` at `path` whole or not at all (processes may read it at once)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(text)
        staging.replace(path)
    except OSError as exc:  # a read-only export still runs; the next process lists again
        log.warning("could not keep %s: %s", path, exc)


@functools.lru_cache(maxsize=64)
def is_dynamic_inventory(path: Path) -> bool:
    """Does the inventory at `path` (a file or a directory of them) take hosts from outside the revision?

    Dynamic: an executable file (Ansible's script plugin runs it) or a YAML
    file with a top-level `plugin:` key (an inventory plugin). group_vars/ and
    host_vars/ hold variables, never sources. Cached: an export never changes.
    """
    if path.is_file():
        return _is_dynamic_source(path)
    if not path.is_dir():
        return False
    sources = (p for p in path.rglob("*") if p.is_file() and not {"group_vars", "host_vars"} & set(p.parts))
    return any(_is_dynamic_source(p) for p in sources)


def _is_dynamic_source(path: Path) -> bool:
    if os.access(path, os.X_OK):
        return True
    if path.suffix not in (".yml", ".yaml"):
        return False
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except (yaml.YAMLError, OSError):  # Ansible reports it when it lists the inventory
        return False
    return isinstance(data, dict) and "plugin" in data


def prepare_export(repo: git.Repo, settings: Settings, sha: str, runner: Runner) -> Path:
    """Export `sha` and install the collections and roles its requirements name into the export (once).

    SourceError when they cannot be installed, naming them: nothing may run from a revision
    whose playbooks would not find their modules.
    """
    tree = source.export_revision(repo, settings, sha)
    install_requirements(tree, runner)
    return tree


def install_requirements(tree: Path, runner: Runner) -> None:
    """The requirements of the export at `tree` installed into it; SourceError naming what could not be."""
    problem = runner.install_requirements(tree)
    if problem:
        raise SourceError(problem)


def validate_revision(tree: Path, settings: Settings, runner: Runner | None = None) -> Validation:
    """Check an exported revision before anything runs from it: safe paths, inventory, syntax, fleet.yml."""
    runner = runner or default_runner(settings)
    for label, relative in (("playbook", settings.playbook), ("inventory", settings.inventory)):
        problem = source.unsafe_path_problem(tree, relative)
        if problem:
            return Validation(False, f"{label} path {relative!r} {problem}")
    # Two Ansible processes that do not depend on each other: on a machine with two cores, at once.
    with ThreadPoolExecutor(max_workers=2) as pool:
        syntax = pool.submit(runner.syntax_problem, tree, settings.playbook, settings.inventory)
        try:
            hosts = inventory_hosts(tree, settings, runner)
        except SourceError as exc:
            return Validation(False, str(exc))  # the inventory's problem first, as Ansible would stop there
        problem = syntax.result() or policy_problem(tree)
    if problem:
        return Validation(False, problem)
    return Validation(True, hosts=tuple(hosts))


def policy_problem(tree: Path) -> str:
    """Why fleet.yml (optional) is not a valid policy ('' when it is fine or absent)."""
    try:
        load_policy(tree)
    except policy.PolicyError as exc:
        return str(exc)
    return ""


def _record_validation(repo: git.Repo, settings: Settings, info: source.CommitInfo, runner: Runner) -> RevisionView:
    """Validate a commit seen for the first time and store the verdict with it (each commit once)."""
    try:
        tree = prepare_export(repo, settings, info.sha, runner)
    except SourceError as exc:
        error = str(exc)
    else:
        error = validate_revision(tree, settings, runner).error
    return records.record_revision(info, ok=not error, error=error, rewrites_history=_rewrites_history(repo, info.sha))


def _rewrites_history(repo: git.Repo, sha: str) -> bool:
    """Does ``sha`` not descend from the revision the fleet was last converged to?"""
    converged = queries.last_converged_sha()
    if not converged:
        return False
    return converged != sha and not source.is_ancestor(repo, converged, sha)


def _judge_history_again(repo: git.Repo, revision: RevisionView) -> RevisionView:
    """The history flag judged again each time a revision becomes desired, not only when first seen: a
    force-push back to a commit seen long ago makes it desired after later ones were converged.
    (The flag is what the revisions page shows; the controller decides per host, see plan.remediate.)"""
    if queries.desired_sha() == revision.sha:
        return revision
    rewrites = _rewrites_history(repo, revision.sha)
    return revision if rewrites == revision.rewrites_history else records.note_rewrites_history(revision.sha, rewrites)


def _last_good_hint() -> str:
    good = queries.last_valid_revision()
    if good is None:
        return "; no earlier revision validated, so nothing runs until a fixed commit lands"
    return f"; the desired revision stays {good.sha[:12]} (the last good one); fix the source and commit again"
