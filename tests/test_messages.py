"""The codec: every message round-trips; anything else is a MessageDecodeError, never a crash."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
from typing import Any

import msgpack
import pytest

from floodwatch import messages
from floodwatch.errors import MessageDecodeError
from floodwatch.messages import REGISTRY, SCHEMA_VERSION, Message, StreamEnded


def _sample(cls: Any) -> Message:
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        t = str(f.type)
        values[f.name] = (
            1.0 if f.name == "t_end" else 0.5 if t.startswith("float") else b"x" if t == "bytes"
            else True if t == "bool" else 1 if t.startswith("int") else [] if t.startswith("list")
            else {} if t.startswith("dict")
            else "s" if t.startswith("str") else _sample(REGISTRY[_TOPICS[t]]) if t in _TOPICS  # a message in one
            else None
        )
    return cls(**values)


_TOPICS = {cls.__name__: topic for topic, cls in REGISTRY.items()}


@pytest.mark.parametrize("topic", sorted(REGISTRY))
def test_every_message_round_trips(topic: str) -> None:
    msg = _sample(REGISTRY[topic])
    assert messages.decode(messages.encode(msg)) == msg
    assert messages.decode_frames(messages.frames(msg)) == msg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "not msgpack"),
        (msgpack.packb([2, "stream.ended", {}]), "schema version"),
        (msgpack.packb([SCHEMA_VERSION, "what.ever", {}]), "unknown message type"),
        (msgpack.packb([SCHEMA_VERSION, "stream.ended", {"source": "x"}]), "missing fields"),
        (msgpack.packb([SCHEMA_VERSION, "stream.ended", {"source": 1, "packets": 1, "ts": 1.0, "error": ""}]),
         "stream.ended.source"),
        (msgpack.packb({"a": 1}), "envelope"),
    ],
)
def test_bad_envelopes_are_named(data: bytes, needle: str) -> None:
    with pytest.raises(MessageDecodeError, match=needle):
        messages.decode(data)


def test_mismatched_topic_frame_is_refused() -> None:
    with pytest.raises(MessageDecodeError):
        messages.decode_frames([b"traffic.window", messages.encode(StreamEnded("x", 1, 0.0))])


def test_fuzzed_envelopes_never_raise_anything_else() -> None:
    rng = random.Random(7)
    good = messages.encode(StreamEnded("pcap", 10, 1.5))
    for i in range(20000):
        if i % 2:
            flipped = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            data = bytes(flipped[: rng.randint(0, len(flipped))])
        else:
            data = os.urandom(rng.randint(0, 64))
        with contextlib.suppress(MessageDecodeError):
            messages.decode(data)


def _window_fields(**over: Any) -> dict[str, Any]:
    from floodwatch.aggregate.sigsample import SignatureSampler
    from floodwatch.aggregate.window import WindowSpec, WindowStats

    msg = WindowStats(7, 0.1, WindowSpec(hll_p=12), SignatureSampler(None)).to_message()
    return {**msg.to_dict(), **over}


def test_an_empty_windows_zero_registers_travel_as_their_length_and_decode_the_same() -> None:
    """A silent link's window: its 4 KiB of zero HLL registers are not sent ten times a second, and
    every reader gets exactly the message it would have got from the full form."""
    msg = messages.TrafficWindow(**_window_fields())
    assert msg.src_hll == bytes(4096)
    compact = messages.encode(msg)
    full = msgpack.packb([SCHEMA_VERSION, msg.TOPIC, msg.to_dict()], use_bin_type=True)
    assert len(compact) < 1024 < 4096 < len(full)
    assert messages.decode(compact) == messages.decode(full) == msg
    assert messages.decode_frames(messages.frames(msg)) == msg


def test_registers_with_a_set_bit_travel_whole() -> None:
    regs = bytearray(4096)
    regs[4095] = 3
    msg = messages.TrafficWindow(**_window_fields(src_hll=bytes(regs)))
    data = messages.encode(msg)
    assert len(data) > 4096 and messages.decode(data) == msg
    empty = messages.TrafficWindow(**_window_fields(src_hll=b""))  # no registers at all: sent as is
    assert messages.decode(messages.encode(empty)) == empty


@pytest.mark.parametrize("count", [0, -4096, 4095, (1 << 18) * 2, True, 4096.0, "4096", None])
def test_a_bad_register_count_is_a_decode_error(count: object) -> None:
    fields = _window_fields(src_hll=count)
    data = msgpack.packb([SCHEMA_VERSION, messages.TrafficWindow.TOPIC, fields], use_bin_type=True)
    with pytest.raises(MessageDecodeError, match="src_hll"):
        messages.decode(data)


def test_a_quiet_run_travels_as_one_message_and_gives_back_every_window() -> None:
    """Ten silent windows as one traffic.quiet: its windows are the ones it stands for, times and all."""
    from floodwatch.aggregate.sigsample import SignatureSampler
    from floodwatch.aggregate.window import WindowSpec, WindowStats

    spec, sampler = WindowSpec(hll_p=12), SignatureSampler(None)
    alone = [WindowStats(17_000_000_000 + i, 0.1, spec, sampler).to_message() for i in range(10)]
    run = messages.QuietWindows(first=alone[0], count=10)
    data = messages.encode(run)
    assert len(data) < 1024 < sum(len(messages.encode(w)) for w in alone)
    back = messages.decode_frames(messages.frames(run))
    assert isinstance(back, messages.QuietWindows) and back.windows() == alone


@pytest.mark.parametrize(("first", "count", "error"), [
    ("window", 0, "count"), ("window", 10**6, "count"), ("window", 2.0, "count"), ("window", True, "count"),
    ([1, 2], 10, "first"), ({"t_start": 1.0}, 10, "missing fields"), ("nan", 10, "no window"),
    ("wide", 10, "no window"),
])
def test_a_bad_quiet_run_is_a_decode_error(first: object, count: object, error: str) -> None:
    fields = _window_fields()
    if first == "window":
        first = fields
    elif first in ("nan", "wide"):
        first = {**fields, "t_start": float("nan")} if first == "nan" else {**fields, "t_end": fields["t_start"] + 5}
    data = msgpack.packb([SCHEMA_VERSION, messages.QuietWindows.TOPIC, {"first": first, "count": count}],
                         use_bin_type=True)
    with pytest.raises(MessageDecodeError, match=error):
        messages.decode(data)
