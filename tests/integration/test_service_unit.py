"""contrib/fleet.service: systemd accepts it, it is hardened, and the README shows exactly this file.

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

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "fleet.service"
INSTALLED_FLEET = "/opt/fleet/bin/fleet"

HARDENING = {
    "User": "fleet", "Group": "fleet", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/fleet",
    "PrivateTmp": "yes", "NoNewPrivileges": "yes", "ProtectHome": "yes", "StateDirectory": "fleet",
    "UMask": "0077", "KillSignal": "SIGTERM", "TimeoutStopSec": "60", "Restart": "on-failure",
    "EnvironmentFile": "-/etc/fleet/fleet.env", "ExecStart": f"{INSTALLED_FLEET} serve",
}


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


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path):
    fleet = Path(sys.executable).parent / "fleet"
    assert fleet.is_file(), f"this venv has no fleet command at {fleet}; run pip install -e ."
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_FLEET} serve\n" in text
    copy = tmp_path / "fleet.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_FLEET} ", f"ExecStart={fleet} "))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "fleet.service" not in said, said


def test_verify_would_catch_a_unit_systemd_cannot_read(tmp_path):
    """The check above can fail: a wrong value or a missing binary is reported."""
    fleet = Path(sys.executable).parent / "fleet"
    broken = UNIT.read_text().replace(f"ExecStart={INSTALLED_FLEET} ", f"ExecStart={fleet} ")
    broken = broken.replace("ProtectSystem=strict", "ProtectSystem=strictly")
    copy = tmp_path / "fleet.service"
    copy.write_text(broken)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert "protect system value" in result.stdout + result.stderr


def test_the_unit_is_hardened_and_runs_the_wheel_installed_in_opt_fleet():
    settings = service_settings(UNIT.read_text())
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], f"{key}: {settings.get(key)}"
    assert "FLEET_DATA_DIR=/var/lib/fleet" in settings["Environment"]


def test_no_value_carries_a_trailing_comment():
    """systemd takes `Key=value  # note` as the value `value  # note`; comments go on their own lines."""
    for number, line in enumerate(UNIT.read_text().splitlines(), 1):
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            value = line.partition("=")[2]
            assert not re.search(r"\s[#;]", value), f"contrib/fleet.service:{number}: comment after a value: {line}"


def test_the_readme_shows_exactly_the_shipped_unit():
    readme = (ROOT / "README.md").read_text()
    section = readme.partition("### Running fleet as a service")[2]
    match = re.search(r"```ini\n(.*?)```", section, re.S)
    assert match, "README: no ```ini block under 'Running fleet as a service'"
    assert match.group(1) == UNIT.read_text(), "README's unit differs from contrib/fleet.service: paste the file"
