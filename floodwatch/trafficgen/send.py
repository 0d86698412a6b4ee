"""Live sending: frames out of a raw AF_PACKET socket at a paced rate (run inside a network namespace).

Pacing is by the monotonic clock in slices of 1 ms: each slice sends what is due, so the mean rate is
exact and bursts are at most one slice long. Python reaches a few hundred thousand small frames per
second on one core; `SendReport.achieved_pps` tells what was really sent.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

ETH_P_ALL = 0x0003


@dataclass(frozen=True)
class SendReport:
    sent: int
    errors: int
    seconds: float
    first_ts: float  # wall time (time.time()) of the first frame
    achieved_pps: float


def send(iface: str, pool: list[bytes], pps: float, duration: float) -> SendReport:
    """Send frames from `pool` (cycled) on `iface` at `pps` for `duration` seconds."""
    if pps <= 0 or duration <= 0:
        raise ValueError("pps and duration must be positive")
    total = int(pps * duration)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((iface, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        return _loop(sock, pool, pps, total)
    finally:
        sock.close()


def _loop(sock: socket.socket, pool: list[bytes], pps: float, total: int) -> SendReport:
    sent = errors = 0
    n = len(pool)
    first_ts = time.time()
    t0 = time.monotonic()
    while sent + errors < total:
        due = min(total, int((time.monotonic() - t0) * pps) + 1)
        while sent + errors < due:
            try:
                sock.send(pool[(sent + errors) % n])
                sent += 1
            except (BlockingIOError, OSError):
                errors += 1
        ahead = (sent + errors) / pps - (time.monotonic() - t0)
        if ahead > 0.001:
            time.sleep(min(ahead, 0.001))
    seconds = time.monotonic() - t0
    return SendReport(sent, errors, seconds, first_ts, sent / seconds if seconds > 0 else 0.0)
