"""The aggregator's memory budget: worst-case bytes from the configured sizes.

Every structure fed by traffic has a size fixed by config (heavy-hitter capacities and buffers,
HyperLogLog registers, dense port arrays, victim rows, outbound-peer sets), so the worst case does not
depend on how many distinct sources arrive. `estimate_bytes` adds them up for the windows that can be
open at once and the whole-run summary, plus the interpreter and libraries; config validation refuses
sizes that do not fit `memory_cap_mb`.
"""

from __future__ import annotations

import math
from typing import Any

BASE_BYTES = 80 * 2**20  # interpreter + numpy, pyzmq, iptocc, signatures (RSS ~40 MiB) + allocator slack
PORT_ARRAYS = 2 * 2 * 65536 * 8  # source and destination ports, TCP and UDP, int64
ROW = 16 + 16 + 8  # heavy-hitter row: key + count + payload (address) + aux
# Seconds a live window waits for records after the counter reading that covers it (the engine's; kept
# here, without numpy, because config validation imports this module in every process, the supervisor too)
LIVE_GRACE = 0.2


def window_bytes(s: Any) -> int:
    # source table (as large as the run's while the run's count is exact) and destination table,
    # each x2 for the transient copy while folding
    hh = 2 * (max(s.window_capacity, s.run_capacity) + s.window_capacity + 2 * s.buffer) * ROW
    victims = s.victim_rows * (256 + 200 + 64 * 100)
    peers = s.bidir_peers * 8 * 2
    return hh + victims + peers + PORT_ARRAYS + (1 << s.hll_precision) + 64 * 1024


def open_windows(s: Any) -> int:
    """Windows open at once: those within `lateness` (+ LIVE_GRACE for live sources) of the stream time,
    plus the one being filled."""
    return math.ceil((s.lateness + LIVE_GRACE) / s.window) + 2


def run_bytes(s: Any) -> int:
    src = 2 * (s.run_capacity + s.buffer) * ROW
    dst = 2 * (4096 + s.buffer) * ROW
    seconds = (1 << s.hll_precision) * 2
    return src + dst + PORT_ARRAYS + seconds


def batch_bytes(max_records: int = 65536) -> int:
    """Transient arrays while one batch is processed (a few columns and masks per record)."""
    return max_records * 400


def estimate_bytes(s: Any) -> int:
    return BASE_BYTES + open_windows(s) * window_bytes(s) + run_bytes(s) + batch_bytes()
