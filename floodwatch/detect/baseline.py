"""Dynamic baselines: rolling p99 and mean of inbound rates, per hour of the week, persisted as JSON.

Each profile (bucket) holds a log-spaced histogram of window rates weighted by window duration, so
its weight is seconds of traffic. Buckets: `how:<0-167>` (hour of the week, UTC), `hod:<0-23>` (hour of
the day) and `all`. A bucket whose weight passes its cap is halved (old data fades: a rolling
profile). Lookup order: hour of the week once a week has been learnt, else hour of the day, else all
hours, each only once it holds `min_learn_seconds`; then the API's baseline; then the floor.
Memory is fixed: at most 193 buckets x 2 metrics x 240 bins.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floodwatch.errors import FloodwatchError

BINS_PER_DECADE = 20
MAX_BIN = 12 * BINS_PER_DECADE  # up to 1e12 per second
WEEK = 7 * 86400.0
CAPS = {"how": 4 * 3600.0, "hod": 7 * 3600.0, "all": 7 * 86400.0}  # seconds kept before halving
FORMAT_VERSION = 1


class BaselineError(FloodwatchError):
    """A baseline file that cannot be read or is not ours."""


def bin_of(rate: float) -> int:
    return min(MAX_BIN, max(0, int(math.log10(max(rate, 0.0) + 1.0) * BINS_PER_DECADE)))


def bin_top(i: int) -> float:
    """The upper edge of bin i (a conservative p99)."""
    return 10 ** ((i + 1) / BINS_PER_DECADE) - 1.0


@dataclass
class Hist:
    """A weighted histogram of one metric's rates."""

    bins: dict[int, float] = field(default_factory=dict)
    weight: float = 0.0
    total: float = 0.0  # sum of rate * weight (for the mean)

    def add(self, rate: float, w: float, b: int = -1) -> None:
        """Add `w` seconds at `rate` (`b`: its bin_of, when the caller has it already)."""
        if b < 0:
            b = bin_of(rate)
        self.bins[b] = self.bins.get(b, 0.0) + w
        self.weight += w
        self.total += rate * w

    def halve(self) -> None:
        self.bins = {b: v / 2 for b, v in self.bins.items() if v / 2 > 1e-3}
        self.weight /= 2
        self.total /= 2

    def mean(self) -> float:
        return self.total / self.weight if self.weight > 0 else 0.0

    def quantile(self, q: float) -> float:
        if self.weight <= 0:
            return 0.0
        need, acc = q * self.weight, 0.0
        for b in sorted(self.bins):
            acc += self.bins[b]
            if acc >= need:
                return bin_top(b)
        return bin_top(max(self.bins))

    def to_json(self) -> dict[str, Any]:
        return {"bins": {str(b): round(v, 3) for b, v in self.bins.items()}, "weight": self.weight,
                "total": self.total}

    @classmethod
    def from_json(cls, d: Any) -> Hist:
        if not isinstance(d, dict):
            raise BaselineError("histogram is not an object")
        try:
            bins = {int(b): float(v) for b, v in dict(d["bins"]).items()}
            h = cls(bins, float(d["weight"]), float(d["total"]))
        except (KeyError, TypeError, ValueError) as e:
            raise BaselineError(f"bad histogram: {e}") from e
        if any(b < 0 or b > MAX_BIN or v < 0 for b, v in h.bins.items()) or h.weight < 0:
            raise BaselineError("histogram values out of range")
        return h


@dataclass(frozen=True)
class Thresholds:
    pps: float
    bps: float
    source: str  # "static", "api", "dynamic:how:42", "floor", ...


@dataclass
class Baseline:
    """Learns inbound pps/bps per hour profile and turns them into thresholds."""

    floor_pps: float = 20_000
    floor_bps: float = 500_000_000
    multiplier: float = 3.0
    mean_multiplier: float = 4.0
    min_learn_seconds: float = 600.0
    buckets: dict[str, dict[str, Hist]] = field(default_factory=dict)
    first_ts: float = 0.0
    last_ts: float = 0.0
    api: dict[str, float] = field(default_factory=dict)  # the API's {"p99_pps", "mean_pps", ...}
    # learn(): the hour of the last window learnt and its buckets' (name, cap) (ten windows a second)
    _hour: int = field(default=-1, repr=False, compare=False)
    _names: tuple[tuple[str, float], ...] = field(default=(), repr=False, compare=False)

    @staticmethod
    def bucket_names(t: float) -> tuple[str, str, str]:
        hours = int(t // 3600)
        # 1970-01-01 was a Thursday: shift so that hour 0 of the week is Monday 00:00 UTC
        return f"how:{(hours + 72) % 168}", f"hod:{hours % 24}", "all"

    def learn(self, t: float, pps: float, bps: float, seconds: float) -> None:
        """Add one quiet window (rates per second, `seconds` long) to its profiles."""
        if seconds <= 0 or not (math.isfinite(pps) and math.isfinite(bps)):
            return
        if not self.first_ts:
            self.first_ts = t
        self.last_ts = max(self.last_ts, t)
        hour = int(t // 3600)
        if hour != self._hour:
            self._hour, self._names = hour, tuple((n, CAPS[n.split(":")[0]]) for n in self.bucket_names(t))
        bp, bb = bin_of(pps), bin_of(bps)
        for name, cap in self._names:
            bucket = self.buckets.get(name)
            if bucket is None:
                bucket = self.buckets[name] = {"pps": Hist(), "bps": Hist()}
            bucket["pps"].add(pps, seconds, bp)
            bucket["bps"].add(bps, seconds, bb)
            if bucket["pps"].weight > cap:
                bucket["pps"].halve()
                bucket["bps"].halve()

    def learnt_bucket(self, t: float) -> str | None:
        how, hod, all_ = self.bucket_names(t)
        week = self.last_ts - self.first_ts >= WEEK
        for name in ((how, hod, all_) if week else (hod, all_)):
            b = self.buckets.get(name)
            if b and b["pps"].weight >= self.min_learn_seconds:
                return name
        return None

    def thresholds(self, t: float) -> Thresholds:
        """The dynamic thresholds for time t (floor when nothing is learnt)."""
        name = self.learnt_bucket(t)
        if name is not None:
            b = self.buckets[name]
            pps = max(self.multiplier * b["pps"].quantile(0.99), self.mean_multiplier * b["pps"].mean())
            bps = max(self.multiplier * b["bps"].quantile(0.99), self.mean_multiplier * b["bps"].mean())
            return Thresholds(max(self.floor_pps, pps), max(self.floor_bps, bps), f"dynamic:{name}")
        if self.api.get("p99_pps") or self.api.get("mean_pps"):
            pps = max(self.multiplier * self.api.get("p99_pps", 0.0),
                      self.mean_multiplier * self.api.get("mean_pps", 0.0))
            bps = max(self.multiplier * self.api.get("p99_bps", 0.0),
                      self.mean_multiplier * self.api.get("mean_bps", 0.0))
            return Thresholds(max(self.floor_pps, pps), max(self.floor_bps, bps), "api")
        return Thresholds(self.floor_pps, self.floor_bps, "floor")

    def seed(self, api_baseline: dict[str, Any]) -> None:
        """Take the API config's baseline ({"p99_pps": 12000, "mean_pps": 3400, ...}); bad values ignored."""
        clean: dict[str, float] = {}
        for key in ("p99_pps", "mean_pps", "p99_bps", "mean_bps"):
            v = api_baseline.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
                clean[key] = float(v)
        self.api = clean

    # -- persistence -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "buckets": {n: {m: h.to_json() for m, h in b.items()} for n, b in self.buckets.items()},
        }

    def load_json(self, d: Any) -> None:
        if not isinstance(d, dict) or d.get("version") != FORMAT_VERSION:
            raise BaselineError("not a floodwatch baseline (version mismatch)")
        buckets: dict[str, dict[str, Hist]] = {}
        raw = d.get("buckets")
        if not isinstance(raw, dict):
            raise BaselineError("buckets missing")
        for name, b in raw.items():
            kind = str(name).split(":")[0]
            if kind not in CAPS or not isinstance(b, dict):
                raise BaselineError(f"unknown bucket {name!r}")
            buckets[str(name)] = {"pps": Hist.from_json(b.get("pps")), "bps": Hist.from_json(b.get("bps"))}
        try:
            self.first_ts, self.last_ts = float(d["first_ts"]), float(d["last_ts"])
        except (KeyError, TypeError, ValueError) as e:
            raise BaselineError(f"bad timestamps: {e}") from e
        self.buckets = buckets

    def save(self, path: Path) -> None:
        """Write atomically, 0600 in a 0700 directory."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".baseline.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: Path) -> bool:
        """Read a saved baseline; False when there is none. BaselineError when it is unreadable."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except OSError as e:
            raise BaselineError(f"{path}: {e.strerror or e}") from e
        try:
            self.load_json(json.loads(text))
        except json.JSONDecodeError as e:
            raise BaselineError(f"{path}: not JSON: {e}") from e
        return True
