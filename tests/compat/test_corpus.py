"""fleet agrees with plain ansible-playbook on content no one here wrote.

The corpus (tests/compat/corpus: modules of ansible-core and of the collections in PyPI's `ansible` 12.x, two
collections of its own from requirements.yml, roles with defaults/vars/meta, become with sudo, vault, pause,
async, serial, strategy free, …) runs the same sequence on every path, each on fresh lab hosts of its own:
check (fresh) → converge → sudo revoked on db1 → check → hand change on web1, collections upgraded → check.
Plain `ansible-playbook` is the oracle for every task's status on every host and for each host's verdict; the
four fleet paths (cold/warm × Mitogen/linear) must say the same. The only differences allowed are the truth
rule's, listed below with their reasons: fleet may turn a status into `unverified`, never into `ok`.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compat.conftest import (HAND_CHANGE, PATHS, REVOKE_SUDO, Lab, Outcome, run_path, start_lab, stop_lab,
                                   upgrade_collections)

pytestmark = pytest.mark.lab

FLEET_PATHS = [name for name in PATHS if name != "oracle"]
STEPS = [("fresh check", "check"), ("converge", "converge"), ("check, sudo revoked on db1", "check"),
         ("check after hand change, collections upgraded", "check")]
MIN_MODULES = 60

# The documented differences: (oracle's word, fleet's word) -> why fleet may say so. Nothing else may differ.
ALLOWED = {
    ("skipped", "unverified skipped"): "truth rule: check mode skipped the task (a command that would have run, "
                                       "a condition), so whether it would change the host is not known",
    ("ok", "unverified ok"): "truth rule: ok without being evaluated (changed_when: false on a command that did "
                             "not run in the check, an async task)",
    ("in_sync", "unverified"): "truth rule: a host with no drift but unverified tasks is not claimed in_sync",
}


@dataclass
class Disagreement:
    step: str
    task: str  # a task name, or "verdict" for the host's verdict
    host: str
    expected: str
    got: str

    def __str__(self):
        return f"{self.step}: {self.task} on {self.host}: oracle {self.expected}, fleet {self.got}"


def compare(step: str, oracle: Outcome, fleet: Outcome) -> list[Disagreement]:
    if oracle.error or fleet.error:
        return [Disagreement(step, "run", "-", oracle.error or "results", fleet.error or "results")]
    found = []
    for task, host in sorted(set(oracle.statuses) | set(fleet.statuses)):
        want, got = oracle.statuses.get((task, host), "absent"), fleet.statuses.get((task, host), "absent")
        if want != got and (want, got) not in ALLOWED:
            found.append(Disagreement(step, task, host, want, got))
    for host in sorted(set(oracle.verdicts) | set(fleet.verdicts)):
        want, got = oracle.verdicts.get(host, "absent"), fleet.verdicts.get(host, "absent")
        if want != got and (want, got) not in ALLOWED:
            found.append(Disagreement(step, "verdict", host, want, got))
    return found


def run_sequence(lab: Lab, log: Path) -> list[tuple[str, Outcome, float]]:
    """The corpus's four runs on one path's hosts: sudo revoked before the third, the hand change before the last."""
    outcomes = []
    for step, kind in STEPS:
        if step == STEPS[2][0]:  # same revision as the converge: a warm path must not reuse the old sudo
            lab.ssh("db1", REVOKE_SUDO)
        if step == STEPS[3][0]:
            lab.ssh("web1", HAND_CHANGE)
            upgrade_collections(lab.repo, lab.workdir)
        started = time.monotonic()
        outcome = run_path(lab, kind)
        outcomes.append((step, outcome, time.monotonic() - started))
        with log.open("a") as out:  # progress of a long test, and each run's raw outcome for a later look
            out.write(json.dumps({"path": lab.name, "step": step, "seconds": round(outcomes[-1][2]),
                                  "statuses": [[*key, value] for key, value in outcome.statuses.items()],
                                  "verdicts": outcome.verdicts, "error": outcome.error}) + "\n")
    return outcomes


def one_path(name: str, root: Path) -> list[tuple[str, Outcome, float]]:
    lab = start_lab(name, root / name.replace(" ", "-"))
    try:
        return run_sequence(lab, root / "outcomes.jsonl")
    finally:
        stop_lab(lab)


def table(cases: list[str], results: dict[str, list[Disagreement]]) -> str:
    """Markdown: one row per case (task, or a host's verdict), one column per fleet path."""
    lines = ["| case | " + " | ".join(FLEET_PATHS) + " |", "|---|" + "---|" * len(FLEET_PATHS)]
    for case in cases:
        cells = []
        for path in FLEET_PATHS:
            bad = [d for d in results[path] if d.task == case]
            cells.append("agree" if not bad else "**disagree**: " + "; ".join(
                f"{d.step} on {d.host}: {d.expected} → {d.got}" for d in bad))
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_fleet_agrees_with_plain_ansible_playbook_on_the_corpus(tmp_path):
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(PATHS)) as pool:
        futures = {name: pool.submit(one_path, name, tmp_path) for name in PATHS}
        runs = {name: future.result() for name, future in futures.items()}
    elapsed = time.monotonic() - started

    oracle = runs["oracle"]
    assert not [o.error for _, o, _ in oracle if o.error], "the oracle itself must run the corpus"
    modules = set().union(*(o.actions for _, o, _ in oracle))
    results = {path: [d for (step, want, _), (_, got, _) in zip(oracle, runs[path])
                      for d in compare(step, want, got)] for path in FLEET_PATHS}
    disagreeing = [d.task for ds in results.values() for d in ds]
    cases = list(dict.fromkeys([*(t for _, o, _ in oracle for t, _ in o.statuses), *disagreeing, "verdict"]))
    report = "\n".join([
        f"{len(modules)} distinct modules: {', '.join(sorted(modules))}",
        f"wall time {elapsed:.0f}s (paths side by side); per step: " + "; ".join(
            f"{name}: " + "/".join(f"{seconds:.0f}s" for _, _, seconds in runs[name]) for name in PATHS),
        "", table(cases, results), "",
        "documented differences (allowed):", *(f"- oracle {a} / fleet {b}: {why}" for (a, b), why in ALLOWED.items()),
        "", "disagreements:", *(f"- {path}: {d}" for path, ds in results.items() for d in ds)])
    (tmp_path / "compat-table.md").write_text(report + "\n")
    print("\n" + report + f"\n(table written to {tmp_path / 'compat-table.md'})")

    assert len(modules) >= MIN_MODULES, f"the corpus runs {len(modules)} distinct modules, wants {MIN_MODULES}"
    disagreements = [f"{path}: {d}" for path, ds in results.items() for d in ds]
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements)
