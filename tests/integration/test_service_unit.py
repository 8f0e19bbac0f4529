"""contrib/fleet.service and contrib/fleet-worker.service: systemd accepts them, they are hardened, and
docs/operating.md shows exactly these files.

`systemd-analyze verify` checks a unit without a running systemd, but it
wants the ExecStart binary to exist: the test points a copy at this venv's
`fleet`. It does not notice a comment after a value (systemd then reads the
comment as part of the value: the README's old `EnvironmentFile=... # ...`
named a file that never existed), so a test of our own reads every line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "fleet.service"
WORKER_UNIT = ROOT / "contrib" / "fleet-worker.service"
INSTALLED_FLEET = "/opt/fleet/bin/fleet"
# Where the units are shown to people who install them (the README links there).
OPERATING_DOC = ROOT / "docs" / "operating.md"

HARDENING = {
    "User": "fleet", "Group": "fleet", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/fleet",
    "PrivateTmp": "yes", "NoNewPrivileges": "yes", "ProtectHome": "yes", "StateDirectory": "fleet",
    "UMask": "0077", "KillSignal": "SIGTERM", "TimeoutStopSec": "60", "Restart": "on-failure",
    "EnvironmentFile": "-/etc/fleet/fleet.env", "ExecStart": f"{INSTALLED_FLEET} serve",
}
WORKER_HARDENING = {
    **HARDENING, "ReadWritePaths": "/var/lib/fleet-worker", "StateDirectory": "fleet-worker",
    "TimeoutStopSec": "900", "EnvironmentFile": "-/etc/fleet/worker.env",
    "ExecStart": f"{INSTALLED_FLEET} worker --name fleet@%H --concurrency 2",
}
UNITS = [pytest.param(UNIT, "Running fleet as a service", id="fleet.service"),
         pytest.param(WORKER_UNIT, "Scale-out: workers", id="fleet-worker.service")]


def service_settings(text: str) -> dict[str, list[str]]:
    """Every Key=value of the [Service] section, values in order (Environment= repeats)."""
    settings: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.parametrize("unit,_", UNITS)
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path, unit, _):
    fleet = Path(sys.executable).parent / "fleet"
    assert fleet.is_file(), f"this venv has no fleet command at {fleet}; run pip install -e ."
    text = unit.read_text()
    assert f"ExecStart={INSTALLED_FLEET} " in text
    copy = tmp_path / unit.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_FLEET} ", f"ExecStart={fleet} "))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert unit.name not in said, said


def test_verify_would_catch_a_unit_systemd_cannot_read(tmp_path):
    """The check above can fail: a wrong value or a missing binary is reported."""
    fleet = Path(sys.executable).parent / "fleet"
    broken = UNIT.read_text().replace(f"ExecStart={INSTALLED_FLEET} ", f"ExecStart={fleet} ")
    broken = broken.replace("ProtectSystem=strict", "ProtectSystem=strictly")
    copy = tmp_path / "fleet.service"
    copy.write_text(broken)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert "protect system value" in result.stdout + result.stderr


@pytest.mark.parametrize("unit,hardening,data_dir", [
    pytest.param(UNIT, HARDENING, "/var/lib/fleet", id="fleet.service"),
    pytest.param(WORKER_UNIT, WORKER_HARDENING, "/var/lib/fleet-worker", id="fleet-worker.service"),
])
def test_the_unit_is_hardened_and_runs_the_wheel_installed_in_opt_fleet(unit, hardening, data_dir):
    settings = service_settings(unit.read_text())
    for key, value in hardening.items():
        assert settings.get(key) == [value], f"{key}: {settings.get(key)}"
    assert f"FLEET_DATA_DIR={data_dir}" in settings["Environment"]


@pytest.mark.parametrize("unit,_", UNITS)
def test_no_value_carries_a_trailing_comment(unit, _):
    """systemd takes `Key=value  # note` as the value `value  # note`; comments go on their own lines."""
    for number, line in enumerate(unit.read_text().splitlines(), 1):
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            value = line.partition("=")[2]
            assert not re.search(r"\s[#;]", value), f"contrib/{unit.name}:{number}: comment after a value: {line}"


@pytest.mark.parametrize("unit,heading", UNITS)
def test_the_operating_docs_show_exactly_the_shipped_unit(unit, heading):
    doc = OPERATING_DOC.read_text()
    section = doc.partition(f"\n## {heading}\n")[2]
    assert section, f"docs/operating.md: no '## {heading}' section"
    match = re.search(r"```ini\n(.*?)```", section, re.S)
    assert match, f"docs/operating.md: no ```ini block under '{heading}'"
    assert match.group(1) == unit.read_text(), (
        f"docs/operating.md's unit differs from contrib/{unit.name}: paste the file")
