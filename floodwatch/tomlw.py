"""A small TOML writer for the configs floodwatch generates (analyze, tests): tables of plain values."""

from __future__ import annotations

import json
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dumps(data: dict[str, dict[str, Any]]) -> str:
    """{section: {key: value}} -> TOML text."""
    out: list[str] = []
    for section, values in data.items():
        out.append(f"[{section}]")
        out.extend(f"{key} = {_value(v)}" for key, v in values.items())
        out.append("")
    return "\n".join(out)
