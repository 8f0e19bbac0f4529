"""The example roles under molecule: converge, idempotence and verify on real lab hosts.

The scenario's lab lives on its own subnet (127.0.30.x, 127.0.31.x), away
from the demo lab and the integration tests. A lab only stops the hosts of
its own directory, so two runs of this scenario must not overlap (the suite
runs serially; the scenario's create step refuses to start while something
else answers on those addresses).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import lab

ROOT = Path(__file__).resolve().parents[2]
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.lab
def test_default_scenario_converges_idempotently(tmp_path: Path) -> None:
    ephemeral = tmp_path / "molecule"
    env = {
        **os.environ,
        # molecule calls ansible-playbook and ansible-config by name.
        "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        # Our own scratch directory: the lab's data (keys, known_hosts) lives in it.
        "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral),
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
    }
    try:
        result = subprocess.run(
            [Path(sys.prefix) / "bin" / "molecule", "test"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
        )
    finally:
        # molecule's destroy step stops the hosts; this covers a molecule crash.
        lab.stop_lab(ephemeral / "fleet" / "lab")
    output = ANSI_ESCAPE.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"idempotence: Executed: Successful", output), output[-6000:]
    assert re.search(r"verify: Executed: Successful", output), output[-6000:]
