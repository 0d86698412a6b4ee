"""GET /config answers -> validated remote config and pending commands. Pure functions.

The server is not trusted: a config answer with a wrong type anywhere in its thresholds, baseline or
IOC patterns is refused as a whole (logged by the caller) rather than half-applied. Pending commands
are judged one by one: each with an integer id is passed on as data (`command` untouched, the
executor validates it); one without a usable id cannot be acknowledged and is only reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from floodwatch.messages import IocPattern

MAX_IOC_PATTERNS = 10000
MAX_PATTERN_CHARS = 1024
MAX_COMMANDS = 1000
MAX_BASELINE_KEYS = 256


class BadRemoteConfig(ValueError):
    """The answer is not a config object at all."""


@dataclass(frozen=True)
class RemoteConfig:
    node_id: int | None = None
    pps_threshold: int | None = None
    bps_threshold: int | None = None
    baseline: dict[str, Any] = field(default_factory=dict)
    ioc_patterns: list[IocPattern] = field(default_factory=list)
    settings_ok: bool = True  # False: thresholds/baseline/IOCs had errors and must not be applied
    commands: list[tuple[int, Any]] = field(default_factory=list)  # (id, command as sent)
    problems: list[str] = field(default_factory=list)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _opt_count(obj: dict[str, Any], key: str, problems: list[str]) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if not _is_int(v) or v < 0:
        problems.append(f"{key}: expected a non-negative integer, got {_short(v)}")
        return None
    return int(v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _baseline(v: Any, problems: list[str]) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict) or len(v) > MAX_BASELINE_KEYS:
        problems.append(f"baseline: expected an object of numbers, got {_short(v)}")
        return {}
    bad = [k for k, x in v.items() if not _is_num(x)]
    if bad:
        problems.append(f"baseline.{bad[0]}: expected a number, got {_short(v[bad[0]])}")
        return {}
    return dict(v)


def _ioc(item: Any) -> IocPattern | None:
    if isinstance(item, str):
        item = {"pattern": item}
    if not isinstance(item, dict):
        return None
    pattern = item.get("pattern")
    name = item.get("name", item.get("attack_name", ""))  # attack_name: part C
    family = item.get("attack_family", "")
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_CHARS:
        return None
    if not isinstance(name, str) or not isinstance(family, str):
        return None
    return {"pattern": pattern, "name": name[:128] or pattern[:64], "attack_family": family[:64]}


def _iocs(v: Any, problems: list[str]) -> list[IocPattern]:
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > MAX_IOC_PATTERNS:
        problems.append(f"ioc_patterns: expected a list (at most {MAX_IOC_PATTERNS}), got {_short(v)}")
        return []
    out = []
    for i, item in enumerate(v):
        norm = _ioc(item)
        if norm is None:
            problems.append(f"ioc_patterns[{i}]: expected a string or {{pattern, name, attack_family}}, "
                            f"got {_short(item)}")
            return []
        out.append(norm)
    return out


def _commands(v: Any, problems: list[str]) -> list[tuple[int, Any]]:
    if v is None:
        return []
    if not isinstance(v, list):
        problems.append(f"pending_commands: expected a list, got {_short(v)}")
        return []
    out: list[tuple[int, Any]] = []
    for i, item in enumerate(v[:MAX_COMMANDS]):
        cid: Any = item.get("id") if isinstance(item, dict) else None
        field_name = next((k for k in ("command", "command_text") if isinstance(item, dict) and k in item), "")
        if not _is_int(cid) or cid <= 0 or not field_name:  # part C's servers send only command_text
            problems.append(f"pending_commands[{i}]: no integer id and command, got {_short(item)}")
            continue
        out.append((int(cid), item[field_name]))
    if len(v) > MAX_COMMANDS:
        problems.append(f"pending_commands: {len(v)} entries, only the first {MAX_COMMANDS} taken")
    return out


def parse_remote_config(value: Any) -> RemoteConfig:
    """A decoded JSON answer -> RemoteConfig; BadRemoteConfig when it is not an object at all."""
    if not isinstance(value, dict):
        raise BadRemoteConfig(f"the config answer is {type(value).__name__}, not an object")
    problems: list[str] = []
    node_id = value.get("node_id")
    if node_id is not None and not _is_int(node_id):
        problems.append(f"node_id: expected an integer, got {_short(node_id)}")
        node_id = None
    before = len(problems)
    pps = _opt_count(value, "pps_threshold", problems)
    bps = _opt_count(value, "bps_threshold", problems)
    baseline = _baseline(value.get("baseline"), problems)
    iocs = _iocs(value.get("ioc_patterns"), problems)
    settings_ok = len(problems) == before
    commands = _commands(value.get("pending_commands"), problems)
    return RemoteConfig(node_id, pps, bps, baseline, iocs, settings_ok, commands, problems)
