"""The git source: fetch, resolve the ref, export a revision, validate it.

The source is mirrored into the data directory; each revision is exported
(`git archive`) into a directory of its own, written once and never
changed, so a run never reads a working tree that moves under it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import git

from fleet.errors import SourceError
from fleet.policy import PolicyError, parse_policy
from fleet.runner import ansible_bin_dir, ansible_env
from fleet.settings import Settings

VALIDATION_TIMEOUT = 300
ORIGIN = re.compile(r"Origin: (?P<file>\S+?):(?P<line>\d+):(?P<column>\d+)")
SIGNATURE_STATUS = {"G": "good", "U": "good", "X": "expired", "Y": "expired", "R": "revoked",
                    "B": "bad", "E": "unverifiable", "N": "unsigned"}


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    authored_at: datetime
    message: str
    signature: str
    ref: str


@dataclass(frozen=True)
class InventoryHost:
    name: str
    address: str
    port: int
    groups: tuple[str, ...]


@dataclass
class Validation:
    ok: bool
    error: str = ""
    hosts: list[InventoryHost] = field(default_factory=list)


def mirror_path(settings: Settings) -> Path:
    return settings.data_dir / "source.git"


def export_path(settings: Settings, sha: str) -> Path:
    return settings.data_dir / "revisions" / sha


def fetch_source(settings: Settings) -> git.Repo:
    """Clone the source as a bare mirror on first use, then fetch it; return the mirror."""
    path = mirror_path(settings)
    try:
        if not (path / "HEAD").exists():
            if path.exists():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            return git.Repo.clone_from(settings.repo, path, mirror=True, env=_git_env())
        repo = git.Repo(path)
        repo.remotes.origin.set_url(settings.repo)
        repo.git.fetch("origin", "--prune", "--tags", "--force", env=_git_env())
        return repo
    except git.GitCommandError as exc:
        raise SourceError(
            f"cannot fetch the git source {settings.repo}: {_git_message(exc)}; "
            "check FLEET_REPO and that the repository is reachable"
        ) from exc


def resolve_ref(repo: git.Repo, settings: Settings) -> CommitInfo:
    """The commit FLEET_BRANCH names (branch, tag or sha), or the remote's default branch."""
    ref = settings.branch or _default_branch(repo, settings)
    for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        try:
            commit = repo.commit(f"{candidate}^{{commit}}")
        except (git.BadName, ValueError, git.GitCommandError):
            continue
        return _commit_info(repo, commit, ref)
    raise SourceError(
        f"the git source has no branch, tag or commit named {ref!r}; set FLEET_BRANCH to one that exists"
    )


def _default_branch(repo: git.Repo, settings: Settings) -> str:
    try:
        out = repo.git.ls_remote("--symref", settings.repo, "HEAD", env=_git_env())
        match = re.search(r"^ref: refs/heads/(\S+)\s+HEAD", out, re.MULTILINE)
        if match:
            return match.group(1)
    except git.GitCommandError:
        pass
    try:
        return repo.head.reference.name.removeprefix("refs/heads/")
    except TypeError as exc:
        raise SourceError("cannot tell the source's default branch; set FLEET_BRANCH") from exc


def _commit_info(repo: git.Repo, commit: git.Commit, ref: str) -> CommitInfo:
    code = repo.git.log("-1", "--format=%G?", commit.hexsha).strip() or "N"
    return CommitInfo(
        sha=commit.hexsha,
        author=f"{commit.author.name} <{commit.author.email}>",
        authored_at=datetime.fromtimestamp(commit.authored_date, tz=timezone.utc),
        message=str(commit.message).strip(),
        signature=SIGNATURE_STATUS.get(code, "unverifiable"),
        ref=ref,
    )


def is_ancestor(repo: git.Repo, older: str, newer: str) -> bool:
    """Does `newer` descend from `older`? (False also when `older` is gone from the history.)"""
    try:
        repo.git.merge_base("--is-ancestor", older, newer)
        return True
    except git.GitCommandError:
        return False


def changed_paths(settings: Settings, older: str, newer: str) -> frozenset[str] | None:
    """Repository paths that differ between two revisions of the mirror (None when either is unknown)."""
    path = mirror_path(settings)
    if not (path / "HEAD").exists():
        return None
    try:
        names = git.Repo(path).git.diff("--name-only", "--no-renames", older, newer)
    except git.GitCommandError:
        return None
    return frozenset(line for line in names.splitlines() if line)


def export_revision(repo: git.Repo, settings: Settings, sha: str) -> Path:
    """Write the tree of `sha` into its own directory (once) and return it."""
    target = export_path(settings, sha)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=target.parent))
    try:
        with tempfile.TemporaryFile() as archive:
            repo.archive(archive, treeish=sha, format="tar")
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
                # The "data" filter refuses links that point outside the tree.
                tar.extractall(staging, filter="data")
        staging.rename(target)
    except tarfile.FilterError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise SourceError(f"{exc}; a source may not link outside its own tree") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def validate_revision(tree: Path, settings: Settings) -> Validation:
    """Check an exported revision before anything runs from it."""
    for label, relative in (("playbook", settings.playbook), ("inventory", settings.inventory)):
        problem = unsafe_path_problem(tree, relative)
        if problem:
            return Validation(False, f"{label} path {relative!r} {problem}")
    try:
        hosts = list_inventory(tree, settings)
    except SourceError as exc:
        return Validation(False, str(exc))
    problem = syntax_problem(tree, settings) or policy_problem(tree)
    if problem:
        return Validation(False, problem)
    return Validation(True, hosts=hosts)


def policy_problem(tree: Path) -> str:
    """Why fleet.yml (optional) is not a valid policy ('' when it is fine or absent)."""
    path = tree / "fleet.yml"
    if not path.exists():
        return ""
    try:
        parse_policy(path.read_text(errors="replace"), origin="fleet.yml")
    except PolicyError as exc:
        return str(exc)
    return ""


def unsafe_path_problem(tree: Path, relative: str) -> str:
    """Why `relative` may not be used inside `tree` ('' when it is fine)."""
    parts = PurePosixPath(relative)
    if parts.is_absolute():
        return "is absolute; it must be relative to the repository"
    if ".." in parts.parts:
        return "climbs out of the repository with '..'"
    full = tree / relative
    resolved = full.resolve()
    if resolved != tree.resolve() and tree.resolve() not in resolved.parents:
        return "is a symlink that points outside the repository"
    if not full.exists():  # also catches a symlink that points nowhere
        return "does not exist in this revision"
    return ""


def list_inventory(tree: Path, settings: Settings, limit: str | None = None) -> list[InventoryHost]:
    """Hosts of the revision's inventory (matching `limit`), with groups and SSH address."""
    command = [str(ansible_bin_dir() / "ansible-inventory"), "-i", str(tree / settings.inventory), "--list"]
    if limit:
        command += ["--limit", limit]
    command += _vault_args(settings)
    proc = _run_ansible(command, tree, settings)
    if proc.returncode != 0:
        raise SourceError(f"inventory does not parse: {clean_ansible_error(proc.stderr, tree)}")
    try:
        listing = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise SourceError(f"ansible-inventory printed something that is not JSON ({exc})") from exc
    return hosts_from_listing(listing)


def hosts_from_listing(listing: dict) -> list[InventoryHost]:
    """Turn `ansible-inventory --list` JSON into InventoryHosts; only connection facts are kept."""
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    groups: dict[str, set[str]] = {}
    for group in listing:
        if group != "_meta" and isinstance(listing[group], dict):
            for host in _group_hosts(listing, group):
                groups.setdefault(host, set()).add(group)
    names = sorted(set(groups) | set(hostvars))
    return [
        InventoryHost(
            name=name,
            address=str(hostvars.get(name, {}).get("ansible_host", name)),
            port=int(hostvars.get(name, {}).get("ansible_port", 22)),
            groups=tuple(sorted(groups.get(name, set()) - {"all", "ungrouped"})),
        )
        for name in names
    ]


def _group_hosts(listing: dict, group: str, seen: set[str] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    body = listing.get(group, {})
    hosts = set(body.get("hosts", []))
    for child in body.get("children", []):
        hosts |= _group_hosts(listing, child, seen)
    return hosts


def syntax_problem(tree: Path, settings: Settings) -> str:
    command = [
        str(ansible_bin_dir() / "ansible-playbook"), "--syntax-check",
        "-i", str(tree / settings.inventory), settings.playbook, *_vault_args(settings),
    ]
    proc = _run_ansible(command, tree, settings)
    if proc.returncode != 0:
        return f"playbook syntax check failed: {clean_ansible_error(proc.stderr or proc.stdout, tree)}"
    return ""


def clean_ansible_error(text: str, tree: Path) -> str:
    """Ansible's error text, trimmed, with paths made relative to the repository."""
    text = text.replace(f"{tree}/", "").replace(str(tree), ".")
    # Ansible 2.19 says "Origin: file.yml:31:1"; say it in words a reader scans for.
    text = ORIGIN.sub(lambda m: f"in {m['file']}, line {m['line']}, column {m['column']}", text)
    lines = [line.rstrip() for line in text.splitlines()]
    keep = [line for line in lines if line.strip() and "interpreter_discovery" not in line]
    return "\n".join(keep[:25]).strip() or "Ansible gave no message"


def _run_ansible(command: list[str], tree: Path, settings: Settings) -> subprocess.CompletedProcess:
    env = {**os.environ, **ansible_env(settings.known_hosts_path, settings.control_path_dir)}
    try:
        return subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True,
            timeout=VALIDATION_TIMEOUT, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"{Path(command[0]).name} took over {VALIDATION_TIMEOUT}s") from exc


def _vault_args(settings: Settings) -> list[str]:
    return ["--vault-password-file", settings.vault_password_file] if settings.vault_password_file else []


def _git_env() -> dict[str, str]:
    # Never stop to ask for credentials: a controller has nobody to answer.
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true"}


def _git_message(exc: git.GitCommandError) -> str:
    stderr = (exc.stderr or "").strip().replace("stderr: ", "").strip("'\" \n")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else str(exc)
