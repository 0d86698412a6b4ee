"""The load generator of benchmarks/server_fleet.py: simulated agents, many per process.

Run by server_fleet.py as `python benchmarks/fleet_agents.py` with a JSON spec on stdin (server address,
the nodes' credentials, start time, durations); prints a JSON result (latencies of the measured window in
ms, errors by kind, late ticks, its own event loop's lag). Each agent sends what the reporter sends
(floodwatch.reporter.client / mapping / dialect, the default `flowtriq` dialect: the same request line,
headers in the same order, and JSON bodies byte for byte as aiohttp encodes them; tests/server/
test_fleet_agents.py holds it to that) on its own keep-alive connection: one metrics sample a second,
a heartbeat every `heartbeat_interval`, GET /config every `config_interval`, and for 1 % of them an
incident (open, then GET /config at once as the reporter does, an update every 5 s, resolution at the
end). Each agent does its requests of a second one after the other, as the reporter does.

The generator shares the 2 cores with what it measures, so it is lean: no coroutine, task, timer or
stream per request. Each agent is a small state machine driven by its connection's protocol callbacks
(uvloop's C transports) and one timer per tick; a request is one `transport.write` of bytes built from
parts encoded once (the agent's head, the second's metrics template with the agent's own values
filled in); the answer is parsed in `data_received` from the status line and Content-Length; time-outs
are found by one sweep a second, not a timer per request.
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
TIMEOUT = 10.0  # seconds for one request, connecting included (then counted as a TimeoutError)
API = "/api/v1/agent/"
# the reporter's headers after its session's own (aiohttp's client adds these two to every request)
CLIENT_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
P_MARK, C_MARK = 987654321, 123456789  # stand-ins for an agent's own values in the metrics template


# -- what the reporter sends ---------------------------------------------------------------------------
def draw(rng: random.Random) -> tuple[int, int]:
    """An agent's values for one second: packets per second and open connections."""
    return rng.randrange(1000, 90000), rng.randrange(100, 5000)


def traffic_second(t: float, rng: random.Random) -> TrafficSecond:
    """A second of an agent's traffic with values drawn from `rng` (benchmarks/server_store_calls.py too)."""
    return second_of(t, *draw(rng))


def second_of(t: float, pps: int, conn: int) -> TrafficSecond:
    return TrafficSecond(t_start=t, t_end=t + 1, pps=pps, bps=pps * 700, pps_in=pps, bps_in=pps * 700, pps_out=0,
                         bps_out=0, tcp_pct=60.0, udp_pct=38.5, icmp_pct=1.5, other_pct=0.0, conn_count=conn,
                         src_distinct=40, sample_rate=1.0, exact=True, kernel_drops=0, malformed=0)


def encode(body: Any) -> bytes:
    """A body as the reporter's client puts it on the wire (aiohttp's `json=`: json.dumps' defaults)."""
    return json.dumps(body).encode()


def metrics_template(t: float) -> bytes:
    """The reporter's metrics body for the second `t`, encoded once, with `%d` for pps, bps and
    conn_count (in that order): `template % (pps, pps * 700, conn)` is an agent's body."""
    text = encode(mapping.metrics_sample(second_of(t, P_MARK, C_MARK))).decode()
    marks = [str(P_MARK * 700), str(P_MARK), str(C_MARK)]
    assert all(text.count(m) == 1 for m in marks) and text.index(marks[1]) < text.index(marks[0]) < text.index(
        marks[2]), text
    text = text.replace("%", "%%")
    for m in marks:
        text = text.replace(m, "%d")
    return text.encode()


def head_of(host: str, port: int, node: dict[str, str]) -> bytes:
    """The headers every request of one agent sends, in the reporter's order (without the request line,
    Content-Length and Content-Type)."""
    headers = {"Host": f"{host}:{port}", **node, "User-Agent": f"floodwatch/{__version__}", **CLIENT_HEADERS}
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()


def request(method: str, path: str, head: bytes, body: bytes | None) -> bytes:
    line = f"{method} {API}{path} HTTP/1.1\r\n".encode()
    if body is None:
        return line + head + b"\r\n"
    return b"%s%sContent-Length: %d\r\nContent-Type: application/json\r\n\r\n%s" % (line, head, len(body), body)


def incident_event(cls: type, key: str, started: float, seq: int, now: float) -> Any:
    return cls(incident_key=key, status="resolved" if cls is IncidentResolved else "active",
               attack_family="udp_flood", attack_subtype="dns_amplification", severity="high", confidence=90,
               started_at=started, ended_at=now if cls is IncidentResolved else None, updated_at=now, seq=seq,
               peak_pps=120000 + seq, peak_bps=900_000_000, protocol_breakdown={"udp": 99.0, "tcp": 1.0},
               tcp_flag_breakdown={}, geo_breakdown={"US": 10}, source_ip_count=321,
               top_src_ips=[{"ip": "198.18.0.9", "count": 50}], top_dst_ports=[{"port": 53, "count": 9}],
               target_ips=["198.18.1.2"], ioc_matches=[], spoofing_detected=False, botnet_detected=False)


def incident_request(op: str, key: str, started: float, seq: int, now: float, ref: str | None) -> tuple[str, bytes]:
    cls = {"open": IncidentOpened, "update": IncidentUpdated, "resolve": IncidentResolved}[op]
    path, body = dialect.incident_request(dialect.FLOWTRIQ, op, mapping.incident_body(
        incident_event(cls, key, started, seq, now)), ref)
    return path, encode(body)


def parse_answer(buf: bytes | bytearray) -> tuple[int, int, int, bool] | None:
    """(status, offset of the body, its length, connection closing) once the head is in `buf`, else None.
    ValueError for an answer this client does not read (no Content-Length, a bad status line)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise ValueError("no Content-Length")
    stop = head.find(b"\r\n", at + 2)
    length = int(head[at + 17:stop if stop > 0 else len(head)])
    return status, end + 4, length, b"\r\nconnection: close" in head


# -- the agents ----------------------------------------------------------------------------------------
class Results:
    def __init__(self, measure_from: float) -> None:
        self.measure_from = measure_from
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.late = 0
        self.requests = 0
        self.lag: list[float] = []


class Link(asyncio.Protocol):
    """One agent's connection: hands a complete answer (or the failure) to its agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.agent.link is not self:  # closed by its agent (a time-out): nothing more is read
            return
        buf = self.buf
        buf += data
        try:
            parsed = parse_answer(buf)
        except ValueError:
            self.agent.failed("ValueError")
            return
        if parsed is None:
            return
        status, at, length, close = parsed
        if len(buf) < at + length:
            return
        payload = bytes(buf[at:at + length])
        del buf[:at + length]
        self.agent.answered(status, payload, close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.agent.link is self:
            self.agent.failed(type(exc).__name__ if exc is not None else "IncompleteReadError")


class Agent:
    """One simulated agent: its requests of a tick one after the other, then a timer for the next tick."""

    def __init__(self, gen: Generator, node: dict[str, str], has_incident: bool) -> None:
        self.gen = gen
        spec = gen.spec
        self.rng = random.Random(node["X-Node-UUID"])
        self.head = head_of(spec["host"], spec["port"], node)
        self.begin = gen.start + self.rng.random()  # agents spread over the first second
        self.hb_next = self.begin + self.rng.random() * spec["heartbeat_interval"]
        self.cfg_next = self.begin + self.rng.random() * spec["config_interval"]
        self.inc_at = self.begin + self.rng.random() * 5 if has_incident else float("inf")
        self.key = f"bench-{node['X-Node-UUID'][:12]}-{int(gen.start)}"
        self.ref: str | None = None
        self.seq, self.upd_next, self.tick = 0, 0.0, 0
        self.steps: list[str] = []  # this tick's requests still to send, last first
        self.now = 0.0
        self.link: Link | None = None
        self.connecting: asyncio.Future[Any] | None = None
        self.kind = ""  # the request in flight ("" for none) and when it started (perf_counter)
        self.t0 = 0.0
        self.reads_ref = False  # an incident open: the answer has the incident's reference
        self.finished = False

    def schedule(self) -> None:
        due = self.begin + self.tick
        if due >= self.gen.end:
            if self.ref is not None and not self.finished:
                self.finished = True  # the resolution, then done
                self.now = time.time()
                self.steps = ["resolve"]
                self.next()
                return
            self.close()
            self.gen.agent_done()
            return
        self.gen.loop.call_at(self.gen.loop_time(due), self.run_tick)

    def run_tick(self) -> None:
        due = self.begin + self.tick
        now = time.time()
        if now - due > 0.5 and due >= self.gen.res.measure_from:  # more than half a second behind
            self.gen.res.late += 1
        self.tick += 1
        self.now = now
        steps = ["metrics"]
        if now >= self.hb_next:
            self.hb_next += self.gen.spec["heartbeat_interval"]
            steps.append("heartbeat")
        if now >= self.cfg_next:
            self.cfg_next += self.gen.spec["config_interval"]
            steps.append("config")
        if self.ref is None and now >= self.inc_at:
            self.inc_at, self.upd_next = now, now + UPDATE_EVERY
            steps += ["open", "config"]  # the reporter polls at once when an incident opens
        elif self.ref is not None and now >= self.upd_next:
            self.seq += 1
            self.upd_next += UPDATE_EVERY
            steps.append("update")
        steps.reverse()
        self.steps = steps
        self.next()

    def next(self) -> None:
        if not self.steps:
            self.schedule()
            return
        step = self.steps.pop()
        now = self.now
        if step == "metrics":
            pps, conn = draw(self.rng)
            body: bytes | None = self.gen.metrics_body(float(int(now))) % (pps, pps * 700, conn)
            self.send("metrics", request("POST", "metrics", self.head, body))
        elif step == "heartbeat":
            hb = dialect.heartbeat(dialect.FLOWTRIQ, mapping.heartbeat_body(__version__, now - self.gen.start, "bench"))
            self.send("heartbeat", request("POST", "heartbeat", self.head, encode(hb)))
        elif step == "config":
            self.send("config", request("GET", "config", self.head, None))
        else:
            if step == "open":
                path, body = incident_request("open", self.key, now, 0, now, None)
            elif step == "update":
                path, body = incident_request("update", self.key, self.inc_at, self.seq, now, self.ref)
            else:
                path, body = incident_request("resolve", self.key, self.inc_at, self.seq + 1, now, self.ref)
            self.send("incidents", request("POST", path, self.head, body), step == "open")

    def send(self, kind: str, data: bytes, reads_ref: bool = False) -> None:
        self.kind, self.reads_ref, self.t0 = kind, reads_ref, time.perf_counter()
        link = self.link
        if link is not None and link.transport is not None:
            link.transport.write(data)
            return
        self.connecting = asyncio.ensure_future(self.connect(data))

    async def connect(self, data: bytes) -> None:
        loop = self.gen.loop
        try:
            _, link = await loop.create_connection(lambda: Link(self), self.gen.spec["host"], self.gen.spec["port"])
        except OSError as e:
            self.connecting = None
            self.failed(type(e).__name__)
            return
        self.connecting = None
        self.link = link
        assert link.transport is not None
        link.transport.write(data)

    def answered(self, status: int, payload: bytes, close: bool) -> None:
        if not self.kind:
            return
        if close:
            self.close()
        if status >= 300:
            self.gen.res.errors[f"{self.kind} {status}"] += 1
        elif self.reads_ref:
            try:
                self.ref = dialect.ref_of(dialect.FLOWTRIQ, json.loads(payload))  # type: ignore[assignment]
            except ValueError:
                self.gen.res.errors[f"{self.kind} ValueError"] += 1
        self.done()

    def failed(self, why: str) -> None:
        """The request in flight failed (its connection closed, refused, timed out or answered garbage)."""
        self.close()
        if not self.kind:
            return
        self.gen.res.errors[f"{self.kind} {why}"] += 1
        self.done()

    def done(self) -> None:
        if time.time() >= self.gen.res.measure_from:
            self.gen.res.latencies.append((time.perf_counter() - self.t0) * 1000)
            self.gen.res.requests += 1
        self.kind = ""
        self.next()

    def overdue(self, now: float) -> None:
        if self.kind and now - self.t0 > TIMEOUT:
            if self.connecting is not None:
                self.connecting.cancel()
                self.connecting = None
            self.failed("TimeoutError")

    def close(self) -> None:
        link, self.link = self.link, None
        if link is not None and link.transport is not None:
            link.transport.close()


class Generator:
    """All the agents of this process on one event loop, with the second's metrics template shared."""

    def __init__(self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.spec, self.loop = spec, loop
        self.start = spec["start"]
        self.end = self.start + spec["warmup"] + spec["duration"]
        self.res = Results(self.start + spec["warmup"])
        self.offset = loop.time() - time.time()
        self._second, self._template = -1.0, b""
        rng, share = random.Random(spec["seed"]), spec.get("incident_share", INCIDENT_SHARE)
        self.agents = [Agent(self, node, rng.random() < share) for node in spec["nodes"]]
        self.left = len(self.agents)
        self.finished: asyncio.Future[None] = loop.create_future()

    def loop_time(self, wall: float) -> float:
        return wall + self.offset

    def metrics_body(self, second: float) -> bytes:
        if second != self._second:
            self._second, self._template = second, metrics_template(second)
        return self._template

    def agent_done(self) -> None:
        self.left -= 1
        if self.left == 0 and not self.finished.done():
            self.finished.set_result(None)

    def sweep(self) -> None:
        """Once a second: requests in flight for longer than TIMEOUT fail."""
        now = time.perf_counter()
        for a in self.agents:
            a.overdue(now)
        if not self.finished.done():
            self.loop.call_later(1.0, self.sweep)

    def lag(self, asked: float) -> None:
        """How late the generator's own event loop wakes up (its saturation, not the server's)."""
        if time.time() >= self.res.measure_from:
            self.res.lag.append((time.perf_counter() - asked - 0.1) * 1000)
        if time.time() < self.end:
            self.loop.call_later(0.1, self.lag, time.perf_counter())

    async def run(self) -> Results:
        for a in self.agents:
            a.schedule()
        self.loop.call_later(1.0, self.sweep)
        self.loop.call_later(0.1, self.lag, time.perf_counter())
        if self.agents:
            await self.finished
        while time.time() < self.end:  # the lag's measure covers the whole window
            await asyncio.sleep(self.end - time.time())
        return self.res


async def work(spec: dict[str, Any]) -> Results:
    return await Generator(spec, asyncio.get_running_loop()).run()


def worker_main() -> int:
    spec = json.loads(sys.stdin.read())
    res = uvloop.run(work(spec))  # the server's event loop (run.py): a cheaper generator leaves more CPU to it
    json.dump({"latencies": res.latencies, "errors": dict(res.errors), "late": res.late, "requests": res.requests,
               "lag": res.lag}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
