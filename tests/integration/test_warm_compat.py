"""A run forked from the kept Ansible process does what plain ansible-playbook does, on real lab hosts.

One lab, one playbook whose tasks each stood for a way a warm run differed from a cold one: a module of a
collection Python finds (the `ansible` package's ansible.posix) and one of a collection the revision's
requirements.yml installs from a tarball in the repository (whose module behaves otherwise in its next
version, committed later), `pause` (it asks the run's terminal for its foreground group), and a task as root
through sudo with a password for a user whose sudo right is revoked on one host between two checks. Checks
with three ControlPersist times in turn keep one kept process for the runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet import warm
from tests.ansible_processes import host_interpreters
from tests.conftest import FleetCli, add_sudo_user, git, lab_ssh, make_source, settled, wait_for

SUBNET = 80  # this file's own lab: 127.0.80.x (and .81.x)
BIN = Path(sys.executable).parent
DEPLOY_PASSWORD = "lab-deploy-9"  # a lab host's throwaway user; the hosts vanish with the test

PLAYBOOK = """\
- name: What plain ansible-playbook runs
  hosts: all
  gather_facts: false
  tasks:
    - name: a module of a collection on Python's path
      ansible.posix.mount:
        path: /mnt/fleet-compat
        src: tmpfs
        fstype: tmpfs
        state: present
      check_mode: true  # an entry fstab lacks: changed, and never written

    - name: pause
      ansible.builtin.pause:
        seconds: 1

    - name: a module of the revision's own collection
      fleetlab.probe.stamp: {}

- name: As root through sudo
  hosts: all
  gather_facts: false
  become: true
  vars:
    ansible_user: deploy
    ansible_become_password: "PASSWORD"
  tasks:
    - name: whoami as root
      ansible.builtin.command: id -u
      check_mode: false
      changed_when: false
      register: whoami

    - name: root it is
      ansible.builtin.assert:
        that: whoami.stdout == "0"

- name: As deploy, with facts
  hosts: all
  gather_subset: ["!all", "min"]
  vars:
    ansible_user: deploy
  tasks:
    - name: deploy's groups
      ansible.builtin.command: id -Gn
      check_mode: false
      register: groups_of_deploy
      changed_when: "'fleetlab' in groups_of_deploy.stdout.split()"
""".replace("PASSWORD", DEPLOY_PASSWORD)

MODULE = '''\
#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fleetlab.probe.plugins.module_utils.behaviour import CHANGED, VERSION


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.exit_json(changed=CHANGED, version=VERSION)


if __name__ == "__main__":
    main()
'''


def build_collection(work: Path, version: str, changed: bool) -> Path:
    """fleetlab.probe at `version`: its stamp module reports changed or not (the behaviour an upgrade changes)."""
    root = work / f"build-{version}" / "probe"
    (root / "plugins" / "modules").mkdir(parents=True)
    (root / "plugins" / "module_utils").mkdir(parents=True)
    (root / "galaxy.yml").write_text(yaml.safe_dump({
        "namespace": "fleetlab", "name": "probe", "version": version, "readme": "README.md",
        "authors": ["fleet tests"]}))
    (root / "README.md").write_text("probe\n")
    (root / "meta").mkdir()
    (root / "meta" / "runtime.yml").write_text("requires_ansible: '>=2.15'\n")
    (root / "plugins" / "modules" / "stamp.py").write_text(MODULE)
    (root / "plugins" / "module_utils" / "behaviour.py").write_text(f"CHANGED = {changed}\nVERSION = {version!r}\n")
    done = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return work / f"fleetlab-probe-{version}.tar.gz"


def commit_collection(source: Path, tarball: Path, message: str) -> None:
    vendored = source / "vendor"
    shutil.rmtree(vendored, ignore_errors=True)
    vendored.mkdir()
    shutil.copy(tarball, vendored / tarball.name)
    (source / "requirements.yml").write_text(yaml.safe_dump(
        {"collections": [{"name": f"./vendor/{tarball.name}", "type": "file"}]}))
    git(source, "add", "-A")
    git(source, "commit", "-q", "-m", message)


def hosts_of(result) -> dict:
    """A check's hosts by name, without what differs from run to run by nature (ids, times)."""
    return {h["name"]: settled(h) for h in result.json()["hosts"]}


def cold_lines(cli: FleetCli) -> list[str]:
    log = cli.data_dir / "warm-ansible.log"
    return [line for line in (log.read_text() if log.exists() else "").splitlines() if "goes cold" in line]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("compat")
    cli = FleetCli(tmp_path / "data", tmp_path / "source", tmp_path)
    up = cli("lab", "up", "--hosts", "2", "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        inventory = yaml.safe_load((cli.data_dir / "lab" / "hosts.yml").read_text())
        addresses = {name: host["ansible_host"] for group in inventory["all"]["children"].values()
                     for name, host in group["hosts"].items()}
        for address in addresses.values():
            add_sudo_user(cli, address, DEPLOY_PASSWORD)
        source = make_source(tmp_path / "source", (cli.data_dir / "lab" / "hosts.yml").read_text())
        (source / "playbooks" / "site.yml").write_text(PLAYBOOK)
        commit_collection(source, build_collection(tmp_path, "1.0.0", changed=True), "probe 1.0.0")
        yield cli, source, addresses, tmp_path
    finally:
        warm.stop_servers(str(cli.data_dir))
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def check(cli: FleetCli, **env: str):
    result = cli("check", "--json", env=env)
    assert result.stdout.startswith("{"), f"fleet check exited {result.code}: {result.stderr}"
    return result


def failures(hosts: dict) -> dict:
    return {name: host for name, host in hosts.items() if host["status"] not in ("in_sync", "drifted")}


def test_collections_pause_and_sudo_run_warm_as_they_run_cold_under_one_kept_process(lab):
    cli, _source, _addresses, _tmp = lab
    cold = hosts_of(check(cli, FLEET_WARM_ANSIBLE="false"))
    assert failures(cold) == {}, cold
    assert all("a module of the revision's own collection" in str(h) for h in cold.values()), cold

    warm_runs, interpreters = [], []
    for persist in (600, 1200, 1800) * 2:
        warm_runs.append(hosts_of(check(cli, FLEET_SSH_PERSIST=str(persist))))
        interpreters.append({host: len(found) for host, found in host_interpreters(cli.data_dir).items()})
    assert warm.server_pids(str(cli.data_dir)), "a kept process ran the later checks"
    for hosts in warm_runs:
        assert hosts == cold, "a warm check gives the cold one's task results, failures and verdicts"
    kept = warm.server_pids(str(cli.data_dir))
    # One for the runs, one for the syntax check (another environment): not one per ControlPersist time.
    assert len(kept) <= 2, f"{len(kept)} kept processes for one data directory: {kept}"
    # Per host: root's and deploy's login interpreters and the last run's sudo context (each with the fork
    # parent Mitogen starts beside it); the same count after every warm check, whatever its persist time.
    assert interpreters[1] == interpreters[-1] and all(interpreters[-1].values()), interpreters


def test_a_revoked_sudo_right_ends_at_the_next_warm_check(lab):
    cli, _source, addresses, _tmp = lab
    check(cli)  # may go cold, starting a kept process
    before = cold_lines(cli)
    check(cli)  # warm: the kept process's multiplexer holds a sudo context on every host
    assert cold_lines(cli) == before, "the check ran warm"
    first, address = sorted(addresses.items())[0]
    lab_ssh(cli, address, "rm -f /etc/sudoers.d/deploy")
    try:
        warm_after = hosts_of(check(cli))
        assert cold_lines(cli) == before, "the check ran warm"
        cold_after = hosts_of(check(cli, FLEET_WARM_ANSIBLE="false"))
        assert set(failures(cold_after)) == {first}, cold_after
        assert warm_after == cold_after, "warm, the revoked right fails the host as it does cold"
    finally:
        lab_ssh(cli, address, "echo 'deploy ALL=(ALL) ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy")
    assert failures(hosts_of(check(cli))) == {}, "the right given back works again"


def test_an_upgraded_collection_in_a_new_commit_runs_its_new_code_warm(lab):
    cli, source, _addresses, tmp_path = lab
    old = hosts_of(check(cli))
    assert all("a module of the revision's own collection" in str(h["changed_tasks"]) for h in old.values()), old
    commit_collection(source, build_collection(tmp_path, "1.1.0", changed=False), "probe 1.1.0")
    cold = hosts_of(check(cli, FLEET_WARM_ANSIBLE="false"))
    assert failures(cold) == {}, cold
    assert not any("a module of the revision's own collection" in str(h["changed_tasks"]) for h in cold.values())
    first = hosts_of(check(cli))
    wait_for(lambda: warm.server_pids(str(cli.data_dir)), 30, "a kept process")
    lines = cold_lines(cli)
    second = hosts_of(check(cli))
    assert cold_lines(cli) == lines, "the second check of the new commit ran warm"
    assert first == second == cold, "1.1.0's module, never 1.0.0's cached one"


def test_a_host_s_new_group_and_release_are_seen_by_the_next_warm_check_as_by_a_cold_one(lab):
    """Host interpreters live for hours: what changed on the host meanwhile must show as it shows cold."""
    cli, _source, addresses, _tmp = lab
    check(cli)  # may go cold, starting a kept process
    before = cold_lines(cli)
    check(cli)  # warm: the hosts' interpreters gathered their facts once already
    assert cold_lines(cli) == before, "the check ran warm"
    first, address = sorted(addresses.items())[0]
    lab_ssh(cli, address, "groupadd -f fleetlab && usermod -aG fleetlab deploy && echo 12.99 > /etc/debian_version")
    before = cold_lines(cli)
    warm_after = hosts_of(check(cli))
    assert cold_lines(cli) == before, "the check ran warm"
    cold_after = hosts_of(check(cli, FLEET_WARM_ANSIBLE="false"))
    assert "12.99" in str(cold_after[first]["facts"]), cold_after[first]["facts"]
    assert warm_after[first]["facts"] == cold_after[first]["facts"], "the host's release as gathered cold"
    # deploy's new group: a login's groups are set when SSH logs in, so a cold run on the SSH master that
    # ControlPersist keeps does not see it either; warm, the login interpreter shows what cold shows.
    assert warm_after == cold_after
