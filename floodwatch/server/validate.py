"""Agent API request bodies -> checked, normalised dicts (../shared/AGENT_API.md). Pure functions.

Every check raises BadField naming the field (with its index inside an array), which the server turns
into `400 {"error": "<field>: <reason>"}`. Unknown extra fields are ignored, as part A promises.

Before any of that, `check_json` holds every value of a parsed body to the same limits (nesting depth,
entries per array or object, string length, valid Unicode, finite numbers of at most 64 bits), so what
is stored can always be read back and answered as JSON.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

FAMILIES = frozenset({"udp_flood", "syn_flood", "http_flood", "icmp_flood", "dns_flood", "multi_vector", "unknown"})
FAMILY_TOKEN = re.compile(r"[a-z0-9][a-z0-9_+\-]{0,63}")
SEVERITIES = frozenset({"low", "medium", "high", "critical"})
STATUSES = frozenset({"active", "resolved"})
ACK_STATUSES = frozenset({"applied", "rejected", "failed"})
MAX_INT = 2**63 - 1  # what SQLite stores
MAX_TEXT = 256  # short strings (versions, names, keys)
MAX_LONG_TEXT = 16_384  # command output and errors
MAX_ITEMS = 1000  # entries in any array or object of an incident
MAX_DEPTH = 32  # arrays and objects nested in one another, the body itself included
MAX_STRING = MAX_LONG_TEXT  # characters in any string (or object key) of a body
MAX_MAGNITUDE = 2**64  # integers anywhere in a body are within +-2^64


class BadField(ValueError):
    """A request field is missing or has the wrong type or value; str() is the message for the client."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def check_json(value: Any, field: str = "") -> None:
    """Raise BadField naming the first value (by its path, `ioc_matches[0].x`) that breaks the limits:
    deeper than MAX_DEPTH, more than MAX_ITEMS entries, a string longer than MAX_STRING or with a lone
    surrogate, a number that is not finite or beyond MAX_MAGNITUDE. Iterative: no recursion to exhaust."""
    stack: list[tuple[Any, str, int]] = [(value, field, 1)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, str):
            _check_text(v, path or "body")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise BadField(path or "body", "not a finite number")
        elif isinstance(v, int) and not isinstance(v, bool):
            if not -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE:
                raise BadField(path or "body", "integer out of range (at most 2^64)")
        elif isinstance(v, list | dict):
            if depth > MAX_DEPTH:
                raise BadField(_short(path) or "body", f"nested deeper than {MAX_DEPTH} levels")
            if len(v) > MAX_ITEMS:
                raise BadField(path or "body", f"more than {MAX_ITEMS} entries")
            if isinstance(v, list):
                stack.extend((x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v))
                continue
            for k, x in v.items():
                _check_text(k, f"{path or 'body'} (a key)")
                stack.append((x, f"{path}.{k[:40]}" if path else k[:40], depth + 1))


def _short(path: str) -> str:
    return path if len(path) <= 60 else path[:60] + "..."


def _check_text(v: str, path: str) -> None:
    if len(v) > MAX_STRING:
        raise BadField(path, f"longer than {MAX_STRING} characters")
    if "\x00" in v:  # no text field holds one, and PostgreSQL cannot store it: refused alike on both stores
        raise BadField(path, "contains a NUL character (\\u0000)")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise BadField(path, "not valid Unicode (a lone surrogate such as \\ud800)") from None


def stored_json(text: str) -> tuple[Any, str | None]:
    """JSON this server wrote, read back: a value stored before the limits of validate.check_json (nested
    too deep, Infinity, a lone surrogate) comes back as None with the reason, never as an exception."""
    try:
        value = json.loads(text)
        check_json(value)
    except (ValueError, RecursionError) as e:  # BadField is a ValueError
        return None, str(e)[:200] if not isinstance(e, RecursionError) else "nested too deeply"
    return value, None


def stored_details(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """An incident's details (or a history body): the readable fields, and why the others are withheld."""
    try:
        details = json.loads(text)
    except (ValueError, RecursionError):
        return {}, {"details": "unreadable (stored before the server's limits)"}
    if not isinstance(details, dict):
        return {}, {"details": "not an object"}
    readable: dict[str, Any] = {}
    withheld: dict[str, str] = {}
    for k, v in details.items():
        try:
            check_json(v, k)
            readable[k] = v
        except ValueError as e:
            withheld[k] = f"{e} (stored before the server's limits; not shown)"
    return readable, withheld


def is_decimal(text: str) -> bool:
    """ASCII digits only: "\u00b2".isdigit() is true, but int() refuses it."""
    return text.isascii() and text.isdigit()


def url_text(v: str, field: str) -> str:
    """A string from a URL or query (they are not JSON): valid Unicode and not too long, or BadField."""
    _check_text(v, field)
    return v


def _int(body: dict[str, Any], key: str, required: bool = False, lo: int = 0, hi: int = MAX_INT) -> int | None:
    v = body.get(key)
    if v is None:
        if required:
            raise BadField(key, "required")
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise BadField(key, f"expected an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise BadField(key, f"must be between {lo} and {hi}")
    return v


def _count(body: dict[str, Any], key: str, required: bool = False, hi: int = MAX_INT) -> int | None:
    """A non-negative count: an integer, or a number rounded to one (the official agent sends floats)."""
    v = body.get(key)
    if isinstance(v, float) and math.isfinite(v) and 0 <= v <= hi:
        return round(v)
    return _int(body, key, required, hi=hi)


def _float(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadField(key, f"expected a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise BadField(key, "not a finite number")
    if not lo <= v <= hi:
        raise BadField(key, f"must be between {lo:g} and {hi:g}")
    return float(v)


def _str(body: dict[str, Any], key: str, required: bool = False, max_len: int = MAX_TEXT) -> str | None:
    v = body.get(key)
    if v is None:
        if required:
            raise BadField(key, "required")
        return None
    if not isinstance(v, str):
        raise BadField(key, f"expected a string, got {type(v).__name__}")
    if len(v) > max_len:
        raise BadField(key, f"longer than {max_len} characters")
    return v


def _choice(body: dict[str, Any], key: str, choices: frozenset[str], required: bool = False) -> str | None:
    v = _str(body, key, required)
    if v is not None and v not in choices:
        raise BadField(key, f"must be one of {', '.join(sorted(choices))}")
    return v


def _bool(body: dict[str, Any], key: str) -> bool | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise BadField(key, f"expected true or false, got {type(v).__name__}")
    return v


def parse_time(text: str) -> datetime:
    """ISO 8601 with a Z or an offset -> an aware datetime in UTC; ValueError otherwise."""
    if not 10 <= len(text) <= 40:
        raise ValueError("not an ISO 8601 timestamp")
    dt = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("needs a Z or an offset (UTC)")
    try:
        return dt.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range (years 1 to 9999 in UTC)") from None


def iso(dt: datetime) -> str:
    """An aware datetime -> ISO 8601 UTC with a Z and millisecond precision."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def iso_from_epoch(ts: float) -> str:
    return iso(datetime.fromtimestamp(ts, tz=UTC))


def _time(body: dict[str, Any], key: str) -> float | None:
    """An ISO 8601 field -> epoch seconds."""
    v = _str(body, key, max_len=40)
    if v is None:
        return None
    try:
        return parse_time(v).timestamp()
    except ValueError as e:
        raise BadField(key, f"not an ISO 8601 UTC timestamp ({e})") from None


def _mapping(body: dict[str, Any], key: str, ints: bool) -> dict[str, float] | None:
    """An object of short string keys to numbers (integers when `ints`)."""
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise BadField(key, f"expected an object, got {type(v).__name__}")
    if len(v) > MAX_ITEMS:
        raise BadField(key, f"more than {MAX_ITEMS} entries")
    out: dict[str, float] = {}
    for k, n in v.items():
        if len(k) > MAX_TEXT:
            raise BadField(key, "a key is too long")
        if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n) or n < 0:
            raise BadField(f"{key}.{k}", "expected a non-negative number")
        if ints and not isinstance(n, int):
            raise BadField(f"{key}.{k}", "expected an integer")
        out[k] = n
    return out


def _list(body: dict[str, Any], key: str, item: type | tuple[type, ...] | None = None) -> list[Any] | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, list):
        raise BadField(key, f"expected an array, got {type(v).__name__}")
    if len(v) > MAX_ITEMS:
        raise BadField(key, f"more than {MAX_ITEMS} entries")
    if item is not None:
        for i, x in enumerate(v):
            if not isinstance(x, item) or isinstance(x, bool):
                raise BadField(f"{key}[{i}]", "wrong type")
    return v


def _counted(body: dict[str, Any], key: str, name: str, name_type: type) -> list[dict[str, Any]] | None:
    """`[{"ip": "1.2.3.4", "count": 5}, ...]`-shaped arrays."""
    items = _list(body, key, dict)
    if items is None:
        return None
    for i, x in enumerate(items):
        if not isinstance(x.get(name), name_type) or isinstance(x.get(name), bool):
            raise BadField(f"{key}[{i}].{name}", f"expected {name_type.__name__}")
        try:
            _int(x, "count")
        except BadField as e:
            raise BadField(f"{key}[{i}].count", str(e).split(": ", 1)[1]) from None
    return items


def heartbeat(body: Any) -> dict[str, Any]:
    obj = _object(body)
    return {
        "agent_version": _str(obj, "agent_version") or _str(obj, "version"),  # `version`: part C
        "uptime": _count(obj, "uptime"),
        "os": _str(obj, "os"),
    }


def metric_sample(obj: Any, now: float) -> dict[str, Any]:
    """One sample; a sample without recorded_at is stamped with the time it arrived (`stamped`: it cannot be
    told from a retry of itself, so it is never deduplicated)."""
    obj = _object(obj)
    recorded = _time(obj, "recorded_at")
    sample: dict[str, Any] = {
        "pps": _count(obj, "pps", required=True),
        "bps": _count(obj, "bps", required=True),
        "tcp_pct": _float(obj, "tcp_pct", 0, 100),
        "udp_pct": _float(obj, "udp_pct", 0, 100),
        "icmp_pct": _float(obj, "icmp_pct", 0, 100),
        "conn_count": _count(obj, "conn_count"),
        "recorded_at": now if recorded is None else recorded,
    }
    if recorded is None:
        sample["stamped"] = True
    return sample


def metrics(body: Any, now: float, max_batch: int) -> list[dict[str, Any]]:
    """One sample object or an array of them (part B.3)."""
    if isinstance(body, list):
        if len(body) > max_batch:
            raise BadField("body", f"at most {max_batch} samples per request")
        out = []
        for i, item in enumerate(body):
            try:
                out.append(metric_sample(item, now))
            except BadField as e:
                raise BadField(f"[{i}].{e.field}", str(e).split(": ", 1)[1]) from None
        return out
    return [metric_sample(body, now)]


def incident(body: Any, any_family: bool = False) -> dict[str, Any]:
    """An incident open or update. Fields absent from the body are None (an update leaves them alone).
    `raw` is the body as received (kept in the incident's history, unknown fields included).
    `any_family`: accept families outside part A's list (part C's agent sends e.g. `tcp_flood`)."""
    obj = _object(body)
    out: dict[str, Any] = {
        "incident_id": _int(obj, "incident_id", lo=1),
        "incident_key": _str(obj, "incident_key", max_len=128),
        "attack_family": _family(obj) if any_family else _choice(obj, "attack_family", FAMILIES),
        "severity": _choice(obj, "severity", SEVERITIES),
        "status": _choice(obj, "status", STATUSES),
        "attack_subtype": _str(obj, "attack_subtype", max_len=64),
        "confidence": _count(obj, "confidence", hi=100),
        "started_at": _time(obj, "started_at"),
        "ended_at": _time(obj, "ended_at"),
        "peak_pps": _count(obj, "peak_pps"),
        "peak_bps": _count(obj, "peak_bps"),
        "source_ip_count": _count(obj, "source_ip_count"),
        "protocol_breakdown": _mapping(obj, "protocol_breakdown", ints=False),
        "tcp_flag_breakdown": _mapping(obj, "tcp_flag_breakdown", ints=True),
        "geo_breakdown": _mapping(obj, "geo_breakdown", ints=False),
        "top_src_ips": _counted(obj, "top_src_ips", "ip", str),
        "top_dst_ports": _counted(obj, "top_dst_ports", "port", int),
        "target_ips": _list(obj, "target_ips", str),
        "ioc_matches": _list(obj, "ioc_matches"),
        "vectors": _list(obj, "vectors", dict),
        "spoofing_detected": _bool(obj, "spoofing_detected"),
        "botnet_detected": _bool(obj, "botnet_detected"),
        "raw": obj,
    }
    if out["incident_key"] is not None and not out["incident_key"].strip():
        raise BadField("incident_key", "must not be empty")
    if out["incident_id"] is None:  # an open: the published API's required fields
        for key in ("attack_family", "severity"):
            if out[key] is None:
                raise BadField(key, "required")
    if out["status"] == "resolved" and out["ended_at"] is None:
        raise BadField("ended_at", "required when status is resolved")
    return out


def _family(obj: dict[str, Any]) -> str | None:
    """Any family name an agent sends, kept as it is: a short lower-case token."""
    v = _str(obj, "attack_family", max_len=64)
    if v is not None and not FAMILY_TOKEN.fullmatch(v):
        raise BadField("attack_family", "expected a lower-case name (letters, digits, _ - +)")
    return v


def ack(body: Any) -> dict[str, Any]:
    obj = _object(body)
    return {
        "command_id": _int(obj, "command_id", required=True, lo=1),
        "status": _choice(obj, "status", ACK_STATUSES, required=True),
        "error": _str(obj, "error", max_len=MAX_LONG_TEXT) or "",
        "output": _str(obj, "output", max_len=MAX_LONG_TEXT) or "",
        "executed_at": _time(obj, "executed_at"),
    }


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadField("body", f"expected a JSON object, got {_json_type(body)}")
    return body


def _json_type(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(v), "a number")


def node_config(body: Any) -> dict[str, Any]:
    """An operator's change to a node's remote config (admin API): only the fields given."""
    obj = _object(body)
    out: dict[str, Any] = {}
    for key in ("pps_threshold", "bps_threshold"):
        if key in obj:
            out[key] = None if obj[key] is None else _int(obj, key)
    if "baseline" in obj:
        out["baseline"] = _mapping(obj, "baseline", ints=False) or {}
    if "ioc_patterns" in obj:
        patterns = _list(obj, "ioc_patterns", (dict, str)) or []
        for i, p in enumerate(patterns):
            if isinstance(p, dict):
                for k in ("pattern", "name", "attack_family"):
                    if (p.get(k) is None and k == "pattern") or not isinstance(p.get(k, ""), str):
                        raise BadField(f"ioc_patterns[{i}].{k}", "expected a string")
        out["ioc_patterns"] = patterns
    if not out:
        raise BadField("body", "nothing to change (pps_threshold, bps_threshold, baseline, ioc_patterns)")
    return out
