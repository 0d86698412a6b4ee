"""The load generator of benchmarks/server_fleet.py: simulated agents, many per process.

Run by server_fleet.py as `python benchmarks/fleet_agents.py` with a JSON spec on stdin (server address,
the nodes' credentials, start time, durations); prints a JSON result (latencies of the measured window in
ms, errors by kind, late ticks, its own event loop's lag). Each agent speaks the Agent API with the
reporter's request shapes (floodwatch.reporter.mapping / dialect, the default `flowtriq` dialect) on its
own keep-alive connection: one metrics sample a second, a heartbeat every `heartbeat_interval`, GET
/config every `config_interval`, and for 1 % of them an incident (open, then GET /config at once as the
reporter does, an update every 5 s, resolution at the end). The HTTP/1.1 client is minimal, on asyncio
streams: aiohttp's client costs several times the CPU per request, and the generator shares the cores
with what it measures; so does asyncio's own loop (uvloop here).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floodwatch import __version__
from floodwatch.messages import IncidentOpened, IncidentResolved, IncidentUpdated, TrafficSecond
from floodwatch.reporter import dialect, mapping

INCIDENT_SHARE = 0.01
UPDATE_EVERY = 5.0
class Conn:
    """One agent's keep-alive HTTP/1.1 connection; reconnects after a failure."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in {
            "Host": f"{host}:{port}", "User-Agent": f"floodwatch/{__version__}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        extra = f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n" if body is not None else ""
        req = f"{method} /api/v1/agent/{path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + data
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            self.writer.write(req)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status, length, close = _parse_head(head)
            payload = await self.reader.readexactly(length)
            if close:
                self.close()
            return status, payload
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    return status, length, close


class Results:
    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.late = 0
        self.requests = 0
        self.lag: list[float] = []


def traffic_second(t: float, rng: random.Random) -> TrafficSecond:
    pps = rng.randrange(1000, 90000)
    return TrafficSecond(t_start=t, t_end=t + 1, pps=pps, bps=pps * 700, pps_in=pps, bps_in=pps * 700, pps_out=0,
                         bps_out=0, tcp_pct=60.0, udp_pct=38.5, icmp_pct=1.5, other_pct=0.0,
                         conn_count=rng.randrange(100, 5000), src_distinct=40, sample_rate=1.0, exact=True,
                         kernel_drops=0, malformed=0)


def incident_event(cls: type, key: str, started: float, seq: int, now: float) -> Any:
    return cls(incident_key=key, status="resolved" if cls is IncidentResolved else "active",
               attack_family="udp_flood", attack_subtype="dns_amplification", severity="high", confidence=90,
               started_at=started, ended_at=now if cls is IncidentResolved else None, updated_at=now, seq=seq,
               peak_pps=120000 + seq, peak_bps=900_000_000, protocol_breakdown={"udp": 99.0, "tcp": 1.0},
               tcp_flag_breakdown={}, geo_breakdown={"US": 10}, source_ip_count=321,
               top_src_ips=[{"ip": "198.18.0.9", "count": 50}], top_dst_ports=[{"port": 53, "count": 9}],
               target_ips=["198.18.1.2"], ioc_matches=[], spoofing_detected=False, botnet_detected=False)


async def call(conn: Conn, res: Results, method: str, path: str, body: Any = None) -> Any:
    t0 = time.perf_counter()
    value = None
    try:
        async with asyncio.timeout(10.0):  # no task per request, as wait_for would make
            status, payload = await conn.request(method, path, body)
        if status >= 300:
            res.errors[f"{path.split('/')[0]} {status}"] += 1
        elif path == "incidents":
            value = json.loads(payload)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as e:
        res.errors[f"{path.split('/')[0]} {type(e).__name__}"] += 1
    if time.time() >= res.measure_from:
        res.latencies.append((time.perf_counter() - t0) * 1000)
        res.requests += 1
    return value


async def agent(spec: dict[str, Any], node: dict[str, str], start: float, end: float, res: Results,
                has_incident: bool) -> None:
    rng = random.Random(node["X-Node-UUID"])
    conn = Conn(spec["host"], spec["port"], node)
    begin = start + rng.random()  # agents spread over the first second
    hb_next = begin + rng.random() * spec["heartbeat_interval"]
    cfg_next = begin + rng.random() * spec["config_interval"]
    inc_at = begin + rng.random() * 5 if has_incident else float("inf")
    key, ref, seq, upd_next = f"bench-{node['X-Node-UUID'][:12]}-{int(start)}", None, 0, 0.0
    tick = 0
    while True:
        due = begin + tick
        if due >= end:
            break
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.5 and due >= res.measure_from:
            res.late += 1
        tick += 1
        now = time.time()
        await call(conn, res, "POST", "metrics", mapping.metrics_sample(traffic_second(float(int(now)), rng)))
        if now >= hb_next:
            hb_next += spec["heartbeat_interval"]
            body = mapping.heartbeat_body(__version__, now - start, "bench")
            await call(conn, res, "POST", "heartbeat", dialect.heartbeat(dialect.FLOWTRIQ, body))
        if now >= cfg_next:
            cfg_next += spec["config_interval"]
            await call(conn, res, "GET", "config")
        if ref is None and now >= inc_at:
            inc_at = now
            path, body = dialect.incident_request(dialect.FLOWTRIQ, "open", mapping.incident_body(
                incident_event(IncidentOpened, key, now, 0, now)), None)
            ref = dialect.ref_of(dialect.FLOWTRIQ, await call(conn, res, "POST", path, body))
            upd_next = now + UPDATE_EVERY
            await call(conn, res, "GET", "config")  # the reporter polls at once when an incident opens
        elif ref is not None and now >= upd_next:
            seq += 1
            upd_next += UPDATE_EVERY
            path, body = dialect.incident_request(dialect.FLOWTRIQ, "update", mapping.incident_body(
                incident_event(IncidentUpdated, key, inc_at, seq, now)), ref)
            await call(conn, res, "POST", path, body)
    if ref is not None:
        now = time.time()
        path, body = dialect.incident_request(dialect.FLOWTRIQ, "resolve", mapping.incident_body(
            incident_event(IncidentResolved, key, inc_at, seq + 1, now)), ref)
        await call(conn, res, "POST", path, body)
    conn.close()


async def loop_lag(res: Results, end: float) -> None:
    """How late the generator's own event loop wakes up (its saturation, not the server's)."""
    while time.time() < end:
        t0 = time.perf_counter()
        await asyncio.sleep(0.1)
        if time.time() >= res.measure_from:
            res.lag.append((time.perf_counter() - t0 - 0.1) * 1000)


async def work(spec: dict[str, Any]) -> Results:
    start, end = spec["start"], spec["start"] + spec["warmup"] + spec["duration"]
    res = Results(start + spec["warmup"])
    rng = random.Random(spec["seed"])
    tasks = [agent(spec, node, start, end, res, rng.random() < INCIDENT_SHARE) for node in spec["nodes"]]
    await asyncio.gather(loop_lag(res, end), *tasks)
    return res


def worker_main() -> int:
    spec = json.loads(sys.stdin.read())
    res = uvloop.run(work(spec))  # the server's event loop (run.py): a cheaper generator leaves more CPU to it
    json.dump({"latencies": res.latencies, "errors": dict(res.errors), "late": res.late, "requests": res.requests,
               "lag": res.lag}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
