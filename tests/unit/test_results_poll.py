"""fleet's callback plugin makes ansible-playbook look for results every 10 ms, unless ansible.cfg says otherwise.

Loaded in a separate Python, as ansible-playbook loads it, so this test process's Ansible stays untouched."""

import os
import subprocess
import sys

from fleet.runner import CALLBACK_DIR

LOAD_AND_SAY = ("import runpy; runpy.run_path({path!r}); "
                "from ansible import constants; print(constants.DEFAULT_INTERNAL_POLL_INTERVAL)")


def poll_interval_after_loading(env: dict, cwd) -> float:
    code = LOAD_AND_SAY.format(path=str(CALLBACK_DIR / "awx_display.py"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def test_the_plugin_makes_ansible_poll_results_every_10_ms(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    assert poll_interval_after_loading(env, tmp_path) == 0.01


def test_an_ansible_cfg_that_sets_the_interval_wins(tmp_path):
    (tmp_path / "ansible.cfg").write_text("[defaults]\ninternal_poll_interval = 0.05\n")
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CONFIG"}
    assert poll_interval_after_loading(env, tmp_path) == 0.05
