"""`fleet serve`'s pure parts: the bind address."""

from __future__ import annotations

import pytest

from fleet.errors import ConfigError
from fleet.serve import parse_bind


@pytest.mark.parametrize("bind, expected", [
    pytest.param("127.0.0.1:8080", ("127.0.0.1", 8080), id="ipv4"),
    pytest.param("[::1]:9000", ("::1", 9000), id="ipv6 in brackets"),
    pytest.param("0.0.0.0:80", ("0.0.0.0", 80), id="all addresses"),
])
def test_parse_bind(bind, expected):
    assert parse_bind(bind) == expected


@pytest.mark.parametrize("bind", ["8080", "localhost", "host:port", ":8080"])
def test_parse_bind_refuses_what_is_not_host_and_port(bind):
    with pytest.raises(ConfigError, match="FLEET_BIND"):
        parse_bind(bind)
