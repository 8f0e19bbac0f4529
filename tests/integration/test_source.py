"""Validation of real git sources, through the `fleet` command (no hosts needed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.conftest import FleetCli, FleetResult, free_port, git, make_source, wait_for


def fleet_for(tmp_path, repo, *extra_env) -> FleetCli:
    return FleetCli(tmp_path / "data", repo, tmp_path)


def revisions(cli) -> dict:
    result = cli("revisions", "--json")
    assert result.code == 0, result.stderr
    return result.json()


def test_playbook_syntax_error_is_rejected_with_file_and_line(tmp_path, tmp_source):
    site = tmp_source / "playbooks" / "site.yml"
    site.write_text(site.read_text() + "\n- hosts: all\n  tasks:\n    - ansible.builtin.copy: {dest: /x\n")
    git(tmp_source, "commit", "-qam", "typo")
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("check")
    assert result.code == 1
    assert "syntax" in result.stderr and "site.yml" in result.stderr and "line" in result.stderr
    assert "no earlier revision validated" in result.stderr
    listing = revisions(cli)
    assert listing["revisions"][0]["status"] == "rejected"
    assert listing["source"]["desired"] is None


def test_playbook_path_outside_the_repository_is_rejected(tmp_path, tmp_source):
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("--playbook", "../../etc/passwd", "check")
    assert result.code == 1 and "climbs out of the repository" in result.stderr


def test_symlink_out_of_the_repository_is_rejected(tmp_path, tmp_source):
    os.symlink("/etc", tmp_source / "playbooks" / "escape")
    git(tmp_source, "add", "-A")
    git(tmp_source, "commit", "-qm", "a link out")
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("--playbook", "playbooks/escape/passwd", "check")
    assert result.code == 1
    assert "outside" in result.stderr


def test_missing_repository_is_a_clear_error(tmp_path):
    cli = FleetCli(tmp_path / "data", tmp_path / "nowhere", tmp_path)
    result = cli("check")
    assert result.code == 1
    assert "cannot fetch the git source" in result.stderr and "FLEET_REPO" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_branch_is_a_clear_error(tmp_path, tmp_source):
    cli = fleet_for(tmp_path, tmp_source)
    result = cli("--branch", "no-such-branch", "check")
    assert result.code == 1 and "FLEET_BRANCH" in result.stderr


def test_each_revision_is_exported_once_into_its_own_directory(tmp_path, tmp_source):
    cli = fleet_for(tmp_path, tmp_source)
    cli("check")  # the hosts are unreachable; the export happens first
    first_sha = git(tmp_source, "rev-parse", "HEAD").strip()
    (tmp_source / "playbooks" / "site.yml").write_text(
        (tmp_source / "playbooks" / "site.yml").read_text() + "\n# a comment\n")
    git(tmp_source, "commit", "-qam", "second")
    cli("check")
    second_sha = git(tmp_source, "rev-parse", "HEAD").strip()
    exported = {p.name for p in (tmp_path / "data" / "revisions").iterdir()}
    assert {first_sha, second_sha} <= exported
    first_site = tmp_path / "data" / "revisions" / first_sha / "playbooks" / "site.yml"
    assert "# a comment" not in first_site.read_text()


# --- hostile URLs and remotes that never answer (issue 11) ------------------------------------------


class StalledRemote:
    """A real TCP server on 127.0.0.1 that accepts every connection, reads what it is sent and never answers.

    `accepted` counts connections; `open_connections` those whose other end is
    still held by some process (the kernel closes a socket once every process
    holding it is gone, so 0 means no git or helper survived).
    """

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="stalled remote", daemon=True).start()

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}/fleet.git"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
                self._open.add(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def close(self) -> None:
        self.sock.close()
        with self._lock:
            for conn in self._open:
                conn.close()

    def __enter__(self) -> "StalledRemote":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (git and its helpers carry the URL)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_an_unsafe_url_is_one_clear_error_and_git_never_runs(tmp_path):
    canary = tmp_path / "pwned"
    cli = FleetCli(tmp_path / "data", f"ext::sh -c touch% {canary}", tmp_path)
    result = cli("check")
    assert result.code == 1
    assert ("the source URL uses the unsafe transport ext::, which can run commands; "
            "use https, ssh, git or a local path") in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("unsafe transport") == 1
    assert not canary.exists()
    assert not (tmp_path / "data" / "source.git").exists(), "git was never asked to clone it"
    source = revisions(cli)["source"]
    assert source["stale"] is True and "unsafe transport ext::" in source["error"]


@pytest.mark.parametrize("url", ["fd::17", "ext://sh -c id", "--upload-pack=touch /tmp/x"])
def test_other_transports_that_run_commands_are_refused_too(tmp_path, url):
    result = FleetCli(tmp_path / "data", url, tmp_path)("check")
    assert result.code == 1 and "Traceback" not in result.stderr
    # A leading '-' never reaches git as an option: settings make it a path below the working directory.
    assert "unsafe transport" in result.stderr or "cannot fetch the git source" in result.stderr


@pytest.mark.parametrize("scheme", ["http", "git"])
def test_a_remote_that_never_answers_times_out_and_leaves_no_git_behind(tmp_path, scheme):
    with StalledRemote() as remote:
        cli = FleetCli(tmp_path / "data", remote.url(scheme), tmp_path)
        result = cli("check", env={"FLEET_GIT_TIMEOUT": "2"}, timeout=120)
        assert result.code == 1
        assert f"git clone of {remote.url(scheme)} timed out after 2s" in result.stderr
        assert "FLEET_GIT_TIMEOUT" in result.stderr and "Traceback" not in result.stderr
        assert remote.accepted >= 1, "git did reach the remote"
        wait_for(lambda: remote.open_connections == 0, 30, "every connection git opened to be closed")
        assert processes_mentioning(f"127.0.0.1:{remote.port}") == [], "git and its helpers were all killed"
        assert not (tmp_path / "data" / "source.git").exists(), "a clone killed halfway leaves no mirror"
        source = revisions(cli)["source"]
        assert source["stale"] is True and "timed out after 2s" in source["error"]


# --- require_signed_commits (issue 11) ---------------------------------------------------------------

EMPTY_INVENTORY = "all:\n  hosts: {}\n"
REQUIRED = {"FLEET_REQUIRE_SIGNED_COMMITS": "1"}


def commit_signed(repo: Path, message: str, *config: str, env: dict | None = None) -> str:
    """An empty commit, signed with `config` (-c pairs); unsigned without any. Its sha."""
    args = [arg for pair in config for arg in ("-c", pair)]
    sign = ["-S"] if config else []
    full_env = {**os.environ, "GIT_AUTHOR_NAME": "Tess Ter", "GIT_AUTHOR_EMAIL": "tess@example.com",
                "GIT_COMMITTER_NAME": "Tess Ter", "GIT_COMMITTER_EMAIL": "tess@example.com", **(env or {})}
    subprocess.run(["git", *args, "commit", "-q", "--allow-empty", *sign, "-m", message], cwd=repo, env=full_env,
                   check=True, capture_output=True, text=True)
    return git(repo, "rev-parse", "HEAD").strip()


def sync(cli, env: dict) -> FleetResult:
    """`fleet check` on a source without hosts: it syncs and judges the head, then has nothing to run."""
    return cli("check", env=env)


def listed(cli) -> tuple[dict, str | None]:
    """sha -> (status, signature), and the desired sha."""
    listing = revisions(cli)
    return ({r["sha"]: (r["status"], r["signature"]) for r in listing["revisions"]}, listing["source"]["desired"])


class Gpg:
    """Throwaway GPG homes (keys without passphrase); their agents are stopped at the end."""

    def __init__(self, root: Path):
        self.root, self.homes = root, []

    def home(self, path: Path) -> Path:
        path.mkdir(parents=True, mode=0o700)
        self.homes.append(path)
        return path

    def run(self, home: Path, *args: str, input: str | None = None) -> str:
        return subprocess.run(["gpg", "--batch", "--homedir", str(home), *args], check=True, capture_output=True,
                              text=True, input=input).stdout

    def new_key(self, home: Path, uid: str) -> str:
        self.run(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        listing = self.run(home, "--list-keys", "--with-colons", uid)
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def give(self, signer: Path, fingerprint: str, trusted_home: Path, owner_trust: bool) -> None:
        """Import a public key into fleet's keyring, with full owner trust or none."""
        self.run(trusted_home, "--import", input=self.run(signer, "--export", "--armor", fingerprint))
        if owner_trust:
            self.run(trusted_home, "--import-ownertrust", input=f"{fingerprint}:6:\n")

    def stop_agents(self) -> None:
        for home in self.homes:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)


@pytest.fixture
def gpg():
    # gpg-agent puts its socket in the keyring's directory where /run/user/<uid> is missing (containers, CI),
    # and a socket's path holds at most 107 bytes: the keyrings (fleet's data directory among them) need a
    # short path, which pytest-xdist's temporary directories are not.
    root = Path(tempfile.mkdtemp(prefix="fleet-gpg-"))
    keys = Gpg(root)
    yield keys
    keys.stop_agents()
    shutil.rmtree(root, ignore_errors=True)


def test_gpg_signed_commits_by_trusted_keys_run_and_others_are_rejected(gpg):
    tmp_path = gpg.root
    source = make_source(tmp_path / "source", EMPTY_INVENTORY)
    signer = gpg.home(tmp_path / "signer-gnupg")
    trusted = gpg.new_key(signer, "Trusted Signer <trusted@example.com>")
    stranger = gpg.new_key(signer, "Known Stranger <stranger@example.com>")
    unknown = gpg.new_key(signer, "Unknown Signer <unknown@example.com>")
    keyring = gpg.home(tmp_path / "data" / "trust" / "gnupg")
    gpg.give(signer, trusted, keyring, owner_trust=True)
    gpg.give(signer, stranger, keyring, owner_trust=False)  # in the keyring, but nobody vouched for it
    sign_env = {"GNUPGHOME": str(signer)}
    cli = fleet_for(tmp_path, source)

    good = commit_signed(source, "signed by a trusted key", f"user.signingkey={trusted}", env=sign_env)
    result = sync(cli, REQUIRED)
    assert "the inventory has no hosts" in result.stderr, result.stderr
    shas, desired = listed(cli)
    assert shas[good] == ("valid", "good") and desired == good

    cases = [
        ("not signed", (), "unsigned"),
        ("signed by a key in the keyring without trust", (f"user.signingkey={stranger}",), "untrusted"),
        ("signed by a key fleet has never seen", (f"user.signingkey={unknown}",), "unverifiable"),
    ]
    for message, config, state in cases:
        sha = commit_signed(source, message, *config, env=sign_env)
        result = sync(cli, REQUIRED)
        assert result.code == 1 and "Traceback" not in result.stderr
        assert f"revision {sha[:12]} was rejected: signature {state}:" in result.stderr
        assert "require_signed_commits is on" in result.stderr
        assert f"the desired revision stays {good[:12]} (the last good one)" in result.stderr
        shas, desired = listed(cli)
        assert shas[sha] == ("rejected", state) and desired == good, "the last good revision stays desired"
    assert not (tmp_path / "data" / "revisions" / sha).exists(), "nothing of a refused commit is exported"

    # The setting is the controller's: switched off, the same head validates, its signature still recorded.
    sync(cli, {"FLEET_REQUIRE_SIGNED_COMMITS": "0"})
    shas, desired = listed(cli)
    assert shas[sha] == ("valid", "unverifiable") and desired == sha


def test_ssh_signed_commits_are_trusted_only_through_allowed_signers(tmp_path):
    source = make_source(tmp_path / "source", EMPTY_INVENTORY)
    keys = {}
    for name in ("ops", "intruder"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name)],
                       check=True)
        keys[name] = (tmp_path / f"{name}.pub").read_text().strip()
    allowed = tmp_path / "data" / "trust" / "allowed_signers"
    allowed.parent.mkdir(parents=True)
    allowed.write_text(f"ops@example.com {keys['ops']}\n")
    cli = fleet_for(tmp_path, source)

    def ssh_signed(name: str, message: str) -> str:
        return commit_signed(source, message, "gpg.format=ssh", f"user.signingkey={tmp_path / name}.pub")

    good = ssh_signed("ops", "signed by an allowed signer")
    sync(cli, REQUIRED)
    shas, desired = listed(cli)
    assert shas[good] == ("valid", "good") and desired == good

    intruder = ssh_signed("intruder", "signed by a key nobody allowed")
    result = sync(cli, REQUIRED)
    assert result.code == 1 and f"revision {intruder[:12]} was rejected: signature untrusted:" in result.stderr
    assert str(allowed) in result.stderr, "the message says where trust comes from"
    shas, desired = listed(cli)
    assert shas[intruder] == ("rejected", "untrusted") and desired == good

    # Trust is judged on every fetch: once the key is allowed, the same commit validates.
    allowed.write_text(allowed.read_text() + f"intruder@example.com {keys['intruder']}\n")
    sync(cli, REQUIRED)
    shas, desired = listed(cli)
    assert shas[intruder] == ("valid", "good") and desired == intruder


def test_signatures_are_recorded_when_not_required(tmp_path):
    source = make_source(tmp_path / "source", EMPTY_INVENTORY)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    sha = commit_signed(source, "signed, no signer allowed", "gpg.format=ssh", f"user.signingkey={tmp_path}/key.pub")
    cli = fleet_for(tmp_path, source)
    sync(cli, {})
    shas, desired = listed(cli)
    assert shas[sha] == ("valid", "untrusted") and desired == sha


def test_switching_the_setting_on_withdraws_an_unsigned_desired_revision(tmp_path):
    source = make_source(tmp_path / "source", EMPTY_INVENTORY)
    sha = git(source, "rev-parse", "HEAD").strip()
    cli = fleet_for(tmp_path, source)
    sync(cli, {})
    assert listed(cli) == ({sha: ("valid", "unsigned")}, sha)
    result = sync(cli, REQUIRED)
    assert result.code == 1 and f"revision {sha[:12]} was rejected: signature unsigned:" in result.stderr
    assert "it was the desired revision, so nothing runs until a commit that passes lands" in result.stderr
    assert listed(cli) == ({sha: ("rejected", "unsigned")}, None), "nothing is desired, so nothing runs"


def test_a_password_in_the_source_url_is_never_stored_nor_shown(tmp_path):
    cli = FleetCli(tmp_path / "data", f"https://tess:s3cret-token@127.0.0.1:{free_port()}/fleet.git", tmp_path)
    result = cli("check")
    assert result.code == 1 and "cannot fetch the git source https://tess:***@127.0.0.1" in result.stderr
    listing = cli("revisions", "--json")
    assert listing.code == 0 and "s3cret-token" not in listing.stdout
    assert "s3cret-token" not in result.stderr
    stored = b"".join(path.read_bytes() for path in (tmp_path / "data").glob("fleet.db*"))
    assert stored and b"s3cret-token" not in stored
