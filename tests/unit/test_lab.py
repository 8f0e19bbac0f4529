"""Lab host plans and the inventory written for them."""

import pytest

from fleet.errors import LabError
from fleet.lab import MAX_HOSTS_PER_GROUP, LabHost, jump_etc_hosts, lab_inventory, plan_lab_hosts, restart_host

PLAN_CASES = {
    "one host is one web host": (1, [("web1", "web", "127.0.10.1")]),
    "four hosts split evenly": (4, [
        ("web1", "web", "127.0.10.1"), ("web2", "web", "127.0.10.2"),
        ("db1", "db", "127.0.11.1"), ("db2", "db", "127.0.11.2"),
    ]),
    "odd count gives web the extra host": (5, [
        ("web1", "web", "127.0.10.1"), ("web2", "web", "127.0.10.2"), ("web3", "web", "127.0.10.3"),
        ("db1", "db", "127.0.11.1"), ("db2", "db", "127.0.11.2"),
    ]),
}


@pytest.mark.parametrize(("count", "expected"), PLAN_CASES.values(), ids=PLAN_CASES.keys())
def test_plan_lab_hosts(count, expected):
    assert plan_lab_hosts(count) == [LabHost(*fields) for fields in expected]


def test_other_subnet_moves_both_groups():
    assert [h.address for h in plan_lab_hosts(3, subnet=20)] == ["127.0.20.1", "127.0.20.2", "127.0.21.1"]


def test_highest_subnet_still_gives_valid_addresses():
    assert [h.address for h in plan_lab_hosts(2, subnet=253)] == ["127.0.253.1", "127.0.254.1"]


def test_largest_lab_fills_both_groups():
    hosts = plan_lab_hosts(2 * MAX_HOSTS_PER_GROUP)
    assert len(hosts) == 2 * MAX_HOSTS_PER_GROUP
    assert hosts[MAX_HOSTS_PER_GROUP - 1].address == f"127.0.10.{MAX_HOSTS_PER_GROUP}"
    assert hosts[-1].address == f"127.0.11.{MAX_HOSTS_PER_GROUP}"
    assert len({h.address for h in hosts}) == len(hosts)


ERROR_CASES = {
    "no hosts": (0, 10, "at least one host"),
    "negative hosts": (-3, 10, "at least one host"),
    "too many hosts": (2 * MAX_HOSTS_PER_GROUP + 1, 10, "at most 508 hosts"),
    "subnet zero": (2, 0, "between 1 and 253, got 0"),
    "subnet whose db group would leave the octet": (2, 254, "between 1 and 253, got 254"),
}


@pytest.mark.parametrize(("count", "subnet", "message"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_bad_plans_raise_lab_error(count, subnet, message):
    with pytest.raises(LabError, match=message):
        plan_lab_hosts(count, subnet=subnet)


def test_lab_inventory():
    inventory = lab_inventory(plan_lab_hosts(3))
    assert inventory == {"all": {
        "vars": {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3"},
        "children": {
            "web": {"hosts": {"web1": {"ansible_host": "127.0.10.1"}, "web2": {"ansible_host": "127.0.10.2"}}},
            "db": {"hosts": {"db1": {"ansible_host": "127.0.11.1"}}},
        },
    }}


def test_lab_inventory_of_one_host_has_no_db_group():
    assert list(lab_inventory(plan_lab_hosts(1))["all"]["children"]) == ["web"]


# --- a jump host before the others ------------------------------------------------------------

def test_a_jump_lab_puts_the_bastion_last_on_the_web_subnets_last_address():
    hosts = plan_lab_hosts(2, subnet=28, jump=True)
    assert hosts == [LabHost("web1", "web", "127.0.28.1"), LabHost("db1", "db", "127.0.29.1"),
                     LabHost("bastion", "bastion", "127.0.28.254")]


def test_a_jump_lab_leaves_the_bastions_address_to_it():
    with pytest.raises(LabError, match="at most 506 hosts with a jump host"):
        plan_lab_hosts(2 * MAX_HOSTS_PER_GROUP, jump=True)
    hosts = plan_lab_hosts(2 * (MAX_HOSTS_PER_GROUP - 1), jump=True)
    assert len({h.address for h in hosts}) == len(hosts)


def test_hosts_behind_the_bastion_are_named_so_only_it_resolves_them():
    hosts = plan_lab_hosts(2, subnet=28, jump=True)
    assert jump_etc_hosts(hosts) == "127.0.28.1\tweb1.lab\n127.0.29.1\tdb1.lab\n"
    assert lab_inventory(hosts)["all"]["children"] == {
        "web": {"hosts": {"web1": {"ansible_host": "web1.lab",
                                   "ansible_ssh_common_args": "-o ProxyJump=root@127.0.28.254"}}},
        "db": {"hosts": {"db1": {"ansible_host": "db1.lab",
                                 "ansible_ssh_common_args": "-o ProxyJump=root@127.0.28.254"}}},
    }


def test_restarting_a_host_of_no_lab_says_how_to_start_one(tmp_path):
    with pytest.raises(LabError, match="fleet lab up"):
        restart_host(tmp_path / "lab", "bastion")
