"""Lab host plans and the inventory written for them."""

import pytest

from fleet.errors import LabError
from fleet.lab import MAX_HOSTS_PER_GROUP, LabHost, lab_inventory, plan_lab_hosts

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
