"""What fleet's callback says each task reads: the variable names of its templates, as Ansible loaded the play.

The plugin is loaded in a separate Python (as test_results_poll does), so its hooks never touch this
process's Ansible; the tasks are real Ansible Task objects from Play.load.
"""

import json
import subprocess
import sys

import pytest

from fleet.runner import CALLBACK_DIR

PLAY = {
    "hosts": "all",
    "gather_facts": False,
    "vars": {"play_derived": "{{ feature_on and other }}", "plain": "x"},
    "tasks": [
        {"name": "set_fact from the probe", "set_fact": {"feature_on": "{{ (flag.stdout | default('off')) == 'on' }}",
                                                         "cacheable": False}},
        {"name": "a condition through play vars", "copy": {"content": "x", "dest": "/x"},
         "when": ["play_derived | bool", "plain == 'x'"]},
        {"name": "a loop over a probe's lines", "file": {"path": "/srv/{{ item }}", "state": "touch"},
         "loop": "{{ listing.stdout_lines | default([]) }}"},
        {"name": "arguments through task vars", "copy": {"content": "port={{ port }}", "dest": "/p"},
         "vars": {"port": "{{ port_probe.stdout }}"}},
        {"name": "plain arguments", "copy": {"content": "fixed", "dest": "/f"}},
    ],
}

SCRIPT = """
import json, runpy, sys
plugin = runpy.run_path({path!r})
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play import Play
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader()  # as ansible-playbook does first: modules' names resolve through the collection loader
from ansible.vars.manager import VariableManager
loader = DataLoader()
play = Play.load(json.loads(sys.stdin.read()), variable_manager=VariableManager(loader=loader), loader=loader)
found = {{}}
for block in play.compile():
    for task in block.block:
        if task.name:
            found[task.name] = plugin["task_reads"](task, {{}}, task.action)
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def reads() -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(path=str(CALLBACK_DIR / "awx_display.py"))],
                          input=json.dumps(PLAY), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# (task, field of task_reads, what it holds)
CASES = {
    "set_fact names what each fact reads": ("set_fact from the probe", "sets", {"feature_on": ["flag"]}),
    "set_fact's value is not an argument read": ("set_fact from the probe", "arg_reads", []),
    "each condition with its names": ("a condition through play vars", "when_reads",
                                      {"play_derived | bool": ["play_derived"], "plain == 'x'": ["plain"]}),
    "play vars followed to what they read": ("a condition through play vars", "derived",
                                             {"play_derived": ["feature_on", "other"]}),
    "a loop's names": ("a loop over a probe's lines", "loop_reads", ["listing"]),
    "the loop variable is an argument name": ("a loop over a probe's lines", "arg_reads", ["item"]),
    "task vars followed to what they read": ("arguments through task vars", "derived", {"port": ["port_probe"]}),
    "arguments as written, not as templated": ("arguments through task vars", "arg_reads", ["port"]),
    "plain arguments read nothing": ("plain arguments", "arg_reads", []),
}


@pytest.mark.parametrize(("task", "field", "expected"), CASES.values(), ids=CASES.keys())
def test_task_reads(reads, task, field, expected):
    assert reads[task][field] == expected
