"""[executor] config section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutorSettings:
    enabled: bool = True
