"""Real lab hosts (Linux namespaces with sshd) and a real git source for them."""

from __future__ import annotations


import pytest

from tests.conftest import FleetCli, make_source

# Integration tests use their own loopback subnet so they never meet a demo lab (127.0.10.x).
TEST_SUBNET = 20
LAB_HOSTS = 4


@pytest.fixture(scope="module")
def lab_env(tmp_path_factory):
    """Four fresh lab hosts, a git source that targets them, and a `fleet` bound to both."""
    root = tmp_path_factory.mktemp("lab")
    data_dir = root / "data"
    cli = FleetCli(data_dir, root / "source", root)
    up = cli("lab", "up", "--hosts", str(LAB_HOSTS), "--subnet", str(TEST_SUBNET))
    assert up.code == 0, up.stderr
    inventory = (data_dir / "lab" / "hosts.yml").read_text()
    make_source(root / "source", inventory)
    yield cli
    down = cli("lab", "down")
    assert down.code == 0, down.stderr
