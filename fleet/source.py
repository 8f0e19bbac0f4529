"""The git source, with GitPython only: fetch, resolve the ref, export a revision, path safety, signatures.

The source is mirrored into the data directory; each revision is exported
(`git archive`) into a directory of its own, written once and never
changed, so a run never reads a working tree that moves under it. What
Ansible makes of a revision (inventory, syntax) is asked of the runner, by
revisions.validate_revision.

The network is the dangerous part. The URL is checked before git ever sees
it (`ext::` and other helpers run commands). Every git command that talks to
the remote (clone, fetch, ls-remote) runs in a session of its own with a
deadline (FLEET_GIT_TIMEOUT) and a stop event: past either, git and every
helper it started (git-remote-http, ssh, ...) are killed, so a remote that
accepts and never answers cannot hold fleet, nor leave processes behind.
Those few commands run through subprocess rather than GitPython because
GitPython's own timeout kills only git's direct children.

Signatures are checked against trust kept in the data directory only
(`trust/gnupg` as GNUPGHOME, `trust/allowed_signers` for SSH), never against
anything the repository carries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import git

from fleet import filemodes, processes
from fleet.errors import GitTimeout, SourceError, UnsafeSourceURL
from fleet.settings import Settings

# git's %G? codes. "U" is a good signature by a key nobody said to trust: not good.
SIGNATURE_STATUS = {
    "G": "good",
    "U": "untrusted",
    "X": "expired",
    "Y": "expired",
    "R": "revoked",
    "B": "bad",
    "E": "unverifiable",
    "N": "unsigned",
}

# Transports git speaks itself; any other "<scheme>://" or "<helper>::" hands the URL to a helper program.
SAFE_SCHEMES = ("https", "http", "ssh", "git", "git+ssh", "ssh+git", "file")
SAFE_URL_HINT = "use https, ssh, git or a local path in FLEET_REPO"

# How often a waiting git command looks at its stop event.
_STOP_POLL_SECONDS = 0.25


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


@dataclass(frozen=True)
class Head:
    """What one fetch found: the mirror and the commit the configured ref points at."""

    repo: git.Repo
    info: CommitInfo


def trust_dir(settings: Settings) -> Path:
    return settings.data_dir / "trust"


def gnupg_home(settings: Settings) -> Path:
    """The GPG keyring fleet verifies with (GNUPGHOME); its keys need owner trust to count as trusted."""
    return trust_dir(settings) / "gnupg"


def allowed_signers_path(settings: Settings) -> Path:
    """SSH keys fleet trusts, in git's gpg.ssh.allowedSignersFile format."""
    return trust_dir(settings) / "allowed_signers"


def unsafe_url_problem(url: str) -> str:
    """Why git must not be pointed at `url` ('' for a URL of a transport git speaks itself, or a path)."""
    if any(ord(char) < 32 or ord(char) == 127 for char in url):
        return "contains control characters"
    if url.startswith("-"):
        return "starts with '-', which git would read as an option"
    helper = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)::", url)
    if helper:
        return f"uses the unsafe transport {helper.group(1)}::, which can run commands"
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if scheme and scheme.group(1).lower() not in SAFE_SCHEMES:
        return f"uses the unsafe transport {scheme.group(1)}://, which hands the URL to a helper program"
    if _host_of(url).startswith("-"):
        return "names a host starting with '-', which ssh would read as an option"
    return ""


def check_source_url(url: str) -> None:
    """Raise UnsafeSourceURL (a SourceError) when `url` is not safe to hand to git; before any git call."""
    problem = unsafe_url_problem(url)
    if problem:
        raise UnsafeSourceURL(f"the source URL {problem}; {SAFE_URL_HINT}")


def _host_of(url: str) -> str:
    if "://" in url:
        return urlsplit(url).netloc.rpartition("@")[2]
    if ":" in url and "/" not in url.split(":", 1)[0]:  # scp-like user@host:path
        return url.split(":", 1)[0].rpartition("@")[2]
    return ""


def display_url(url: str) -> str:
    """The URL with any password in it hidden (messages are stored and shown)."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


def fetch_head(settings: Settings, stop: threading.Event | None = None) -> Head:
    """Fetch the source and resolve the configured ref: everything a sync needs from the network.

    It touches no store, so the controller can run it in a thread of its own.
    """
    repo = fetch_source(settings, stop)
    return Head(repo=repo, info=resolve_ref(repo, settings, stop))


def fetch_source(settings: Settings, stop: threading.Event | None = None) -> git.Repo:
    """Clone the source as a bare mirror on first use, then fetch it; return the mirror."""
    check_source_url(settings.repo)
    path = mirror_path(settings)
    try:
        if not (path / "HEAD").exists():
            return _clone_mirror(settings, path, stop)
        repo = git.Repo(path)
        repo.remotes.origin.set_url(settings.repo)
        network_git(["fetch", "origin", "--prune", "--tags", "--force"], settings, cwd=path, stop=stop)
        return repo
    except git.GitCommandError as exc:
        raise SourceError(
            f"cannot fetch the git source {display_url(settings.repo)}: {_git_message(exc)}; "
            "check FLEET_REPO and that the repository is reachable"
        ) from exc


def _clone_mirror(settings: Settings, path: Path, stop: threading.Event | None) -> git.Repo:
    # Cloned beside the mirror and renamed into place, so a clone killed halfway leaves no mirror behind.
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".source-", dir=path.parent))
    try:
        network_git(["clone", "--mirror", "--", settings.repo, str(staging)], settings, stop=stop)
        staging.rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return git.Repo(path)


def network_git(
    args: list[str], settings: Settings, cwd: Path | None = None, stop: threading.Event | None = None
) -> str:
    """Run one git command that talks to a remote; its stdout.

    It runs in a session of its own, so killing it reaches every helper it
    started; that happens after FLEET_GIT_TIMEOUT (GitTimeout), when `stop`
    is set, or when the caller is interrupted. A failure is GitCommandError.
    """
    command = ["git", *args]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **_git_env()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = _wait_for_git(proc, settings.git_timeout, stop, args[0], settings.repo)
    except BaseException:
        _kill_git(proc)
        raise
    if proc.returncode != 0:
        raise git.GitCommandError(command, proc.returncode, err)
    return out


def _wait_for_git(
    proc: subprocess.Popen[str], timeout: int, stop: threading.Event | None, verb: str, url: str
) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return proc.communicate(timeout=min(_STOP_POLL_SECONDS, max(deadline - time.monotonic(), 0.01)))
        except subprocess.TimeoutExpired:
            pass
        if stop is not None and stop.is_set():
            raise SourceError(f"git {verb} of {display_url(url)} was stopped because fleet is stopping")
        if time.monotonic() >= deadline:
            raise GitTimeout(
                f"git {verb} of {display_url(url)} timed out after {timeout}s and was stopped "
                "(the remote did not answer); fleet retries with backoff; check that the remote answers, "
                "or raise FLEET_GIT_TIMEOUT"
            )


def _kill_git(proc: subprocess.Popen[str]) -> None:
    """Kill git and every process it started (its session is its own, so its group is too), then reap it."""
    if proc.poll() is None:
        processes.kill_tree(proc.pid)
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass  # a helper that escaped still holds a pipe: do not wait on it


def resolve_ref(repo: git.Repo, settings: Settings, stop: threading.Event | None = None) -> CommitInfo:
    """The commit FLEET_BRANCH names (branch, tag or sha), or the remote's default branch."""
    ref = settings.branch or _default_branch(repo, settings, stop)
    for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        try:
            commit = repo.commit(f"{candidate}^{{commit}}")
        except (git.BadName, ValueError, git.GitCommandError):
            continue
        return _commit_info(repo, commit, ref, settings)
    raise SourceError(f"the git source has no branch, tag or commit named {ref!r}; set FLEET_BRANCH to one that exists")


def _default_branch(repo: git.Repo, settings: Settings, stop: threading.Event | None) -> str:
    try:
        out = network_git(
            ["ls-remote", "--symref", "--", settings.repo, "HEAD"], settings, cwd=Path(repo.git_dir), stop=stop
        )
        match = re.search(r"^ref: refs/heads/(\S+)\s+HEAD", out, re.MULTILINE)
        if match:
            return match.group(1)
    except git.GitCommandError:
        pass  # the mirror's own HEAD answers instead (a timeout is raised: the remote hangs)
    try:
        return repo.head.reference.name.removeprefix("refs/heads/")
    except TypeError as exc:
        raise SourceError("cannot tell the source's default branch; set FLEET_BRANCH") from exc


def _commit_info(repo: git.Repo, commit: git.Commit, ref: str, settings: Settings) -> CommitInfo:
    code = repo.git.log("-1", "--format=%G?", commit.hexsha, env=_trust_env(settings)).strip() or "N"
    return CommitInfo(
        sha=commit.hexsha,
        author=f"{commit.author.name} <{commit.author.email}>",
        authored_at=datetime.fromtimestamp(commit.authored_date, tz=UTC),
        message=str(commit.message).strip(),
        signature=SIGNATURE_STATUS.get(code, "unverifiable"),
        ref=ref,
    )


def _trust_env(settings: Settings) -> dict[str, str]:
    # Only the data directory's trust counts: not the user's keyring, nor any git config's signers file.
    return {
        "GNUPGHOME": str(gnupg_home(settings)),
        **_config_env({"gpg.ssh.allowedSignersFile": str(allowed_signers_path(settings))}),
    }


# The prefix of a rejection for the signature alone: such a commit is judged again once trust changes.
SIGNATURE_REJECTION = "signature "

_SIGNATURE_FIXES = {
    "unsigned": "the commit is not signed",
    "untrusted": "the commit is signed by a key fleet does not trust",
    "expired": "the commit's signature or its key has expired",
    "revoked": "the commit is signed by a revoked key",
    "bad": "the commit's signature does not match its content",
    "unverifiable": "the commit's signature cannot be checked (its key is not in fleet's keyring)",
}


def signature_problem(settings: Settings, info: CommitInfo) -> str:
    """Why require_signed_commits refuses this commit ('' when the setting is off or the signature is good)."""
    if not settings.require_signed_commits or info.signature == "good":
        return ""
    why = _SIGNATURE_FIXES.get(info.signature, "the commit's signature is not good")
    return (
        f"{SIGNATURE_REJECTION}{info.signature}: {why}, and require_signed_commits is on; sign it with a "
        f"trusted key, trusted keys being SSH keys in {allowed_signers_path(settings)} and GPG keys "
        f"with owner trust in the keyring {gnupg_home(settings)}"
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
                # The "data" filter refuses links that point outside the tree; the modes stay the owner's
                # alone (the archive's 0644 would otherwise win over fleet's private umask).
                tar.extractall(staging, filter=filemodes.private_tar_filter)
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
    # Never stop to ask for credentials: a controller has nobody to answer. And never ext::, whatever
    # the user's git config says (the URL check refused it already; this is the second lock).
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/true",
        "LC_ALL": "C",
        **_config_env({"protocol.ext.allow": "never"}),
    }


def _config_env(values: dict[str, str]) -> dict[str, str]:
    """git configuration passed in the environment (as `git -c` would, above every config file)."""
    env = {"GIT_CONFIG_COUNT": str(len(values))}
    for index, (key, value) in enumerate(values.items()):
        env[f"GIT_CONFIG_KEY_{index}"], env[f"GIT_CONFIG_VALUE_{index}"] = key, value
    return env


def _git_message(exc: git.GitCommandError) -> str:
    stderr = (exc.stderr or "").strip().replace("stderr: ", "").strip("'\" \n")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else str(exc)
