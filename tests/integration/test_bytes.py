"""Text that is not UTF-8, on real lab hosts: a run records it and ends as it really ended.

One lab, one playbook, every case in it: a `copy` of a Latin-1 file (the user's report: the converge died
with a traceback from the store and the hosts read `unknown`), a `template` whose result is Latin-1, a
file whose diff is over 1 MiB (kept cut, saying so), a binary file (Ansible sends no diff: the task says
why), and a command printing undecodable bytes and a NUL. A check finds them (diffs shown escaped and
marked), the converge applies them and exits 0 with every result recorded, the verifying checks (warm,
then cold) prove the hosts in sync; `fleet show` (text and --json) and the run page show the escaped
bytes with the mark.
"""

from __future__ import annotations

import re

import pytest

from fleet.text import NOT_UTF8_MARK
from tests.conftest import FleetCli, git, lab_ssh

SUBNET = 86  # this file's own lab: 127.0.86.x
HOSTS = 2
BIG_LINES = 30_000  # 30 000 lines of 48 bytes: a 1.4 MiB file, so a diff over 1 MiB

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: legacy config
      copy: {src: files/legacy.conf, dest: /etc/legacy.conf, mode: "0644"}
    - name: legacy template
      template: {src: templates/legacy.conf.j2, dest: /etc/legacy-template.conf, mode: "0644"}
    - name: big file
      copy: {src: files/big.txt, dest: /etc/big.txt, mode: "0644"}
    - name: binary file
      copy: {src: files/blob.bin, dest: /etc/blob.bin, mode: "0644"}
    - name: print bytes
      shell: printf 'caf\\351 \\000 end'
      register: printed
      check_mode: false
      changed_when: false
    - name: show bytes
      debug: {msg: "{{ printed.stdout }}"}
"""
# Ansible skips diffs of files over 100 KiB unless told otherwise: the big file's diff must reach fleet. And
# Ansible 2.19 fails a module whose result is not UTF-8 unless told otherwise: the printed bytes must reach it.
ANSIBLE_CFG = "[defaults]\nmax_diff_size = 4194304\nmodule_strict_utf8_response = false\n"


def big_text() -> str:
    return "".join(f"line {n:06d} of a file whose diff is over one MiB\n"[:47] + "\n" for n in range(BIG_LINES))


def build_source(repo, hosts_yml: str) -> None:
    (repo / "inventory").mkdir(parents=True)
    (repo / "inventory" / "hosts.yml").write_text(hosts_yml)
    (repo / "playbooks" / "files").mkdir(parents=True)
    (repo / "playbooks" / "templates").mkdir()
    (repo / "playbooks" / "site.yml").write_text(PLAYBOOK)
    (repo / "playbooks" / "files" / "legacy.conf").write_bytes(b"caf\xe9=1\n")
    (repo / "playbooks" / "templates" / "legacy.conf.j2").write_bytes(b"na\xefve={{ 40 + 2 }}\n")
    (repo / "playbooks" / "files" / "big.txt").write_text(big_text())
    (repo / "playbooks" / "files" / "blob.bin").write_bytes(b"\x7fELF\x02\x01\x00\x00caf\xe9\xff")
    (repo / "ansible.cfg").write_text(ANSIBLE_CFG)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "legacy files")


@pytest.fixture
def lab(tmp_path):
    root = tmp_path
    cli = FleetCli(root / "data", root / "source", root)
    up = cli("lab", "up", "--hosts", str(HOSTS), "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        build_source(cli.repo, (cli.data_dir / "lab" / "hosts.yml").read_text())
        yield cli
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def journey(lab) -> dict:
    """A check of the fresh hosts, the converge, the verifying check (warm, then cold); each command's result."""
    found = {"check": lab("check", "--json"), "converge": lab("converge", "--yes", "--json")}
    found["verify"] = lab("check", "--json")
    found["verify_cold"] = lab("check", "--json", env={"FLEET_WARM_ANSIBLE": "false"})  # a fresh ansible-playbook
    return found


def summary(result) -> str:
    """What a failed assertion shows of a run: each host's verdict and message, and fleet's stderr."""
    try:
        hosts = [(h["name"], h["status"], h["message"]) for h in result.json()["hosts"]]
    except ValueError:
        hosts = []
    return f"exit {result.code}: {hosts} {result.stderr[-3000:]}"


def tasks_of(cli: FleetCli, run_id: int) -> dict[str, dict]:
    """(host, task name) -> the task as `fleet show --json` gives it."""
    shown = cli("show", str(run_id), "--json")
    assert shown.code == 0, shown.stderr
    return {(h["name"], t["task"]): t for h in shown.json()["hosts"] for t in h["tasks"]}


def converge_exits_0_and_the_verifying_checks_find_the_hosts_in_sync(lab, journey):
    converge = journey["converge"]
    assert converge.code == 0, summary(converge)
    assert "Traceback" not in converge.stderr
    report = converge.json()
    assert report["run"]["status"] == "successful", report["run"]
    assert [h["status"] for h in report["hosts"]] == ["in_sync"] * HOSTS
    verify = journey["verify"]
    assert verify.code == 0, summary(verify)
    assert [h["status"] for h in verify.json()["hosts"]] == ["in_sync"] * HOSTS
    cold = journey["verify_cold"]
    assert cold.code == 0, summary(cold)
    status = lab("status", "--json")
    assert {h["status"] for h in status.json()["hosts"]} == {"in_sync"}, status.stdout
    address = re.search(r"ansible_host: (127\.0\.86\.\d+)", lab.repo.joinpath("inventory/hosts.yml").read_text())
    assert lab_ssh(lab, address.group(1), "od -c /etc/legacy.conf | head -1").split()[1:6] == [
        "c", "a", "f", "351", "="], "the host holds the Latin-1 byte itself"


def the_converge_records_every_result_with_the_diffs_shown_escaped(lab, journey):
    run_id = journey["converge"].json()["run"]["id"]
    tasks = tasks_of(lab, run_id)
    hosts = sorted({host for host, _ in tasks})
    assert len(hosts) == HOSTS
    for host in hosts:
        assert {name for h, name in tasks if h == host} >= {
            "legacy config", "legacy template", "big file", "binary file", "print bytes", "show bytes"}
        copied = tasks[(host, "legacy config")]
        assert copied["status"] == "changed"
        assert NOT_UTF8_MARK in copied["diff"]
        assert "+caf\\xe9=1" in copied["diff"]
        templated = tasks[(host, "legacy template")]
        assert "+na\\xefve=42" in templated["diff"] and NOT_UTF8_MARK in templated["diff"]
    text = lab("show", str(run_id))
    assert text.code == 0, text.stderr
    assert "+caf\\xe9=1" in text.stdout and NOT_UTF8_MARK in text.stdout
    for host in hosts:  # a module's own result (Ansible's console output already shows '?' for the byte)
        assert tasks[(host, "show bytes")]["note"] == "caf\\xe9 \\x00 end"


def the_check_shows_the_template_diff_escaped_and_the_big_diff_cut_and_bounded(lab, journey):
    check = journey["check"]
    assert check.code == 2, summary(check)
    assert "Traceback" not in check.stderr
    tasks = tasks_of(lab, check.json()["run"]["id"])
    host = sorted({h for h, _ in tasks})[0]
    templated = tasks[(host, "legacy template")]
    assert templated["status"] == "changed" and "+na\\xefve=42" in templated["diff"], templated
    assert templated["diff"].startswith(NOT_UTF8_MARK)
    big = tasks[(host, "big file")]
    assert big["status"] == "changed"
    assert "+line 000000 of a file" in big["diff"]
    assert "cut" in big["diff"] and len(big["diff"].encode()) < 200 * 1024, "bounded, and it says it was cut"
    binary = tasks[(host, "binary file")]
    assert binary["status"] == "changed"
    assert binary["diff"] == "[fleet: Ansible sent no diff: the source file appears to be binary]"


def the_run_page_shows_the_escaped_bytes_and_the_mark(lab, journey):
    from fleet.settings import load_settings
    from fleet.store import accounts
    from web import create_app

    run_id = journey["converge"].json()["run"]["id"]
    settings = load_settings(flags={"repo": str(lab.repo), "data_dir": str(lab.data_dir)}, environ={}, cwd=lab.cwd)
    app = create_app(settings, {"TESTING": True})
    with app.app_context():
        accounts.add_user("bytes-viewer", "a-long-viewer-password", "viewer")
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
    answer = client.post("/login", data={"name": "bytes-viewer", "password": "a-long-viewer-password",
                                         "csrf_token": csrf})
    assert answer.status_code == 302
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "+caf\\xe9=1" in html
    assert 'class="dl d-note"' in html and "not UTF-8" in html


# One test, so that the whole journey shares one store (FLEET_TEST_DATABASE_URL empties it before each test).
@pytest.mark.lab
def test_latin1_files_a_latin1_template_and_a_huge_diff_are_recorded_checked_converged_and_shown(lab):
    found = journey(lab)
    converge_exits_0_and_the_verifying_checks_find_the_hosts_in_sync(lab, found)
    the_converge_records_every_result_with_the_diffs_shown_escaped(lab, found)
    the_check_shows_the_template_diff_escaped_and_the_big_diff_cut_and_bounded(lab, found)
    the_run_page_shows_the_escaped_bytes_and_the_mark(lab, found)
