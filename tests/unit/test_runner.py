"""The runner's pure parts (strategy, SSH arguments, inventory listings, Ansible's error text) and the fake runner."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import paramiko
import pytest

from fleet import hostkeys, runner
from fleet.errors import ConfigError, SourceError
from fleet.fake_runner import FakeRunner, hosts_of, load_events
from fleet.runner import InventoryHost, JobSpec, clean_ansible_error, hosts_from_listing
from fleet.settings import Settings


def test_linear_strategy_when_asked():
    chosen = runner.choose_strategy("linear")
    assert chosen.name == "linear" and chosen.plugin_dir is None
    assert runner.strategy_env(chosen) == {"ANSIBLE_STRATEGY": "linear"}


def test_auto_picks_mitogen_when_installed_and_compatible():
    chosen = runner.choose_strategy("auto")
    assert chosen.name == "mitogen_linear"
    assert chosen.plugin_dir.endswith("ansible_mitogen/plugins/strategy")
    assert runner.strategy_env(chosen)["ANSIBLE_STRATEGY_PLUGINS"] == chosen.plugin_dir


def test_auto_falls_back_with_a_reason_when_ansible_is_too_new(monkeypatch):
    monkeypatch.setattr(runner, "MITOGEN_ANSIBLE_RANGE", ((2, 10), (2, 11)))
    chosen = runner.choose_strategy("auto")
    assert chosen.name == "linear"
    assert "not known to work with ansible-core" in chosen.reason


def test_explicit_mitogen_that_cannot_work_is_an_error(monkeypatch):
    monkeypatch.setattr(runner, "MITOGEN_ANSIBLE_RANGE", ((2, 10), (2, 11)))
    with pytest.raises(ConfigError, match="FLEET_STRATEGY=linear"):
        runner.choose_strategy("mitogen")


# --- inventory listings and Ansible's error text ----------------------------------------

LISTING = {
    "_meta": {"hostvars": {
        "web1": {"ansible_host": "10.0.0.1", "ansible_port": 2222, "motd": "hi"},
        "db1": {"ansible_host": "10.0.1.1", "ansible_port": "2200"},
        "lonely": {"ansible_host": "lonely.example.com"},
    }},
    "all": {"children": ["ungrouped", "prod"]},
    "prod": {"children": ["web", "db"]},
    "web": {"hosts": ["web1", "web2"]},
    "db": {"hosts": ["db1"]},
    "ungrouped": {"hosts": ["lonely"]},
}


def test_hosts_from_listing():
    assert hosts_from_listing(LISTING) == [
        InventoryHost("db1", "10.0.1.1", 2200, ("db", "prod")),
        InventoryHost("lonely", "lonely.example.com", 22, ()),
        InventoryHost("web1", "10.0.0.1", 2222, ("prod", "web")),
        InventoryHost("web2", "web2", 22, ("prod", "web")),
    ]


def test_host_only_in_hostvars_is_listed():
    listing = {"_meta": {"hostvars": {"solo": {"ansible_host": "10.9.9.9"}}}, "all": {"children": []}}
    assert hosts_from_listing(listing) == [InventoryHost("solo", "10.9.9.9", 22, ())]


def test_empty_listing_has_no_hosts():
    assert hosts_from_listing({"_meta": {"hostvars": {}}, "all": {"children": ["ungrouped"]}}) == []


def test_cyclic_children_do_not_loop_forever():
    listing = {"a": {"children": ["b"], "hosts": ["h1"]}, "b": {"children": ["a"], "hosts": ["h2"]}}
    assert [(h.name, h.groups) for h in hosts_from_listing(listing)] == [("h1", ("a", "b")), ("h2", ("a", "b"))]


def test_clean_ansible_error_makes_paths_relative_and_origins_readable(tmp_path):
    tree = tmp_path / "revisions" / "abc123"
    text = (
        f"[ERROR]: YAML syntax in {tree}/playbooks/site.yml\n"
        "\n"
        f"Origin: {tree}/inventory/hosts.yml:3:1   \n"
        "[WARNING]: interpreter_discovery found python\n"
        f"while reading {tree}\n"
    )
    assert clean_ansible_error(text, tree) == (
        "[ERROR]: YAML syntax in playbooks/site.yml\n"
        "in inventory/hosts.yml, line 3, column 1\n"
        "while reading ."
    )


def test_clean_ansible_error_keeps_at_most_25_lines(tmp_path):
    text = "\n".join(f"line {i}" for i in range(40))
    lines = clean_ansible_error(text, tmp_path).splitlines()
    assert lines == [f"line {i}" for i in range(25)]


def test_clean_ansible_error_of_nothing(tmp_path):
    assert clean_ansible_error("\n  \n", tmp_path) == "Ansible gave no message"


# --- SSH arguments and kept connections ------------------------------------------------------------

def test_ssh_arguments_name_the_shared_control_path_and_persist_time():
    data = Path("/var/lib/fleet")
    env = runner.ansible_env(data / "ssh" / "known_hosts", data / "cp", 1500)
    args = env["ANSIBLE_SSH_ARGS"]
    assert "-o ControlPersist=1500s" in args
    assert "-o ControlPath=/var/lib/fleet/cp/%C" in args
    assert "StrictHostKeyChecking=yes" in args and "UserKnownHostsFile=/var/lib/fleet/ssh/known_hosts" in args


def test_a_control_directory_too_long_for_a_socket_leaves_the_path_to_ansible():
    fits = Path("/var/lib/fleet/cp")
    too_long = Path("/srv/" + "x" * 60 + "/cp")
    assert runner.control_path(fits) == "/var/lib/fleet/cp/%C"
    assert runner.control_path(too_long) is None
    args = runner.ansible_env(Path("/k"), too_long, 300)["ANSIBLE_SSH_ARGS"]
    assert "ControlPath" not in args and "ControlPersist=300s" in args


# --- the real runner's set-up and stopping, without starting Ansible ---------------------------------

def spec(tmp_path, kind="check", **changes) -> JobSpec:
    fields = {"kind": kind, "project_dir": tmp_path, "playbook": "site.yml", "inventory": tmp_path / "inventory",
              "private_data_dir": tmp_path / "run", "known_hosts": tmp_path / "known_hosts",
              "control_path_dir": tmp_path / "cp", **changes}
    return JobSpec(**fields)


COMMAND_LINES = {
    "check": ({}, "--check --diff"),
    "converge": ({"kind": "converge"}, "--diff"),
    "with key and vault": ({"identity": Path("/k/id"), "vault_password_file": "/k/vault"},
                           "--check --diff --private-key /k/id --vault-password-file /k/vault"),
}


@pytest.mark.parametrize(("changes", "line"), COMMAND_LINES.values(), ids=COMMAND_LINES.keys())
def test_command_line(tmp_path, changes, line):
    assert runner.command_line(spec(tmp_path, **changes)) == line


def test_job_env_puts_fleets_callback_first_and_names_the_strategy(tmp_path):
    env = runner.job_env(spec(tmp_path, strategy=runner.Strategy("linear", None, "asked")))
    assert env["ANSIBLE_CALLBACK_PLUGINS"] == str(runner.CALLBACK_DIR)
    assert env["ANSIBLE_STRATEGY"] == "linear" and env["ANSIBLE_PIPELINING"] == "True"


def test_the_real_runner_is_set_up_from_the_settings(tmp_path):
    vault = tmp_path / "vault"
    vault.write_text("pass\n")
    vault.chmod(0o600)
    settings = Settings(repo="r", data_dir=tmp_path, vault_password_file=str(vault), connect_timeout=7)
    real = runner.AnsibleRunner.for_settings(settings)
    assert (real.known_hosts, real.control_path_dir, real.vault_password_file, real.connect_timeout) == (
        tmp_path / "ssh" / "known_hosts", settings.control_path_dir, str(vault), 7)  # <data dir>/cp when it fits


def test_the_real_runner_refuses_a_vault_password_file_others_can_read(tmp_path):
    vault = tmp_path / "vault"
    vault.write_text("pass\n")
    vault.chmod(0o644)
    settings = Settings(repo="r", data_dir=tmp_path, vault_password_file=str(vault))
    with pytest.raises(ConfigError, match=f"chmod 600 {vault}"):
        runner.AnsibleRunner.for_settings(settings)


def test_a_run_refuses_a_vault_password_file_opened_up_since_the_runner_started(tmp_path):
    vault = tmp_path / "vault"
    vault.write_text("pass\n")
    vault.chmod(0o604)
    with pytest.raises(ConfigError, match=str(vault)):
        runner.run_job(spec(tmp_path, vault_password_file=str(vault)), on_event=lambda event: None)
    assert not (tmp_path / "run").exists()  # refused before anything was prepared or started


def test_a_stop_kills_the_whole_ansible_tree_once_and_stays_asked(monkeypatch):
    killed, answers = [], iter([False, True, False])
    monkeypatch.setattr(runner.processes, "kill_tree", killed.append)
    process = runner._AnsibleProcess(lambda: next(answers))
    process.saw({"event": "playbook_on_start", "pid": 4242})
    process.saw({"event": "runner_on_ok", "pid": 9999})
    assert [process.stop_requested() for _ in range(4)] == [False, True, True, True]
    assert killed == [4242]


# --- the fake runner ---------------------------------------------------------------------------------

RECORDED = load_events(Path(__file__).parent / "fixtures" / "truth_check.json")
EVENTS = [
    {"event": "playbook_on_play_start", "counter": 1, "event_data": {}},
    {"event": "runner_on_ok", "counter": 2, "event_data": {"host": "web1", "task": "motd"}},
    {"event": "runner_on_ok", "counter": 3, "event_data": {"host": "db1", "task": "motd"}},
    {"event": "playbook_on_stats", "counter": 4, "event_data": {"ok": {"web1": 1, "db1": 1}, "changed": {}}},
]
HOSTS = [InventoryHost("db1", "10.0.1.1", 22, ("db",)), InventoryHost("web1", "10.0.0.1", 22, ("web",))]


def replay(fake: FakeRunner, job: JobSpec, should_cancel=lambda: False) -> tuple[runner.RunnerOutcome, list[dict]]:
    seen: list[dict] = []
    return fake.run_job(job, seen.append, should_cancel), seen


def limited(tmp_path, *hosts) -> JobSpec:
    (tmp_path / "limit").write_text("".join(f"{h}\n" for h in hosts))
    return spec(tmp_path, limit_file=tmp_path / "limit")


def test_the_fake_replays_every_event_in_order(tmp_path):
    outcome, seen = replay(FakeRunner(events=EVENTS), spec(tmp_path))
    assert outcome == runner.RunnerOutcome("successful", 0)
    assert seen == EVENTS


def test_the_fake_replays_only_the_hosts_the_run_is_limited_to(tmp_path):
    fake = FakeRunner(events=EVENTS)
    _, seen = replay(fake, limited(tmp_path, "web1"))
    assert [e["event_data"].get("host") for e in seen] == [None, "web1", None]
    assert seen[-1]["event_data"] == {"ok": {"web1": 1}, "changed": {}}
    assert fake.job_hosts == [{"web1"}]


def test_the_fake_stops_between_events_when_asked(tmp_path):
    seen: list[dict] = []
    outcome = FakeRunner(events=EVENTS).run_job(spec(tmp_path), seen.append, lambda: len(seen) >= 2)
    assert outcome == runner.RunnerOutcome("canceled", 254) and len(seen) == 2


def test_a_hanging_fake_waits_until_it_is_stopped(tmp_path):
    deadline = time.monotonic() + 0.2
    outcome, seen = replay(FakeRunner(events=EVENTS, hang_after=1), spec(tmp_path),
                           should_cancel=lambda: time.monotonic() > deadline)
    assert outcome.status == "canceled" and len(seen) == 1 and time.monotonic() >= deadline


def test_a_crashing_fake_raises_mid_stream(tmp_path):
    seen: list[dict] = []
    fake = FakeRunner(events=EVENTS, crash_after=3, crash=OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        fake.run_job(spec(tmp_path), seen.append)
    assert len(seen) == 3


@pytest.mark.parametrize(("limit", "names"), [
    (None, ["db1", "web1"]),
    ("web1", ["web1"]),
    ("db", ["db1"]),
    ("web*,db1", ["db1", "web1"]),
    ("web:db", ["db1", "web1"]),
    ("nothing", []),
])
def test_the_fakes_inventory_matches_names_and_groups(tmp_path, limit, names):
    fake = FakeRunner(hosts=HOSTS)
    assert [h.name for h in fake.list_inventory(tmp_path, "inventory/", limit)] == names


def test_the_fake_plays_a_broken_source_and_unreachable_hosts(tmp_path):
    fake = FakeRunner(hosts=HOSTS, syntax_error="bad indent", inventory_error="line 3",
                      unreachable=frozenset({"db1"}))
    assert fake.syntax_problem(tmp_path, "site.yml", "inventory/") == "playbook syntax check failed: bad indent"
    with pytest.raises(SourceError, match="inventory does not parse: line 3"):
        fake.list_inventory(tmp_path, "inventory/")
    probes = fake.probe_hosts(HOSTS)
    assert (probes["db1"].usable, probes["web1"].usable) == (False, True)


def test_an_inventory_for_a_recording_names_every_host_it_ran_on():
    from tests.truth_cases import CASES

    hosts = hosts_of(RECORDED)
    assert {h.name for h in hosts} == {case.host for case in CASES}  # the recording ran on every case's host
    assert len({h.address for h in hosts}) == len(hosts)
    assert {"raw", "vault", "deleg_a", "deleg_b"} <= {h.name for h in hosts}


def test_the_fake_and_the_real_runner_offer_the_same_interface():
    for name in ("list_inventory", "syntax_problem", "probe_hosts", "run_job"):
        real, fake = getattr(runner.AnsibleRunner, name), getattr(FakeRunner, name)
        assert inspect.signature(real).parameters.keys() == inspect.signature(fake).parameters.keys(), name


# --- hosts behind a bastion: what the probe is told ----------------------------------------------

def test_a_listing_keeps_the_ssh_arguments_that_name_a_jump_host():
    listing = {"_meta": {"hostvars": {"web1": {
        "ansible_host": "web1.lab", "ansible_user": "ops", "ansible_ssh_common_args": "-o ProxyJump=root@10.0.0.9",
        "ansible_ssh_extra_args": "-C"}}}, "web": {"hosts": ["web1"]}}
    (host,) = hosts_from_listing(listing)
    assert (host.user, host.ssh_args) == ("ops", ("", "-o ProxyJump=root@10.0.0.9", "-C"))
    target = runner.probe_target(host)
    assert (target.address, target.jumps, target.user) == ("web1.lab", (hostkeys.Hop("10.0.0.9", 22, "root"),), "ops")


def test_inventory_templates_in_the_ssh_arguments_are_evaluated():
    hostvars = {"bastion": "ops@10.0.0.9:2222", "jump_spec": "{{ bastion }}",
                "ansible_ssh_common_args": "-o ProxyJump={{ jump_spec }}"}
    assert runner.ssh_args_of(hostvars) == ("", "-o ProxyJump=ops@10.0.0.9:2222", "")


def test_a_template_the_inventory_cannot_fill_makes_the_host_invalid_not_a_guess():
    hostvars = {"ansible_ssh_common_args": "-o ProxyJump={{ hostvars['b']['ip'] }}"}
    host = InventoryHost("web1", "web1.lab", 22, (), ssh_args=runner.ssh_args_of(hostvars))
    target = runner.probe_target(host)
    assert "template fleet cannot evaluate" in target.problem and target.jumps == ()


def test_an_unreadable_jump_makes_the_host_invalid_with_what_to_fix():
    target = runner.probe_target(InventoryHost("web1", "w", 22, (), ssh_args=("", "-J b:ssh", "")))
    assert "invalid port 'ssh'" in target.problem and "ansible_ssh_common_args" in target.problem


def test_ansible_ssh_reads_fleets_ssh_config_so_proxyjump_hops_check_fleets_pins():
    args = runner.ansible_env(Path("/var/lib/fleet/ssh/known_hosts"), Path("/var/lib/fleet/cp"))["ANSIBLE_SSH_ARGS"]
    assert args.endswith("-F /var/lib/fleet/ssh/ssh_config")


def test_a_run_writes_the_ssh_config_its_arguments_name(tmp_path):
    job = spec(tmp_path, known_hosts=tmp_path / "ssh" / "known_hosts", identity=tmp_path / "ssh" / "id_ed25519")
    runner._prepare_directories(job)
    config = (tmp_path / "ssh" / "ssh_config").read_text()
    assert f"UserKnownHostsFile {tmp_path / 'ssh' / 'known_hosts'}" in config
    assert f"IdentityFile {tmp_path / 'ssh' / 'id_ed25519'}" in config


def test_ssh_arguments_from_ansible_cfg_or_the_environment_apply_where_a_host_sets_none(tmp_path):
    (tmp_path / "ansible.cfg").write_text("[defaults]\nforks = 5\n[ssh_connection]\n"
                                          "ssh_common_args = -o ProxyJump=ops@10.0.0.9 ; through the bastion\n")
    defaults = runner.ssh_arg_defaults(tmp_path, environ={})
    assert defaults == {"ansible_ssh_common_args": "-o ProxyJump=ops@10.0.0.9"}
    assert runner.ssh_arg_defaults(tmp_path, environ={"ANSIBLE_SSH_COMMON_ARGS": "-J env"}) == {
        "ansible_ssh_common_args": "-J env"}
    listing = {"_meta": {"hostvars": {"own": {"ansible_ssh_common_args": "-J own"}, "plain": {}}},
               "all": {"hosts": ["own", "plain"]}}
    jumps = {h.name: runner.probe_target(h).jumps for h in hosts_from_listing(listing, defaults)}
    assert jumps == {"own": (hostkeys.Hop("own"),), "plain": (hostkeys.Hop("10.0.0.9", 22, "ops"),)}


def test_ansible_config_names_the_file_ansible_reads(tmp_path):
    chosen = tmp_path / "elsewhere.cfg"
    chosen.write_text("[ssh_connection]\nssh_extra_args = -J x\n")
    (tmp_path / "ansible.cfg").write_text("[ssh_connection]\nssh_extra_args = -J y\n")
    assert runner.ssh_arg_defaults(tmp_path, environ={"ANSIBLE_CONFIG": str(chosen)}) == {
        "ansible_ssh_extra_args": "-J x"}


def test_the_probe_follows_ssh_config_where_the_inventory_names_no_jump():
    config = paramiko.SSHConfig.from_text("Host *.internal\n    ProxyJump ops@10.0.0.9\nHost bad\n    Port ssh\n")
    behind = runner.probe_target(InventoryHost("web1", "web1.internal", 22, ()), config)
    assert behind.jumps == (hostkeys.Hop("10.0.0.9", 22, "ops"),) and behind.problem == ""
    broken = runner.probe_target(InventoryHost("b", "bad", 22, ()), config)
    assert "invalid port 'ssh'" in broken.problem and "~/.ssh/config" in broken.problem


# --- requirements.yml (issue 12) --------------------------------------------------------------------------

REQUIREMENTS_CASES = {
    "both kinds": ("collections:\n  - name: ./ns-c-1.0.0.tar.gz\n    type: file\n  - community.general\n"
                   "roles:\n  - name: web\n    src: git+file:///srv/web\n",
                   {"collection": ["./ns-c-1.0.0.tar.gz", "community.general"], "role": ["web"]}),
    "the old format lists roles": ("- src: git+file:///srv/web\n", {"role": ["git+file:///srv/web"]}),
    "empty": ("", {}),
    "an empty section": ("collections: []\nroles:\n", {}),
}


@pytest.mark.parametrize(("text", "wanted"), REQUIREMENTS_CASES.values(), ids=REQUIREMENTS_CASES.keys())
def test_requirements_of(text, wanted):
    assert runner.requirements_of(text) == wanted


def test_a_requirements_file_that_is_no_list_or_mapping_is_refused():
    with pytest.raises(ValueError, match="list of roles or a mapping"):
        runner.requirements_of("just words\n")


def test_a_galaxy_failure_names_the_requirements_its_output_names(tmp_path):
    output = ("[WARNING]: The specified collections path 'x' is not part of the configured Ansible collections "
              "paths\n[WARNING]: Skipping Galaxy server. Got an unexpected error when getting available versions "
              "of collection community.nonexistent\n[ERROR]: Unknown error when attempting to call Galaxy\n")
    problem = runner.galaxy_problem("requirements.yml", "collection", ["./a.tar.gz", "community.nonexistent"],
                                    output, tmp_path)
    assert problem.startswith("requirements.yml: ansible-galaxy could not install the collections "
                              "community.nonexistent; ")
    assert "Unknown error" in problem and "not part of the configured" not in problem


def test_playbooks_find_the_revisions_requirements_first(tmp_path):
    assert runner.requirements_env(tmp_path) == {}
    (tmp_path / runner.COLLECTIONS_DIR).mkdir()
    (tmp_path / runner.ROLES_DIR).mkdir()
    env = runner.requirements_env(tmp_path)
    assert env["ANSIBLE_COLLECTIONS_PATH"].split(":")[0] == str(tmp_path / ".fleet-collections")
    assert env["ANSIBLE_ROLES_PATH"].split(":")[0] == str(tmp_path / ".fleet-roles")


def test_an_install_past_its_timeout_is_stopped_and_named(tmp_path):
    """The real ansible-galaxy, given no time at all: the install is killed and nothing is left half done."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "requirements.yml").write_text("collections:\n  - name: community.general\n")
    real = runner.AnsibleRunner(tmp_path / "known_hosts", tmp_path / "cp", galaxy_timeout=0.01)
    problem = real.install_requirements(tree)
    assert problem.startswith("requirements.yml: ansible-galaxy took over 0.01s")
    assert not (tree / runner.COLLECTIONS_DIR).exists() and not (tree / runner.REQUIREMENTS_DONE).exists()


def test_a_source_without_requirements_installs_nothing_and_says_so_once(tmp_path):
    real = runner.AnsibleRunner(tmp_path / "known_hosts", tmp_path / "cp")
    assert real.install_requirements(tmp_path) == ""
    assert (tmp_path / runner.REQUIREMENTS_DONE).exists() and not (tmp_path / runner.COLLECTIONS_DIR).exists()
