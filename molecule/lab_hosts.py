"""Start or stop fleet lab hosts for the molecule scenarios.

    python lab_hosts.py up --hosts N --subnet S DATA_DIR   # prints the hosts as JSON
    python lab_hosts.py down DATA_DIR

DATA_DIR receives ssh/id_ed25519 (the client key), ssh/known_hosts (the
lab's host keys, pinned for strict checking) and lab/ (the hosts).

A lab only stops the hosts of its own directory, so `up` refuses to start
while anything else answers on the planned addresses: its sshd, not ours,
would be the one reached.
"""

from __future__ import annotations

import argparse
import json
import socket
from dataclasses import asdict
from pathlib import Path

from fleet import hostkeys, lab


def up(count: int, subnet: int, data_dir: Path) -> list[dict]:
    lab.stop_lab(data_dir / "lab")
    busy = [host.address for host in lab.plan_lab_hosts(count, subnet) if _listening(host.address)]
    if busy:
        raise SystemExit(
            f"{', '.join(busy)} port 22 already answers: another lab is up on subnet {subnet}. "
            "Stop it (`fleet lab down` with its data directory) and run molecule again."
        )
    identity = hostkeys.ensure_identity(data_dir / "ssh" / "id_ed25519")
    hosts = lab.start_lab(data_dir / "lab", count, data_dir / "ssh" / "known_hosts",
                          identity.with_suffix(".pub"), subnet)
    return [asdict(host) for host in hosts]


def down(data_dir: Path) -> int:
    return lab.stop_lab(data_dir / "lab")


def _listening(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up")
    start.add_argument("--hosts", type=int, required=True)
    start.add_argument("--subnet", type=int, default=lab.DEFAULT_SUBNET)
    start.add_argument("data_dir", type=Path)
    stop = commands.add_parser("down")
    stop.add_argument("data_dir", type=Path)
    args = parser.parse_args()
    if args.command == "up":
        print(json.dumps(up(args.hosts, args.subnet, args.data_dir)))
    else:
        print(json.dumps({"stopped": down(args.data_dir)}))


if __name__ == "__main__":
    main()
