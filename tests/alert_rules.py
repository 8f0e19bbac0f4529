"""docs/alerts.yml, evaluated the way Prometheus would, for the simple form its rules keep.

No promtool here: each rule's expr must be `metric > number`, optionally with `label="value"`
matchers; a rule in any other form fails the test that loads it rather than being skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

ALERTS_FILE = Path(__file__).resolve().parent.parent / "docs" / "alerts.yml"
SIMPLE_EXPR = re.compile(r'^(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<matchers>[^{}]*)\})?\s*>\s*'
                         r'(?P<threshold>[0-9]+(?:\.[0-9]+)?)$')
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"\s*(?:,|$)')


@dataclass(frozen=True)
class AlertRule:
    name: str
    metric: str
    matchers: dict[str, str]
    threshold: float

    def firing(self, scrape_text: str) -> list[dict[str, str]]:
        """The label sets of the samples for which this rule's expression is true."""
        return [sample.labels for family in text_string_to_metric_families(scrape_text)
                for sample in family.samples
                if sample.name == self.metric and sample.value > self.threshold
                and all(sample.labels.get(key) == value for key, value in self.matchers.items())]


def load_alert_rules(path: Path = ALERTS_FILE) -> dict[str, AlertRule]:
    """Every alerting rule of the file by name; an expression outside the simple form is an error."""
    rules = {}
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            match = SIMPLE_EXPR.match(str(rule["expr"]).strip())
            assert match, f"{rule['alert']}: {rule['expr']!r} is not `metric{{label=\"v\"}} > number`"
            matchers = match["matchers"] or ""
            pairs = MATCHER.findall(matchers)
            assert MATCHER.sub("", matchers).strip() == "", f"{rule['alert']}: only label=\"value\" matchers"
            rules[rule["alert"]] = AlertRule(rule["alert"], match["metric"], dict(pairs), float(match["threshold"]))
    return rules
