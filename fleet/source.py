"""The git source, with GitPython only: fetch, resolve the ref, export a revision, path safety.

The source is mirrored into the data directory; each revision is exported
(`git archive`) into a directory of its own, written once and never
changed, so a run never reads a working tree that moves under it. What
Ansible makes of a revision (inventory, syntax) is asked of the runner, by
jobs.validate_revision.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import git

from fleet.errors import SourceError
from fleet.settings import Settings

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


def _git_env() -> dict[str, str]:
    # Never stop to ask for credentials: a controller has nobody to answer.
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true"}


def _git_message(exc: git.GitCommandError) -> str:
    stderr = (exc.stderr or "").strip().replace("stderr: ", "").strip("'\" \n")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else str(exc)
