"""[aggregator] config section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AggregatorSettings:
    enabled: bool = True
