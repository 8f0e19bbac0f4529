"""Throwaway SSH hosts on this machine, for demos and tests.

Each lab host is a set of Linux namespaces (mount, UTS, PID) around an
overlay of `/` backed by tmpfs, running its own sshd on its own loopback
address. Changes a playbook makes stay inside the host's overlay and vanish
when it stops. The lab generates every host key itself and pins it in
fleet's known_hosts, so checks run with strict host-key checking from the
first contact.

With a jump host (`fleet lab up --jump`), one more host, `bastion`, stands
before the others: their inventory names them `<name>.lab`, a name only the
bastion's own /etc/hosts (in its overlay) resolves, and reaches them with
`-o ProxyJump=root@<bastion>`. All lab hosts share this machine's network,
so the name is what proves the way: nothing but the bastion can resolve it.
Those hosts' keys are not pinned by the lab; fleet pins them on first contact,
through the bastion, as it would for any new host behind one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet import hostkeys
from fleet.errors import LabError

MAX_HOSTS_PER_GROUP = 254
JUMP_HOST = "bastion"
JUMP_OCTET = 254  # the bastion's last address octet, in the web subnet
BEHIND_SUFFIX = ".lab"  # hosts behind the bastion are named <name>.lab, resolved by the bastion alone
DEFAULT_SUBNET = 10  # web hosts on 127.0.10.x, db hosts on 127.0.11.x, as in the example inventory
READY_TIMEOUT = 15.0

# Runs as PID 1 of the new namespaces; $1 name, $2 address, $3 host dir.
INIT_SCRIPT = r"""#!/bin/bash
set -euo pipefail
name=$1 addr=$2 dir=$3
mount --make-rprivate /
mkdir -p "$dir/fs"
mount -t tmpfs -o size=512m tmpfs "$dir/fs"
# fleet runs with umask 077 to keep its data directory private; from here on everything is the lab
# host's own (overlayfs takes the mode of / from upper/), so it gets a machine's usual modes.
umask 022
mkdir -p "$dir/fs/upper" "$dir/fs/work" "$dir/fs/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/fs/upper,workdir=$dir/fs/work" "$dir/fs/root"
root="$dir/fs/root"
mount -t proc proc "$root/proc"
# The kernel is shared: a playbook's sysctl must not reach the machine running the lab.
mount --bind "$root/proc/sys" "$root/proc/sys" && mount -o remount,bind,ro "$root/proc/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
hostname "$name"
echo "$name" > "$root/etc/hostname"
# A jump host's names for the hosts behind it; the write lands in this host's overlay only.
if [ -f "$dir/etc_hosts" ]; then cat "$dir/etc_hosts" >> "$root/etc/hosts"; fi
mkdir -p "$root/run/sshd" "$root/root/.ssh" "$root/etc/fleet-lab"
install -m 600 "$dir/authorized_keys" "$root/root/.ssh/authorized_keys"
chmod 700 "$root/root/.ssh"
install -m 600 "$dir/ssh_host_ed25519_key" "$root/etc/fleet-lab/ssh_host_ed25519_key"
cat > "$root/etc/fleet-lab/sshd_config" <<CFG
ListenAddress $addr
Port 22
HostKey /etc/fleet-lab/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxStartups 200
MaxSessions 200
PidFile /run/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
CFG
exec chroot "$root" /usr/sbin/sshd -D -e -f /etc/fleet-lab/sshd_config
"""


@dataclass(frozen=True)
class LabHost:
    name: str
    group: str
    address: str


def plan_lab_hosts(count: int, subnet: int = DEFAULT_SUBNET, jump: bool = False) -> list[LabHost]:
    """Name and address `count` hosts: half `web` (127.0.<subnet>.x), half `db` (127.0.<subnet+1>.x).

    With `jump`, a `bastion` host on 127.0.<subnet>.254 comes last, in front of them.
    """
    if count < 1:
        raise LabError("the lab needs at least one host; pass --hosts 1 or more")
    web = math.ceil(count / 2)
    db = count - web
    most = MAX_HOSTS_PER_GROUP - (1 if jump else 0)  # the bastion takes the web subnet's last address
    if web > most:
        raise LabError(f"the lab holds at most {2 * most} hosts{' with a jump host' if jump else ''}; pass fewer")
    if not 1 <= subnet <= 253:
        raise LabError(f"the lab subnet must be between 1 and 253, got {subnet}")
    hosts = [LabHost(f"web{i}", "web", f"127.0.{subnet}.{i}") for i in range(1, web + 1)]
    hosts += [LabHost(f"db{i}", "db", f"127.0.{subnet + 1}.{i}") for i in range(1, db + 1)]
    if jump:
        hosts.append(LabHost(JUMP_HOST, JUMP_HOST, f"127.0.{subnet}.{JUMP_OCTET}"))
    return hosts


def jump_host_of(hosts: list[LabHost]) -> LabHost | None:
    return next((h for h in hosts if h.group == JUMP_HOST), None)


def pinned_addresses(hosts: list[LabHost]) -> list[str]:
    """The addresses whose keys `start_lab` pins: every host's, or with a bastion its alone (fleet pins the
    hosts behind it on first contact, through it)."""
    bastion = jump_host_of(hosts)
    return [h.address for h in hosts if bastion is None or h is bastion]


def behind_name(host: LabHost) -> str:
    """The name a host behind the bastion has: only the bastion resolves it."""
    return f"{host.name}{BEHIND_SUFFIX}"


def jump_etc_hosts(hosts: list[LabHost]) -> str:
    """Lines the bastion adds to its /etc/hosts: each host behind it under its `.lab` name."""
    return "".join(f"{h.address}\t{behind_name(h)}\n" for h in hosts if h.group != JUMP_HOST)


def lab_inventory(hosts: list[LabHost]) -> dict[str, Any]:
    """A YAML-inventory dict for the lab hosts, grouped like the example source.

    With a bastion among them, the others are reached by their `.lab` name through
    it; the bastion itself is the way in, not a host the playbook manages.
    """
    jump = jump_host_of(hosts)
    groups: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for host in hosts:
        if host is jump:
            continue
        reach = {"ansible_host": host.address}
        if jump is not None:
            reach = {"ansible_host": behind_name(host), "ansible_ssh_common_args": f"-o ProxyJump=root@{jump.address}"}
        groups.setdefault(host.group, {"hosts": {}})["hosts"][host.name] = reach
    # The lab hosts share this machine's /usr/bin/python3; discovery could pick a pyenv shim instead.
    lab_vars = {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3"}
    return {"all": {"vars": lab_vars, "children": groups}}


def ensure_lab_supported() -> None:
    """Raise LabError unless this machine can run lab hosts (Linux, root, tools present)."""
    if sys.platform != "linux":
        raise LabError("lab hosts need Linux namespaces; run `fleet lab` on a Linux machine")
    if os.geteuid() != 0:
        raise LabError("lab hosts need root to create namespaces and mounts; run `fleet lab` as root")
    for tool in ("unshare", "/usr/sbin/sshd", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is missing; install util-linux and openssh-server")


def start_lab(
    lab_dir: Path,
    count: int,
    known_hosts: Path,
    client_public_key: Path,
    subnet: int = DEFAULT_SUBNET,
    jump: bool = False,
) -> list[LabHost]:
    """Start `count` fresh hosts (stopping any running ones; with `jump`, and a bastion before them)
    and write lab_dir/hosts.yml."""
    ensure_lab_supported()
    hosts = plan_lab_hosts(count, subnet, jump)
    stop_lab(lab_dir)
    lab_dir.mkdir(parents=True, exist_ok=True)
    init = lab_dir / "init.sh"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o700)  # run by root alone; the lab directory is fleet's, private like all its data
    bastion = jump_host_of(hosts)
    for host in hosts:
        _prepare_host_dir(lab_dir / "hosts" / host.name, client_public_key)
        if host is bastion:
            (lab_dir / "hosts" / host.name / "etc_hosts").write_text(jump_etc_hosts(hosts))
        if host.address in pinned_addresses(hosts):
            _pin_host_key(known_hosts, host, lab_dir / "hosts" / host.name)
        _spawn_host(init, host, lab_dir / "hosts" / host.name)
    _wait_until_listening(hosts, lab_dir)
    (lab_dir / "hosts.yml").write_text(yaml.safe_dump(lab_inventory(hosts), sort_keys=False))
    (lab_dir / "lab.json").write_text(json.dumps([h.__dict__ for h in hosts]))
    return hosts


def restart_host(lab_dir: Path, name: str, new_key: bool = False) -> LabHost:
    """Start a stopped lab host again (stopping it first if it runs); with `new_key`, under a new host key.

    Tests use it to bring a jump host back, or to make its key change: the new
    key is not pinned, as a reinstalled or impersonated host's would not be.
    """
    host = _planned_host(lab_dir, name)
    host_dir = lab_dir / "hosts" / name
    if _read_pid(host_dir / "pid") and name in running_hosts(lab_dir):
        stop_host(lab_dir, name)
    if new_key:
        for old in host_dir.glob("ssh_host_ed25519_key*"):
            old.unlink()
        _generate_host_key(host_dir)
    _spawn_host(lab_dir / "init.sh", host, host_dir)
    _wait_until_listening([host], lab_dir)
    return host


def _planned_host(lab_dir: Path, name: str) -> LabHost:
    try:
        planned = [LabHost(**fields) for fields in json.loads((lab_dir / "lab.json").read_text())]
    except (OSError, ValueError, TypeError) as exc:
        raise LabError(f"no lab was started under {lab_dir} ({exc}); start one with `fleet lab up`") from exc
    for host in planned:
        if host.name == name:
            return host
    raise LabError(f"the lab has no host {name}; it has {', '.join(h.name for h in planned)}")


def stop_lab(lab_dir: Path) -> int:
    """Stop every lab host under lab_dir; return how many were running."""
    stopped = 0
    for pid_file in sorted((lab_dir / "hosts").glob("*/pid")):
        pid = _read_pid(pid_file)
        if pid and _is_lab_process(pid):
            os.kill(pid, signal.SIGKILL)  # unshare ignores SIGTERM; --kill-child takes sshd along
            stopped += 1
        pid_file.unlink(missing_ok=True)
    return stopped


def running_hosts(lab_dir: Path) -> list[str]:
    """Names of the lab hosts whose namespace process is alive."""
    alive = []
    for pid_file in sorted((lab_dir / "hosts").glob("*/pid")):
        pid = _read_pid(pid_file)
        if pid and _is_lab_process(pid):
            alive.append(pid_file.parent.name)
    return alive


def stop_host(lab_dir: Path, name: str) -> None:
    """Stop one lab host (tests use it to make a host unreachable)."""
    pid_file = lab_dir / "hosts" / name / "pid"
    pid = _read_pid(pid_file)
    if not pid or not _is_lab_process(pid):
        raise LabError(f"lab host {name} is not running; start the lab with `fleet lab up`")
    os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _prepare_host_dir(host_dir: Path, client_public_key: Path) -> None:
    if host_dir.exists():
        shutil.rmtree(host_dir)
    host_dir.mkdir(parents=True)
    shutil.copyfile(client_public_key, host_dir / "authorized_keys")
    _generate_host_key(host_dir)


def _generate_host_key(host_dir: Path) -> None:
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            host_dir.name,
            "-f",
            str(host_dir / "ssh_host_ed25519_key"),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _pin_host_key(known_hosts: Path, host: LabHost, host_dir: Path) -> None:
    key_line = (host_dir / "ssh_host_ed25519_key.pub").read_text().split()
    hostkeys.pin_key_line(known_hosts, host.address, 22, key_line[0], key_line[1])


def _spawn_host(init: Path, host: LabHost, host_dir: Path) -> None:
    log = open(host_dir / "log", "wb")  # noqa: SIM115  the host's sshd writes it after this returns
    # The wrapper shell records its own PID, then becomes unshare: that PID is what we kill.
    command = (
        f'echo $$ > "{host_dir}/pid"; exec unshare --kill-child --mount --uts --pid --fork '
        f'"{init}" "{host.name}" "{host.address}" "{host_dir}"'
    )
    # setsid --fork returns at once, leaving the host to init: no child of ours to reap, whoever calls this.
    subprocess.run(
        ["setsid", "--fork", "bash", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        close_fds=True,
        check=True,
    )
    log.close()


def _wait_until_listening(hosts: list[LabHost], lab_dir: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    pending = list(hosts)
    while pending and time.monotonic() < deadline:
        pending = [h for h in pending if not _accepts(h.address)]
        if pending:
            time.sleep(0.05)
    if pending:
        log = (lab_dir / "hosts" / pending[0].name / "log").read_text(errors="replace")[-500:]
        stop_lab(lab_dir)
        raise LabError(
            f"lab host {pending[0].name} did not start sshd within {READY_TIMEOUT:.0f}s "
            f"(its log ends: {log.strip() or 'empty'}); check that overlayfs and namespaces work here"
        )


def _accepts(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.2) as sock:
            sock.settimeout(0.5)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_lab_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and os.path.basename(cmdline[0]) == b"unshare"
