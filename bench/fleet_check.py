"""Fleet check against plain ansible-playbook on the same lab hosts, interleaved, as ratios."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import BIN, FLEET, Timing, lab_down, lab_up, make_source, median, timed

ROUNDS = 3
WARM = "fleet check (recording everything)"
COLD = "fleet check, new SSH connections each run"
PLAIN = "ansible-playbook --check --diff, defaults"
PIPELINING = "ansible-playbook --check --diff, pipelining"


@dataclass
class Contender:
    name: str
    command: list[str]
    env: dict
    timings: list[Timing] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return median([t.wall for t in self.timings])

    @property
    def cpu(self) -> float:
        return median([t.cpu for t in self.timings])

    def shown(self) -> str:
        return " ".join(self.command)


def contenders(work: Path, data_dir: Path, repo: Path, hosts: int) -> list[Contender]:
    ssh = data_dir / "ssh"
    base_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ANSIBLE_NOCOLOR": "1"}
    plain = [str(BIN / "ansible-playbook"), "--check", "--diff", "-f", str(hosts), "-i", "inventory/",
             "--private-key", str(ssh / "id_ed25519"),
             "-e", f"ansible_ssh_common_args='-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=yes'",
             "playbooks/site.yml"]
    ara_dir = work / "ara"
    ara_callbacks = subprocess.run([sys.executable, "-m", "ara.setup.callback_plugins"],
                                   capture_output=True, text=True).stdout.strip()
    ara_env = {**base_env, "ANSIBLE_CALLBACK_PLUGINS": ara_callbacks, "ANSIBLE_CALLBACKS_ENABLED": "ara_default",
               "ARA_API_CLIENT": "offline", "ARA_BASE_DIR": str(ara_dir),
               "ARA_DATABASE_NAME": str(ara_dir / "ansible.sqlite")}
    fleet_env = {**base_env, "FLEET_DATA_DIR": str(data_dir), "FLEET_REPO": str(repo), "FLEET_FORKS": str(hosts)}
    # Warm: the previous run's SSH masters are still up, as the scheduled check finds them.
    # Cold: every run opens new connections (they close a second after the run).
    return [
        Contender(WARM, [FLEET, "check", "--json"], {**fleet_env, "FLEET_SSH_PERSIST": "3600"}),
        Contender(COLD, [FLEET, "check", "--json"], {**fleet_env, "FLEET_SSH_PERSIST": "1"}),
        Contender(PLAIN, plain, base_env),
        Contender(PIPELINING, plain, {**base_env, "ANSIBLE_PIPELINING": "True"}),
        Contender("ansible-playbook --check --diff + ARA (SQLite)", plain, ara_env),
    ]


def measure(work: Path, hosts: int, subnet: int, rounds: int = ROUNDS, only_fleet: bool = False) -> list[Contender]:
    """Start `hosts` fresh lab hosts and time each contender `rounds` times, interleaved.

    only_fleet: just fleet with connections kept between runs (the scaling curve).
    """
    data_dir = work / f"fleet-{hosts}"
    inventory = lab_up(data_dir, hosts, subnet)
    try:
        repo = make_source(work / f"source-{hosts}", inventory)
        runners = contenders(work, data_dir, repo, hosts)
        if only_fleet:
            runners = runners[:1]
        for contender in runners:  # warm-up: first fetch and validation, ARA's migrations, SSH masters
            timed(contender.command, contender.env, repo)
        for _ in range(rounds):
            for contender in runners:
                contender.timings.append(timed(contender.command, contender.env, repo))
        return runners
    finally:
        lab_down(data_dir)
