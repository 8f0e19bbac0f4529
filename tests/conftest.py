"""Shared helpers: run the real `fleet` command, build real git sources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
FLEET = str(Path(sys.executable).parent / "fleet")


@dataclass
class FleetResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


class FleetCli:
    """Runs `fleet` as a user would, with its own data directory and source."""

    def __init__(self, data_dir: Path, repo: Path, cwd: Path):
        self.data_dir, self.repo, self.cwd = data_dir, repo, cwd

    def __call__(self, *args: str, timeout: float = 600, input: str | None = None,
                 env: dict | None = None) -> FleetResult:
        env = {**os.environ, "FLEET_DATA_DIR": str(self.data_dir), "FLEET_REPO": str(self.repo), **(env or {})}
        proc = subprocess.run([FLEET, *args], cwd=self.cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, input=input)
        return FleetResult(proc.returncode, proc.stdout, proc.stderr)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Tess Ter", "GIT_AUTHOR_EMAIL": "tess@example.com",
           "GIT_COMMITTER_NAME": "Tess Ter", "GIT_COMMITTER_EMAIL": "tess@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def make_source(repo: Path, inventory_yaml: str) -> Path:
    """A git repository holding the project's example playbooks and group vars, with a given hosts.yml."""
    repo.mkdir(parents=True)
    shutil.copytree(PROJECT / "playbooks", repo / "playbooks")
    shutil.copytree(PROJECT / "inventory", repo / "inventory")
    (repo / "inventory" / "hosts.yml").write_text(inventory_yaml)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "example source")
    return repo


@pytest.fixture
def tmp_source(tmp_path):
    """A small local source with no reachable hosts, for tests that need no lab."""
    inventory = "all:\n  children:\n    web:\n      hosts:\n        web1: {ansible_host: 127.0.99.1}\n"
    return make_source(tmp_path / "source", inventory)
