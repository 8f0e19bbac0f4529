"""`make bench`: every benchmark in one run, results with machine, date and commands in bench/RESULTS.md.

    python -m bench.run [--only check,scaling,ingest,history,footprint,mitogen,scaleout] [--rounds N] [--out PATH]

This machine is shared and noisy, so contenders run interleaved in the same
session and the headline numbers are ratios.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

from bench import common

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTIONS = ("check", "scaling", "ingest", "history", "footprint", "mitogen", "scaleout")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results (a part run "
                        "written elsewhere keeps the full RESULTS.md)")
    args = parser.parse_args(argv)
    chosen = [s for s in args.only.split(",") if s]
    lines = header(" ".join(["python -m bench.run", *(argv or sys.argv[1:])]))
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = Path(tmp)
        for section in chosen:
            print(f"== {section}", flush=True)
            lines += SECTION_RUNNERS[section](work, args.rounds)
            args.out.write_text("\n".join(lines) + "\n")  # keep what is measured even if a later section fails
    print(args.out.read_text())
    return 0


def header(command: str) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# fleet benchmark results",
        "",
        f"- date: {now}",
        f"- machine: {common.machine_description()}",
        f"- packages: {common.package_versions()}",
        f"- command: `{command}` (via `make bench`)",
        "",
    ]


def run_check(work: Path, rounds: int) -> list[str]:
    from bench import fleet_check

    runners = fleet_check.measure(work, hosts=20, subnet=70, rounds=rounds)
    named = {runner.name: runner for runner in runners}
    fleet, cold = named[fleet_check.WARM], named[fleet_check.COLD]
    plain, piped = named[fleet_check.PLAIN], named[fleet_check.PIPELINING]
    lines = ["## Fleet check: 20 fresh lab hosts, the example playbook", "",
             f"Median of {rounds} interleaved rounds after one warm-up round each. CPU is user+system "
             "of the command and all its children (Ansible forks, SSH). fleet runs twice per round: once "
             "finding the previous run's SSH connections open, as a scheduled check does "
             "(FLEET_SSH_PERSIST=3600), and once opening new ones (FLEET_SSH_PERSIST=1).", "",
             "| contender | wall s | CPU s | wall / plain defaults | wall / plain pipelining |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for runner in runners:
        lines.append(f"| {runner.name} | {runner.wall:.1f} | {runner.cpu:.1f} | "
                     f"{runner.wall / plain.wall:.2f} | {runner.wall / piped.wall:.2f} |")
    lines += ["", f"Goal: fleet at most 0.30 of plain defaults (measured {fleet.wall / plain.wall:.2f}) "
              f"and at most 0.50 of plain with pipelining (measured {fleet.wall / piped.wall:.2f}). "
              f"With kept connections fleet took {fleet.wall:.1f} s, with new ones {cold.wall:.1f} s; on "
              "loopback a handshake is cheap, over a real network each host saves its SSH handshake.", "",
              "Commands (run in the source checkout):", ""]
    lines += [f"- {r.name}: `{r.shown()}`" + _env_note(r) for r in runners]
    return lines + [""]


def _env_note(contender) -> str:
    names = ("FLEET_SSH_PERSIST", "ANSIBLE_PIPELINING", "ANSIBLE_CALLBACK_PLUGINS", "ANSIBLE_CALLBACKS_ENABLED",
             "ARA_API_CLIENT", "ARA_DATABASE_NAME")
    shown = {name: contender.env[name] for name in names if name in contender.env}
    return "".join(f" with {name}={value}" for name, value in shown.items())


def run_scaling(work: Path, rounds: int) -> list[str]:
    from bench import fleet_check

    lines = ["## Scaling: `fleet check` wall time by fleet size", "",
             "| hosts | wall s | CPU s | s per host |", "| ---: | ---: | ---: | ---: |"]
    for index, hosts in enumerate((10, 20, 50)):
        fleet = fleet_check.measure(work, hosts=hosts, subnet=80 + 2 * index, rounds=max(1, rounds - 1),
                                    only_fleet=True)[0]
        lines.append(f"| {hosts} | {fleet.wall:.1f} | {fleet.cpu:.1f} | {fleet.wall / hosts:.2f} |")
    return lines + [""]


def run_ingest(work: Path, rounds: int) -> list[str]:
    from bench import ingest
    from fleet.store.records import BATCH_ROWS

    result = ingest.measure(work)
    return ["## Ingestion: events per second into the SQLite store", "",
            f"{result['events']:,} synthetic check events (50 hosts, one diff in seven tasks) through "
            f"DriftTracker and RunRecorder (batches of {BATCH_ROWS} "
            f"rows, one transaction each): {result['seconds']:.1f} s, "
            f"**{result['per_second']:,.0f} events/s** ({result['rows']:,} rows). Goal: at least 5,000/s.", ""]


def run_history(work: Path, rounds: int) -> list[str]:
    from bench import history

    return history.report(work)


def run_footprint(work: Path, rounds: int) -> list[str]:
    from bench import footprint

    result = footprint.measure(work, hosts=50, subnet=90)
    return ["## Footprint: resident memory of `fleet serve`", "",
            f"- idle (after its first check of 50 hosts): {result['idle_mib']:.0f} MiB",
            f"- peak during a 50-host check, the serve process alone: {result['peak_serve_mib']:.0f} MiB",
            f"- peak of serve plus its Ansible children (proportional set size, shared pages split among "
            f"the forks that share them): {result['peak_tree_mib']:.0f} MiB",
            f"- SSH connections kept open for the next check: {result['ssh_masters']} `ssh` masters, "
            f"{result['ssh_masters_mib']:.0f} MiB together (proportional set size)",
            "- goal: under 300 MB for `fleet serve`", ""]


def run_mitogen(work: Path, rounds: int) -> list[str]:
    from bench import mitogen_race

    runners = mitogen_race.measure(work, hosts=20, subnet=71, rounds=rounds)
    return mitogen_race.report(runners, rounds, hosts=20)


def run_scaleout(work: Path, rounds: int) -> list[str]:
    from bench import scaleout

    return scaleout.report(scaleout.measure(work, rounds=rounds), rounds)


SECTION_RUNNERS = {"check": run_check, "scaling": run_scaling, "ingest": run_ingest, "history": run_history,
                   "footprint": run_footprint, "mitogen": run_mitogen, "scaleout": run_scaleout}

if __name__ == "__main__":
    sys.exit(main())
