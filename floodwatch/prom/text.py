"""The Prometheus text exposition format (version 0.0.4), written by hand: families of samples with
their HELP and TYPE lines, correct escaping, and a histogram with fixed buckets.

Label values may hold anything an agent sent (a node name, an incident family): they are escaped here,
once, and bounded by the callers (caps on nodes and families, fixed sets for routes and operations).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
_BAD_NAME = re.compile(r"[^a-zA-Z0-9_]+")
# Seconds: from a cached read (0.5 ms) to a request stuck behind a slow disk (10 s).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Labels = tuple[tuple[str, str], ...]


def metric_name(*parts: str) -> str:
    """Parts joined by `_`, anything outside [a-zA-Z0-9_] replaced by `_`, never starting with a digit."""
    name = _BAD_NAME.sub("_", "_".join(p for p in parts if p)).strip("_")
    return f"_{name}" if name[:1].isdigit() else name


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels) + "}"


@dataclass
class Family:
    """One metric family: its samples are (name suffix, labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> None:
        self.samples.append((suffix, tuple((labels or {}).items()), value))

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for suffix, labels, value in self.samples:
            yield f"{self.name}{suffix}{_labels(labels)} {format_value(value)}"


class Exposition:
    """The families of one scrape, rendered in the order they were first asked for."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}

    def family(self, name: str, kind: str, help_text: str) -> Family:
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = Family(name, kind, help_text)
        return fam

    def add(self, name: str, kind: str, help_text: str, value: float,
            labels: Mapping[str, str] | None = None) -> None:
        self.family(name, kind, help_text).add(value, labels)

    def render(self) -> str:
        return "\n".join(line for fam in self.families.values() if fam.samples for line in fam.render()) + "\n"


class Histogram:
    """Observations per label set, in fixed buckets. One writer at a time per instance is assumed (the
    event loop, or the database thread): readers may see a scrape that is one observation behind."""

    def __init__(self, label_names: Sequence[str], buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.label_names = tuple(label_names)
        self.buckets = tuple(sorted(buckets))
        self.series: dict[tuple[str, ...], list[float]] = {}  # label values -> [bucket counts..., sum, count]

    def observe(self, value: float, *label_values: str) -> None:
        row = self.series.get(label_values)
        if row is None:
            row = self.series[label_values] = [0.0] * (len(self.buckets) + 2)
        i = bisect_left(self.buckets, value)  # the first bound >= value (none: only +Inf counts it)
        if i < len(self.buckets):
            row[i] += 1
        row[-2] += value
        row[-1] += 1

    def count(self, *label_values: str) -> int:
        row = self.series.get(label_values)
        return int(row[-1]) if row else 0

    def export(self, fam: Family) -> None:
        """Cumulative buckets, +Inf, _sum and _count for every label set, into a histogram family."""
        for values, row in sorted(self.series.items()):
            labels = dict(zip(self.label_names, values, strict=True))
            running = 0.0
            for bound, n in zip(self.buckets, row, strict=False):
                running += n
                fam.add(int(running), {**labels, "le": format_value(float(bound))}, "_bucket")
            fam.add(int(row[-1]), {**labels, "le": "+Inf"}, "_bucket")
            fam.add(row[-2], labels, "_sum")
            fam.add(int(row[-1]), labels, "_count")
