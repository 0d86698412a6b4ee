"""The aggregator's publish path on a silent link (actors/aggregator.py `quiet_runs`), with the real engine:
what goes on the bus stands for exactly the windows the engine made, in order, and traffic is not merged."""

from __future__ import annotations

from actors.aggregator import quiet_runs
from floodwatch import messages
from floodwatch.aggregate.engine import Engine
from floodwatch.messages import Message, QuietWindows, TrafficSecond, TrafficWindow
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import batch, counters, records


def on_the_bus(out: list[Message]) -> list[Message]:
    """Through the codec, as the detector gets them."""
    return [messages.decode_frames(messages.frames(m)) for m in quiet_runs(out)]


def windows_of(sent: list[Message]) -> list[TrafficWindow]:
    return [w for m in sent for w in (m.windows() if isinstance(m, QuietWindows) else [m])
            if isinstance(w, TrafficWindow)]


def test_silent_seconds_go_as_one_message_each_and_stand_for_every_window() -> None:
    engine = Engine(AggregatorSettings())
    made: list[TrafficWindow] = []
    sent: list[Message] = []
    made_seconds: list[float] = []
    rx = 1_000
    for i in range(8):  # one counter reading a second (capture's quiet mode); traffic in second 5 only
        if i == 5:
            out = engine.feed_batch(batch(records(40, ts=5005.02, proto=17, flags=0)))
            rx += 40
        else:
            out = []
        out += engine.feed_counters(counters(5000.0 + i + 0.055, rx, rx * 60, conn=3 if i < 6 else 4))
        made += [m for m in out if isinstance(m, TrafficWindow)]
        made_seconds += [m.t_start for m in out if isinstance(m, TrafficSecond)]
        sent += on_the_bus(out)
    assert windows_of(sent) == made and len(made) >= 60
    runs = [m for m in sent if isinstance(m, QuietWindows)]
    assert len(runs) >= 5 and max(r.count for r in runs) == 10
    # the window with traffic went alone, never inside a run; a run never mixes different windows
    busy = [m for m in sent if isinstance(m, TrafficWindow) and m.packets_in]
    assert len(busy) == 1 and busy[0].packets_in == 40 and busy[0].t_start == 5005.0
    assert all(len({w.conn_count for w in r.windows()}) == 1 for r in runs)
    # the per-second summaries are all still there, in order
    assert [m.t_start for m in sent if isinstance(m, TrafficSecond)] == made_seconds and len(made_seconds) >= 6
