"""Country of source addresses, offline: iptocc (RIR delegation data shipped in its wheel, the default)
or a MaxMind GeoLite2/GeoIP2 Country database through maxminddb, for users who have one.

Measured on this 2-core machine (benchmarks/aggregator_geo.py, results in benchmarks/results/aggregator.md):
iptocc answers a list of addresses in one call several times faster than maxminddb's per-address `get`;
both are far faster than the few hundred lookups per window the aggregator makes. iptocc needs no
download or licence key, so it is the default; `geo = "maxmind"` with `geoip_db` uses a GeoLite2 file
(more precise for addresses re-assigned across countries). Unknown addresses map to "ZZ".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from floodwatch.errors import ConfigError

UNKNOWN = "ZZ"


class CountryLookup(Protocol):
    name: str

    def countries(self, ips: Sequence[str]) -> list[str]: ...


CACHE = 4096  # address keys whose country is kept: a flood's heaviest sources come back window after window


class IptoccLookup:
    """No cache by text: iptocc answers a list at ~0.1 µs an address, less than a dict's bookkeeping
    (the windows' lookups are cached by address key in front of it: KeyCountries)."""

    name = "iptocc"

    def __init__(self) -> None:
        import iptocc

        self._cc = iptocc.country_code

    def countries(self, ips: Sequence[str]) -> list[str]:
        if not ips:
            return []
        return [c or UNKNOWN for c in self._cc(ips if isinstance(ips, list) else list(ips))]


class MaxmindLookup:
    name = "maxmind"

    def __init__(self, path: str) -> None:
        import maxminddb

        try:
            self._db: Any = maxminddb.open_database(path, maxminddb.MODE_AUTO)  # the C extension when present
        except (OSError, ValueError) as e:
            raise ConfigError(f"aggregator.geoip_db: cannot open {path}: {e}") from e

    def countries(self, ips: Sequence[str]) -> list[str]:
        out = []
        for ip in ips:
            try:
                rec = self._db.get(ip)
            except ValueError:
                rec = None
            cc = None
            if isinstance(rec, dict):
                country = rec.get("country") or rec.get("registered_country") or {}
                cc = country.get("iso_code") if isinstance(country, dict) else None
            out.append(cc or UNKNOWN)
        return out


def make_lookup(kind: str, db_path: str = "") -> CountryLookup | None:
    """The configured lookup, or None for geo = "off"."""
    if kind == "off":
        return None
    if kind == "maxmind":
        if not Path(db_path).is_file():
            raise ConfigError(f"aggregator.geoip_db: {db_path!r} is not a file")
        return MaxmindLookup(db_path)
    return IptoccLookup()


def breakdown(lookup: CountryLookup | None, rows: Sequence[tuple[str, int]]) -> dict[str, int]:
    """[(ip, packets)] -> {country: packets}, heaviest first."""
    if lookup is None or not rows:
        return {}
    return _ranked(zip(lookup.countries([ip for ip, _ in rows]), (n for _, n in rows), strict=True))


def _ranked(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    get = out.get
    for cc, n in pairs:
        out[cc] = get(cc, 0) + n
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


class KeyCountries:
    """The countries of address keys (floodwatch.aggregate.keys), cached by key in front of a lookup
    (bounded): the heaviest sources of a flood come back window after window, and only a key not seen
    yet needs its text made and looked up. The same breakdown as `breakdown` of the keys' texts."""

    def __init__(self, lookup: CountryLookup) -> None:
        self.lookup = lookup
        self._known: dict[int, str] = {}

    def breakdown(self, keys: np.ndarray, counts: np.ndarray,
                  texts: Callable[[np.ndarray | slice], list[str]]) -> dict[str, int]:
        """keys with their packets -> {country: packets}; `texts(rows)`: the texts of those keys (an index
        array, or a slice of all of them: a flood of new sources each window needs every one)."""
        known = self._known
        klist = keys.tolist()
        ccs = list(map(known.get, klist))
        if None in ccs:
            miss = [i for i, cc in enumerate(ccs) if cc is None]
            every = len(miss) == len(klist)
            got = self.lookup.countries(texts(slice(0, len(klist)) if every else np.array(miss, dtype=np.intp)))
            if every:
                ccs[:] = got
            else:
                for i, cc in zip(miss, got, strict=True):
                    ccs[i] = cc
            if len(known) + len(miss) > CACHE:  # bounded: spoofed sources rarely come back anyway
                known.clear()
            known.update(zip(klist if every else [klist[i] for i in miss], got, strict=True))
        return _ranked(zip(ccs, counts.tolist(), strict=True))  # type: ignore[arg-type]
