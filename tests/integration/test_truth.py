"""The truth rule on real hosts: one case per class of playbook, judged by the hosts' real files.

Each case (tests/integration/truth/source, a role per case) runs on its own lab
host, so one check gives every case its own verdict. The suite does what an
operator does: converge, check, change each host by hand the way a converge
would undo, check again, then converge and compare the files on the hosts
(hashed before and after). A check is truthful when it never says `in_sync`
about a host a converge changes, says `drifted` only where the converge
changes it, and names the task (with the reason when unverified).
"""

from __future__ import annotations

import concurrent.futures
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import FleetCli, git
from tests.conftest import lab_ssh as ssh
from tests.truth_cases import CASES

pytestmark = pytest.mark.lab

TRUTH = Path(__file__).parent / "truth"
SUBNET = 24  # and 25: other lab tests use 10 (demo), 20-21, 30, 40-41, 50, 60, 70+
SECRETS = ("Pw-9f3b7c2e-inline-vault", "Tk-51d0aa7e-vault-file")




# --- the lab and the source ------------------------------------------------------------------

def build_source(data_dir: Path, source: Path) -> dict[str, str]:
    """The cases as a git source aimed at the lab's hosts; returns each case host's address."""
    shutil.copytree(TRUTH / "source", source)
    inventory = case_inventory(yaml.safe_load((data_dir / "lab" / "hosts.yml").read_text()))
    (source / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    git(source, "init", "-q", "-b", "main")
    git(source, "add", "-A")
    git(source, "commit", "-q", "-m", "truth cases")
    return {name: host["ansible_host"] for name, host in inventory["all"]["hosts"].items()}


def case_inventory(lab_inventory: dict) -> dict:
    """The lab's addresses, one per case host, in a group per case (the playbook targets them by name)."""
    addresses = [host["ansible_host"] for group in lab_inventory["all"]["children"].values()
                 for host in group["hosts"].values()]
    assert len(addresses) >= len(CASES)
    hosts = {case.host: {"ansible_host": address} for case, address in zip(CASES, addresses)}
    return {"all": {"vars": lab_inventory["all"]["vars"], "hosts": hosts}}


@dataclass
class Suite:
    cli: FleetCli
    source: Path
    addresses: dict[str, str]
    outputs: list[str]  # every JSON and text fleet printed, for the secret search

    def fleet(self, *args: str, codes: tuple[int, ...] = (0,)):
        result = self.cli(*args)
        self.outputs += [result.stdout, result.stderr]
        assert result.code in codes, f"fleet {' '.join(args)} exited {result.code}: {result.stdout}{result.stderr}"
        return result

    def check(self, codes: tuple[int, ...], env: dict | None = None) -> dict:
        result = self.cli("check", "--json", env=env)
        self.outputs += [result.stdout, result.stderr]
        summary = {h["name"]: (h["status"], h["message"]) for h in result.json()["hosts"]} if result.stdout else {}
        assert result.code in codes, f"fleet check exited {result.code}: {summary} {result.stderr}"
        return result.json()

    def fleet_all(self, *commands: tuple[str, ...]) -> list:
        """Several read-only fleet commands at once (each must exit 0): they only read the store."""
        with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
            results = list(pool.map(lambda args: self.cli(*args), commands))
        for args, result in zip(commands, results):
            self.outputs += [result.stdout, result.stderr]
            assert result.code == 0, f"fleet {' '.join(args)} exited {result.code}: {result.stdout}{result.stderr}"
        return results

    def run_on_hosts(self, commands: dict[str, str]) -> None:
        """Run a shell command on each named host over SSH, the hosts at once (each host gets its own)."""
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda host: ssh(self.cli, self.addresses[host], commands[host]), commands))

    def files(self) -> dict[str, str]:
        """Every host's files under /srv/case: name, mode, owner and content hash, one text per host."""
        listing = ("cd /srv/case 2>/dev/null && find . -type f | sort | "
                   "while read f; do printf '%s %s ' \"$f\" \"$(stat -c '%a %U' \"$f\")\"; sha256sum < \"$f\"; done")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            found = pool.map(lambda host: (host, ssh(self.cli, self.addresses[host], listing)), self.addresses)
        return dict(found)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    data_dir = root / "data"
    source = root / "source"
    vault_password = root / "vault-password"
    shutil.copy(TRUTH / "vault-password", vault_password)
    vault_password.chmod(0o600)  # fleet refuses a vault password file others can read
    cli = FleetCli(data_dir, source, root)
    env = {"FLEET_VAULT_PASSWORD_FILE": str(vault_password)}
    up = cli("lab", "up", "--hosts", str(len(CASES) + 1), "--subnet", str(SUBNET))
    assert up.code == 0, up.stderr
    try:
        yield Suite(_VaultCli(cli, env), source, build_source(data_dir, source), [])
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


class _VaultCli(FleetCli):
    """The suite's `fleet`, with the vault password file set as an operator would set it."""

    def __init__(self, cli: FleetCli, env: dict):
        super().__init__(cli.data_dir, cli.repo, cli.cwd)
        self.env = env

    def __call__(self, *args, env: dict | None = None, **kwargs):
        return super().__call__(*args, env={**self.env, **(env or {})}, **kwargs)


def by_name(report: dict) -> dict[str, dict]:
    return {host["name"]: host for host in report["hosts"]}


def short(task: str) -> str:
    """A task's name without a role prefix, should Ansible give one."""
    return task.split(" : ", 1)[-1]


def names(tasks: list[dict]) -> list[str]:
    return [short(t["task"]) for t in tasks]


# --- the journey ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def journey(suite: Suite) -> dict:
    """Fresh check, converge, check, hand changes, check, converge: every report and the files around them."""
    found = {"fresh": suite.check(codes=(2,))}
    found["converge"] = suite.fleet("converge", "--yes", "--json").json()
    found["after_converge"] = suite.check(codes=(2,))
    suite.run_on_hosts({case.host: case.hand_change for case in CASES if case.hand_change})
    found["before_check"] = suite.files()
    found["check"] = suite.check(codes=(2,))
    found["after_check"] = suite.files()
    found["check_linear"] = suite.check(codes=(2,), env={"FLEET_STRATEGY": "linear"})
    found["check_cold"] = suite.check(codes=(2,), env={"FLEET_WARM_ANSIBLE": "false"})
    found["reconverge"] = suite.fleet("converge", "--yes", "--json").json()
    found["after_reconverge"] = suite.files()
    return found


def test_a_converge_with_a_rescued_failure_succeeds(journey):
    converge = by_name(journey["converge"])
    assert converge["rescue"]["status"] == "in_sync", converge["rescue"]
    assert journey["converge"]["run"]["status"] == "successful"


@pytest.mark.parametrize("case", CASES, ids=[c.host for c in CASES])
def test_right_after_a_converge_only_flapping_tasks_drift(journey, case):
    host = by_name(journey["after_converge"])[case.host]
    assert host["status"] == case.after_converge, host
    if case.after_converge == "drifted":
        assert names(host["flapping_tasks"]) == list(case.changed), "drift right after a converge is flapping"
        assert all(t["flapping"] for t in host["changed_tasks"])
    else:
        assert host["changed_tasks"] == []


@pytest.mark.parametrize("case", CASES, ids=[c.host for c in CASES])
def test_the_check_after_hand_changes_names_what_it_found(journey, case):
    host = by_name(journey["check"])[case.host]
    assert host["status"] == case.status, host
    assert names(host["changed_tasks"]) == list(case.changed), host["changed_tasks"]
    unverified = [t for t in host["unverified_tasks"]]
    assert names(unverified) == list(case.unverified), unverified
    if case.unverified:
        assert case.reason in unverified[0]["reason"], unverified[0]
        assert all(t["reason"] for t in unverified)


@pytest.mark.parametrize("case", CASES, ids=[c.host for c in CASES])
def test_every_verdict_is_true_to_the_hosts_files(journey, case):
    """Never in_sync where the converge changed the host; drifted only where it did."""
    changed_by_converge = journey["after_check"][case.host] != journey["after_reconverge"][case.host]
    status = by_name(journey["check"])[case.host]["status"]
    if changed_by_converge:
        assert status in ("drifted", "unverified"), f"{case.host} said {status}, but a converge changed it"
    if status == "drifted":
        assert changed_by_converge, f"{case.host} said drifted, but a converge changed none of its files"


def digest(report):
    return {h["name"]: (h["status"], h["coverage"], names(h["changed_tasks"]),
                        [(short(t["task"]), t["reason"], t["accepted"]) for t in h["unverified_tasks"]],
                        names(h["executed_in_check"]), names(h["flapping_tasks"]))
            for h in report["hosts"]}


def test_mitogen_and_linear_strategies_give_the_same_verdicts(journey):
    assert journey["check"]["run"]["strategy"] == "mitogen_linear"
    assert journey["check_linear"]["run"]["strategy"] == "linear"
    assert digest(journey["check"]) == digest(journey["check_linear"])


def test_warm_and_cold_checks_give_the_same_verdicts(journey):
    """Taint and the files a task read come from the callback inside Ansible: the kept process's forked
    runs and a new ansible-playbook must give the same chains and verdicts."""
    assert journey["check"]["run"]["ansible_path"] == {"warm": True, "reason": None}
    assert journey["check_cold"]["run"]["ansible_path"]["warm"] is False
    assert digest(journey["check"]) == digest(journey["check_cold"])


def test_a_check_changes_no_file_except_where_a_task_runs_for_real(journey):
    assert journey["before_check"] == journey["after_check"]


def test_tasks_that_run_for_real_in_a_check_are_listed(journey):
    host = by_name(journey["check"])["executed"]
    assert host["executed_in_check"] == [
        {"task": "Record when the host was last looked at", "action": "ansible.builtin.shell",
         "changed": True}]
    control = by_name(journey["check"])["control"]
    assert [(short(t["task"]), t["changed"]) for t in control["executed_in_check"]] == [("Read the kernel release",
                                                                                          False)]


def test_a_delegated_change_belongs_to_the_host_it_ran_on(journey):
    hosts = by_name(journey["check"])
    assert hosts["deleg_a"]["changed_tasks"] == []
    assert "delegated from deleg_a" in str(hosts["deleg_b"]) or hosts["deleg_b"]["changed_tasks"]


def test_accepted_unverified_tasks_leave_the_host_in_sync(journey):
    host = by_name(journey["check"])["accepted"]
    assert [t["accepted"] for t in host["unverified_tasks"]] == [True]
    assert host["coverage"] == {"verified": 1, "total": 2}


def test_handlers_belong_to_the_change_that_notified_them(journey):
    host = by_name(journey["check"])["handler"]
    assert host["unverified_tasks"] == [], "a handler check mode skips is part of the drift, not unverified"


def test_tasks_that_change_nothing_are_not_coverage(journey):
    host = by_name(journey["check"])["control"]
    # The case directory, the kernel probe and the template; not the facts, the debug or the assert.
    assert host["coverage"] == {"verified": 3, "total": 3}


def test_never_reached_tasks_name_the_stop(journey):
    host = by_name(journey["check"])["end_host"]
    reasons = {short(t["task"]): t["reason"] for t in host["unverified_tasks"]}
    assert "Stop when the release is deployed" in reasons["Deploy the release"]
    assert "deployed" in reasons["Write the release settings"]


def test_a_dependent_skip_names_the_probe(journey):
    host = by_name(journey["check"])["probe_when"]
    reasons = {short(t["task"]): t["reason"] for t in host["unverified_tasks"]}
    assert "agent_probe" in reasons["Install the agent"] and "Is the agent installed" in reasons["Install the agent"]


def test_a_condition_fed_through_set_fact_names_the_chain(journey):
    """The probe is accepted, the copy whose condition reads a fact derived from it is not: unverified."""
    host = by_name(journey["check"])["set_fact_taint"]
    reasons = {short(t["task"]): (t["reason"], t["accepted"]) for t in host["unverified_tasks"]}
    reason, accepted = reasons["Write the feature settings"]
    assert reason.startswith("skipped because its condition reads `feature_on`"), reason
    assert "`flag`" in reason and "Read the feature flag" in reason, reason
    assert (accepted, reasons["Read the feature flag"][1]) == (False, True)


def test_arguments_fed_through_role_vars_name_the_chain(journey):
    """The copy is ok in check mode, but with a port derived from a probe check mode skipped."""
    host = by_name(journey["check"])["vars_taint"]
    reasons = {short(t["task"]): t["reason"] for t in host["unverified_tasks"]}
    reason = reasons["Write the listen settings"]
    assert "`listen_port`" in reason and "`port_probe`" in reason and "Read the configured port" in reason, reason
    assert journey["after_check"]["vars_taint"] != journey["after_reconverge"]["vars_taint"], \
        "the converge rewrites the listen settings the check could not vouch for"


def test_drift_causes_new_local_and_commit(suite, journey):
    fresh = by_name(journey["fresh"])
    assert {t["cause"] for h in fresh.values() for t in h["changed_tasks"]} == {"new"}
    assert {t["cause"] for t in by_name(journey["check"])["vault"]["changed_tasks"]} == {"local"}
    template = suite.source / "playbooks" / "roles" / "control" / "templates" / "control.conf.j2"
    template.write_text(template.read_text() + "audit=on\n")
    banner = suite.source / "playbooks" / "templates" / "banner.j2"  # beside the playbook, in no role
    banner.write_text(banner.read_text() + "contact ops\n")
    git(suite.source, "commit", "-qam", "control: audit on; the banner names a contact")
    ssh(suite.cli, suite.addresses["handler"], "echo listen=1 > /srv/case/web.conf")
    later = by_name(suite.check(codes=(2,)))
    assert [(short(t["task"]), t["cause"]) for t in later["control"]["changed_tasks"]] == [
        ("Write the control settings", "commit")]
    assert [(short(t["task"]), t["cause"]) for t in later["template_src"]["changed_tasks"]] == [
        ("Write the banner", "commit")]
    assert [(short(t["task"]), t["cause"]) for t in later["handler"]["changed_tasks"]] == [
        ("Write the web settings", "local")]


def test_vault_secrets_appear_nowhere(suite, journey):
    vault = by_name(journey["check"])["vault"]
    diff = vault["changed_tasks"][0]["diff"]
    assert "password=********" in diff and "-user=intruder" in diff
    run_id = str(journey["check"]["run"]["id"])
    suite.fleet_all(("show", run_id, "--json"), ("show", run_id, "--stdout"), ("status", "--json", "--diff"))
    for text in suite.outputs + _web_pages(suite, run_id):
        for secret in SECRETS:
            assert secret not in text
    for path in suite.cli.data_dir.rglob("*"):
        if path.is_file() and "revisions" not in path.parts:
            content = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in content, f"{secret} found in {path}"


def _web_pages(suite: Suite, run_id: str) -> list[str]:
    """The API and the pages a viewer reads about the vault host and the run, from the same store."""
    from fleet.settings import load_settings
    from fleet.store import accounts
    from fleet.web import create_app

    settings = load_settings(flags={"repo": str(suite.source), "data_dir": str(suite.cli.data_dir)}, environ={},
                             cwd=suite.cli.cwd)
    app = create_app(settings, {"TESTING": True})
    with app.app_context():
        token = accounts.create_token("truth-viewer", "viewer", "test")
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    texts = [client.get(f"/api/v1/{path}", headers=bearer).get_data(as_text=True)
             for path in ("hosts", "hosts/vault", f"runs/{run_id}")]
    assert all('"vault"' in t or "vault" in t for t in texts[:2])
    session_pages = _viewer_pages(app, ("/hosts/vault", f"/runs/{run_id}", "/"))
    return texts + session_pages


def _viewer_pages(app, paths) -> list[str]:
    import re

    from fleet.store import accounts

    with app.app_context():
        accounts.add_user("truth-vera", "a-long-viewer-password", "viewer")
    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
    answer = client.post("/login", data={"name": "truth-vera", "password": "a-long-viewer-password",
                                         "csrf_token": csrf})
    assert answer.status_code == 302
    pages = [client.get(path) for path in paths]
    assert all(page.status_code == 200 for page in pages)
    assert "********" in pages[1].get_data(as_text=True), "the run page shows the masked diff"
    return [page.get_data(as_text=True) for page in pages]


# --- drift causes across commits: every file a task reads ------------------------------------

CAUSES_SUBNET = 88  # and 89


@pytest.fixture(scope="module")
def causes(tmp_path_factory):
    """Two lab hosts and the causes source (tests/integration/truth/causes), converged once."""
    root = tmp_path_factory.mktemp("causes")
    data_dir, source = root / "data", root / "source"
    cli = FleetCli(data_dir, source, root)
    up = cli("lab", "up", "--hosts", "2", "--subnet", str(CAUSES_SUBNET))
    assert up.code == 0, up.stderr
    try:
        shutil.copytree(TRUTH / "causes", source)
        lab = yaml.safe_load((data_dir / "lab" / "hosts.yml").read_text())
        (source / "inventory" / "hosts.yml").write_text(yaml.safe_dump(lab))
        git(source, "init", "-q", "-b", "main")
        git(source, "add", "-A")
        git(source, "commit", "-q", "-m", "causes")
        suite = Suite(cli, source, {name: host["ansible_host"] for group in lab["all"]["children"].values()
                                    for name, host in group["hosts"].items()}, [])
        suite.fleet("converge", "--yes", "--json")
        yield suite
    finally:
        down = cli("lab", "down")
        assert down.code == 0, down.stderr


def causes_of(report: dict) -> dict[str, list[tuple[str, str]]]:
    return {h["name"]: sorted((short(t["task"]), t["cause"]) for t in h["changed_tasks"]) for h in report["hosts"]}


def commit(source: Path, message: str, edits: dict[str, str]) -> None:
    """Replace each file's text (paths relative to the source) and commit only those changes."""
    for name, text in edits.items():
        (source / name).write_text(text)
    git(source, "commit", "-qam", message)


def test_a_commit_to_what_a_task_reads_is_its_cause_warm_and_cold(causes):
    commit(causes.source, "templates, files, lookups and a dependency's defaults", {
        "playbooks/templates/banner.j2": "banner for {{ inventory_hostname }}, ask ops\n{% include 'footer.j2' %}\n",
        "playbooks/files/motd.txt": "welcome back\n",
        "playbooks/files/limits.txt": "nofile=4096\n",
        "playbooks/roles/common/defaults/main.yml": "---\ncommon_port: 8081\n"})
    expected = sorted([("Install the motd", "commit"), ("Write the app settings", "commit"),
                       ("Write the banner", "commit"), ("Write the limits", "commit")])
    warm = causes_of(causes.check(codes=(2,)))
    cold = causes_of(causes.check(codes=(2,), env={"FLEET_WARM_ANSIBLE": "false"}))
    assert warm == cold == {name: expected for name in causes.addresses}


def test_a_group_vars_commit_is_the_cause_of_the_template_reading_it(causes):
    causes.fleet("converge", "--yes", "--json")
    commit(causes.source, "the app belongs to the platform team",
           {"inventory/group_vars/all.yml": "---\napp_owner: platform\n"})
    found = causes_of(causes.check(codes=(2,)))
    assert found == {name: [("Write the app settings", "commit")] for name in causes.addresses}


def test_a_template_a_template_includes_is_the_cause_of_its_drift(causes):
    causes.fleet("converge", "--yes", "--json")
    commit(causes.source, "the footer names the team", {"playbooks/templates/footer.j2": "managed by ops\n"})
    found = causes_of(causes.check(codes=(2,)))
    assert found == {name: [("Write the banner", "commit")] for name in causes.addresses}


def test_a_hand_change_under_the_converged_revision_is_local(causes):
    causes.fleet("converge", "--yes", "--json")
    first, second = sorted(causes.addresses)
    ssh(causes.cli, causes.addresses[first], "echo tampered > /srv/causes/banner.conf")
    found = causes_of(causes.check(codes=(2,)))
    assert found == {first: [("Write the banner", "local")], second: []}
