"""The aggregator actor: packet batches and kernel counters in, traffic windows and summaries out.

A thin adapter around floodwatch.aggregate.engine.Engine (pure logic, stream time only): binds PULL on
bus.packets (PacketBatch, CounterSample, StreamEnded), publishes traffic.window every 100 ms of stream
time, traffic.second per second, and on stream.ended the whole-run traffic.summary followed by the
stream.ended itself. Rebuilds the payload-signature matcher with the API's IOC patterns on
config.received. `python -m actors.aggregator --config FILE`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from floodwatch.aggregate.engine import BadBatch, Engine
from floodwatch.aggregate.geo import CountryLookup, make_lookup
from floodwatch.aggregate.sigsample import SignatureSampler, load_matcher
from floodwatch.config import Config
from floodwatch.logs import RateLimitedLog
from floodwatch.messages import (
    ConfigReceived,
    CounterSample,
    Message,
    PacketBatch,
    QuietWindows,
    StreamEnded,
    TrafficSecond,
    TrafficSummary,
    TrafficWindow,
)
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.core import rss_bytes
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.aggregator import AggregatorSettings

MEMORY_CHECK_INTERVAL = 1.0


def quiet(w: TrafficWindow) -> bool:
    """A window in which nothing was seen: no record, no packet by the counters."""
    return w.sampled == 0 and w.packets_in == 0 and w.packets_out == 0


def quiet_runs(out: list[Message]) -> list[Message]:
    """The engine's output as it goes on the bus: consecutive quiet windows alike but for their times (a
    silent link's, ten a second, all produced by one counter reading) as one QuietWindows. Nothing waits:
    only windows of the same output are merged, so a window with traffic goes out as soon as before. A
    second's or the run's summary met inside a run follows the run (a silent second stays one message
    whatever the phase of the readings)."""
    sent: list[Message] = []
    run: list[TrafficWindow] = []
    held: list[Message] = []
    key: dict[str, Any] = {}  # the run's fields but its times
    for m in out:
        if isinstance(m, TrafficWindow) and quiet(m):
            mkey = timeless(m)
            if run and mkey == key and m.t_start == run[-1].t_end:
                run.append(m)
                continue
            sent += _run_message(run) + held
            run, held, key = [m], [], mkey
        elif run and not isinstance(m, TrafficWindow):
            held.append(m)
        else:
            sent += _run_message(run) + held + [m]
            run, held = [], []
    return sent + _run_message(run) + held


def timeless(w: TrafficWindow) -> dict[str, Any]:
    """The window's fields but its times (and its width, which QuietWindows keeps): a copy of its
    attributes (a C-level copy; to_dict() names each field in Python, 40 of them per window)."""
    fields = dict(w.__dict__)
    fields["t_start"], fields["t_end"] = 0, round(1 / (w.t_end - w.t_start))
    return fields


def _run_message(run: list[TrafficWindow]) -> list[Message]:
    return [QuietWindows(first=run[0], count=len(run))] if len(run) > 1 else list(run)


class AggregatorActor(Actor[AggregatorSettings]):
    name = "aggregator"
    subscribes = (ConfigReceived,)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.sampler = SignatureSampler(None)
        self.geo: CountryLookup | None = None
        self.engine = Engine(self.settings, self.sampler)
        self._warn = RateLimitedLog(self.log, 10.0)
        self._next_memory_check = 0.0
        self.counters.update({"bad_batches": 0, "windows": 0, "seconds": 0, "summaries": 0, "streams_ended": 0,
                              "memory_over_cap": 0, "quiet_runs": 0})
        self._ended_stats = {"batches": 0, "records": 0, "late_records": 0}  # of the streams that ended
        self.count_from(self._engine_counters)
        self.declare_gauges("rss_mb")

    def on_start(self) -> None:
        self.sampler.matcher = load_matcher()
        self.geo = make_lookup(self.settings.geo, self.settings.geoip_db)
        self.engine = Engine(self.settings, self.sampler, self.geo)
        self.pull(self.endpoints.packets, self.on_bulk, hwm=self.config.bus.hwm_packets)

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, ConfigReceived):
            matcher = load_matcher(msg.ioc_patterns)
            self.sampler.matcher = matcher
            self.log.info("signature matcher rebuilt with {} IOC pattern(s), {} rejected",
                          len(msg.ioc_patterns), len(matcher.rejected_iocs))

    def on_bulk(self, msg: Message) -> None:
        now = time.monotonic()
        if now >= self._next_memory_check:  # only traffic makes the aggregator grow: checked as it comes
            self._next_memory_check = now + MEMORY_CHECK_INTERVAL
            self.check_memory()
        if isinstance(msg, PacketBatch):
            try:
                out = self.engine.feed_batch(msg)
            except BadBatch as e:
                self.counters["bad_batches"] += 1
                self._warn_once("bad batch dropped: {}", e)
                return
            self.emit(out)
        elif isinstance(msg, CounterSample):
            try:
                out = self.engine.feed_counters(msg)
            except BadBatch as e:
                self.counters["bad_batches"] += 1
                self._warn_once("bad counter sample dropped: {}", e)
                return
            self.emit(out)
        elif isinstance(msg, StreamEnded):
            self.emit(self.engine.finish())
            self.publish(msg)
            self.counters["streams_ended"] += 1
            self.log.info("stream {} ended after {} packets: summary published", msg.source, msg.packets)
            self._ended_stats = self._engine_counters()
            self.engine = Engine(self.settings, self.sampler, self.geo)
        else:
            self.counters["bad_messages"] += 1

    def emit(self, out: list[Message]) -> None:
        for m in quiet_runs(out):
            self.publish(m)
            if isinstance(m, TrafficWindow):
                self.counters["windows"] += 1
            elif isinstance(m, QuietWindows):
                self.counters["windows"] += m.count
                self.counters["quiet_runs"] += 1
            elif isinstance(m, TrafficSecond):
                self.counters["seconds"] += 1
            elif isinstance(m, TrafficSummary):
                self.counters["summaries"] += 1

    def _engine_counters(self) -> dict[str, int]:
        """Batches and records since the actor started (the engine starts afresh with each stream)."""
        st = self.engine.stats
        return {k: v + int(st[k]) for k, v in self._ended_stats.items()}

    def check_memory(self) -> None:
        rss = rss_bytes()
        self.counters["rss_mb"] = round(rss / 2**20, 1)
        if rss > self.settings.memory_cap_mb * 2**20:
            self.counters["memory_over_cap"] += 1
            self.health = f"memory {rss / 2**20:.0f} MiB over the {self.settings.memory_cap_mb} MiB cap"
            self._warn_once("{}", self.health)
        elif self.health.startswith("memory"):
            self.health = "ok"

    def _warn_once(self, fmt: str, *args: Any) -> None:
        self._warn.warning(fmt, fmt, *args)


def main(argv: list[str] | None = None) -> int:
    return run_actor(AggregatorActor, argv)


if __name__ == "__main__":
    sys.exit(main())
