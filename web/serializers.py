"""Prometheus text format (version 0.0.4) for GET /api/v1/metrics.

The JSON shapes of runs, hosts, revisions and approvals live in the core
(`fleet.shapes`), shared by the CLI and the API.
"""

from __future__ import annotations

# --- Prometheus text format (version 0.0.4) -------------------------------------

def prometheus_metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> str:
    """One metric family: HELP, TYPE, then a line per (labels, value) sample."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        lines.append(f"{name}{_prometheus_labels(labels)} {_prometheus_value(value)}")
    return "\n".join(lines) + "\n"


def _prometheus_labels(labels: dict) -> str:
    if not labels:
        return ""
    # Label values come from the database; escape them as the format demands.
    pairs = ",".join(f'{key}="{_escape_label(str(value))}"' for key, value in labels.items())
    return "{" + pairs + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _prometheus_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
