"""Every message on the floodwatch bus, one codec and one registry.

A message is a frozen dataclass with msgpack-native fields only; timestamps are float epoch seconds.
Its `TOPIC` is its name on the bus (dotted, past tense for events). The envelope is
`msgpack([SCHEMA_VERSION, topic, {field: value}])`; `decode` checks the version, the topic, the set of
fields and each field's basic type, and raises MessageDecodeError for anything else.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, NotRequired, TypedDict, TypeVar, Union

import msgpack

from floodwatch.errors import MessageDecodeError

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # bigger frames are refused before unpacking
MAX_HLL_BYTES = 1 << 18  # HyperLogLog registers at the highest precision (floodwatch/aggregate/hll.py)


class Message:
    """Marker base: every registered message class derives from it."""

    TOPIC: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return {name: getattr(self, name) for name in names}

    def wire_fields(self) -> dict[str, Any]:
        """The fields as they travel: `to_dict()` unless a class sends some in a compact form."""
        return self.to_dict()

    @classmethod
    def expand_wire(cls, fields: dict[str, Any]) -> None:
        """Undo `wire_fields`' compact forms in place (before the type checks); MessageDecodeError for
        a compact form that is not valid."""


M = TypeVar("M", bound=type[Message])
REGISTRY: dict[str, type[Message]] = {}
_FIELD_TYPES: dict[str, dict[str, tuple[type, ...]]] = {}
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # per class, in order (dataclasses.fields is slow)
_ZEROS: dict[int, bytes] = {}  # all-zero HLL registers by length (one of each power of two)


def _basic_types(annotation: Any) -> tuple[type, ...]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        out: tuple[type, ...] = ()
        for arg in typing.get_args(annotation):
            out += _basic_types(arg)
        return out
    if annotation is type(None):
        return (type(None),)
    if annotation is float:
        return (float, int)
    if annotation is Any:
        return (object,)
    base = origin or annotation
    if base in (list, tuple):
        return (list, tuple)
    if isinstance(base, type):
        return (base,)
    return (object,)


def register(cls: M) -> M:
    """Class decorator: add a message class to the registry under its TOPIC."""
    if not cls.TOPIC or cls.TOPIC in REGISTRY:
        raise ValueError(f"bad or duplicate topic {cls.TOPIC!r}")
    hints = typing.get_type_hints(cls)
    REGISTRY[cls.TOPIC] = cls
    _FIELD_TYPES[cls.TOPIC] = {
        f.name: _basic_types(hints[f.name]) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    return cls


def encode(msg: Message) -> bytes:
    """A message -> its envelope bytes."""
    return msgpack.packb([SCHEMA_VERSION, msg.TOPIC, msg.wire_fields()], use_bin_type=True)


def frames(msg: Message) -> list[bytes]:
    """A message as PUB frames: [topic, envelope]."""
    return [msg.TOPIC.encode(), encode(msg)]


def decode(data: bytes) -> Message:
    """Envelope bytes -> a message; MessageDecodeError for anything that is not a valid message."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageDecodeError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise MessageDecodeError(f"not msgpack: {type(e).__name__}: {e}") from e
    if not isinstance(envelope, list) or len(envelope) != 3:
        raise MessageDecodeError("envelope is not [version, topic, fields]")
    version, topic, fields = envelope
    if version != SCHEMA_VERSION:
        raise MessageDecodeError(f"schema version {version!r}, expected {SCHEMA_VERSION}")
    cls = REGISTRY.get(topic) if isinstance(topic, str) else None
    if cls is None:
        raise MessageDecodeError(f"unknown message type {topic!r}")
    if not isinstance(fields, dict):
        raise MessageDecodeError(f"{topic}: fields are not a map")
    return _build(cls, fields)


def _build(cls: type[Message], fields: dict[str, Any]) -> Message:
    """Wire fields of `cls` -> the message: the set of fields, the compact forms and each field's basic
    type checked (MessageDecodeError otherwise)."""
    topic = cls.TOPIC
    expected = _FIELD_TYPES[topic]
    if fields.keys() != expected.keys():
        missing = sorted(expected.keys() - fields.keys())
        extra = sorted(str(k) for k in fields.keys() - expected.keys())
        raise MessageDecodeError(f"{topic}: missing fields {missing}, unknown fields {extra}")
    cls.expand_wire(fields)
    for name, value in fields.items():
        allowed = expected[name]
        if not isinstance(value, allowed):
            raise MessageDecodeError(f"{topic}.{name}: {type(value).__name__} is not allowed")
    return cls(**fields)


def decode_frames(parts: list[bytes]) -> Message:
    """PUB/SUB frames [topic, envelope] (or a single envelope frame) -> a message."""
    if len(parts) == 1:
        return decode(parts[0])
    if len(parts) != 2:
        raise MessageDecodeError(f"{len(parts)} frames, expected 1 or 2")
    msg = decode(parts[1])
    if parts[0] != msg.TOPIC.encode():
        raise MessageDecodeError(f"topic frame {parts[0][:40]!r} does not match {msg.TOPIC}")
    return msg


# --------------------------------------------------------------------------------------------------
# Control: actor <-> supervisor ROUTER, CLI <-> supervisor


@register
@dataclass(frozen=True)
class ActorHello(Message):
    TOPIC: ClassVar[str] = "actor.hello"
    actor: str
    pid: int


@register
@dataclass(frozen=True)
class ActorHelloAck(Message):
    TOPIC: ClassVar[str] = "actor.hello_ack"
    ok: bool
    reason: str = ""


@register
@dataclass(frozen=True)
class ActorReady(Message):
    TOPIC: ClassVar[str] = "actor.ready"
    actor: str
    pid: int


@register
@dataclass(frozen=True)
class ActorHeartbeat(Message):
    TOPIC: ClassVar[str] = "actor.heartbeat"
    actor: str
    pid: int
    ts: float
    counters: dict[str, Any]  # messages in/out/dropped, bad_messages, errors + the actor's own
    cpu_seconds: float
    rss_bytes: int
    health: str = "ok"  # free text the actor sets, e.g. "api: 401 unauthorized"
    # which of `counters` are gauges (levels that go up and down); the other numbers only grow while
    # the actor lives (Prometheus counters: floodwatch_<actor>_<name>_total, docs/metrics.md)
    gauges: list[str] = field(default_factory=list)


@register
@dataclass(frozen=True)
class StatusRequest(Message):
    TOPIC: ClassVar[str] = "status.request"
    nonce: str = ""


@register
@dataclass(frozen=True)
class StatusReply(Message):
    TOPIC: ClassVar[str] = "status.reply"
    nonce: str
    supervisor: dict[str, Any]
    actors: list[dict[str, Any]]  # name, pid, state, restarts, uptime, last_heartbeat, counters, health


# --------------------------------------------------------------------------------------------------
# Bulk: capture -> aggregator (bus.packets), capture -> recorder (bus.frames)


@register
@dataclass(frozen=True)
class PacketBatch(Message):
    """Packet summaries, `count` rows of floodwatch.records.RECORD_DTYPE packed in `records`."""

    TOPIC: ClassVar[str] = "packets.batch"
    source: str  # "afpacket" | "pcap" | "pyshark"
    iface: str
    seq: int
    sample_rate: int  # 1 in N packets reached Python while this batch was read
    count: int
    records: bytes
    t_first: float
    t_last: float


@register
@dataclass(frozen=True)
class CounterSample(Message):
    """Exact kernel interface counters (cumulative) plus capture-side loss, sampled every 100 ms."""

    TOPIC: ClassVar[str] = "counters.sampled"
    iface: str
    ts: float
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    kernel_drops: int  # cumulative PACKET_STATISTICS tp_drops
    send_drops: int  # cumulative batches we could not hand to the aggregator (HWM)
    sample_rate: int
    conn_count: int  # active connections from the kernel, -1 when unknown


@register
@dataclass(frozen=True)
class FrameBatch(Message):
    """Raw frames for the recorder: [[ts, wirelen, bytes], ...], bounded and rate-limited."""

    TOPIC: ClassVar[str] = "frames.batch"
    iface: str
    linktype: int  # pcap LINKTYPE_* of the bytes (1 = Ethernet)
    sample_rate: int
    frames: list[Any]


@register
@dataclass(frozen=True)
class StreamEnded(Message):
    """A finite source (a pcap file) has no more packets; sent on bulk channels and re-published."""

    TOPIC: ClassVar[str] = "stream.ended"
    source: str
    packets: int
    ts: float  # time of the last packet (file clock)
    error: str = ""  # non-empty when the source stopped on an error (e.g. a truncated file)


# --------------------------------------------------------------------------------------------------
# Traffic: aggregator -> detector, reporter, analyze
# Rows inside the messages are typed dicts (the codec checks the top-level type: a list or a dict).
# Rows written [a, b, c] stay lists of values (msgpack has no tuples): their order is in the comments.


class PortPackets(TypedDict):
    proto: str  # "tcp" "udp" "icmp" "other"
    port: int
    packets: int


class Victim(TypedDict):
    """One heavy destination of a window (TrafficWindow.victims), counted apart from the others."""

    ip: str
    packets: int
    bytes: int
    proto: dict[str, int]  # "tcp" "udp" "icmp" "other" -> packets
    tcp_flags: dict[str, int]  # flag combination -> packets
    top_src_port: PortPackets | None  # its heaviest source port
    src_distinct: int  # HyperLogLog estimate of its sources


class IpCount(TypedDict):
    ip: str
    count: int
    bytes: NotRequired[int]  # top_dst_ips only


class PortCount(TypedDict):
    port: int
    proto: str
    count: int


class VectorShare(TypedDict):
    """One attack vector of an incident (IncidentEvent.vectors)."""

    family: str
    subtype: str
    share: float  # percent of the incident's packets
    packets: int
    confirmed: bool


class IocPattern(TypedDict):
    pattern: str
    name: str
    attack_family: str


@register
@dataclass(frozen=True)
class ExporterTraffic(Message):
    """collector -> detector: which exporter saw traffic to which protected address since the last one
    (bounded: the heaviest pairs only), so an incident can name the routers that saw it."""

    TOPIC: ClassVar[str] = "collector.exporters"
    ts: float  # wall clock
    pairs: list[list[Any]]  # [exporter address, destination address, packets scaled by sampling]


def _zeros(n: int) -> bytes:
    """n zero bytes, one shared object per length that is a power of two (others are made each time)."""
    z = _ZEROS.get(n)
    if z is None:
        z = bytes(n)
        if not n & (n - 1) and n <= MAX_HLL_BYTES:
            _ZEROS[n] = z
    return z


@register
@dataclass(frozen=True)
class TrafficWindow(Message):
    """One 100 ms window. Counts are estimates scaled by the sample rate unless `exact` says so."""

    TOPIC: ClassVar[str] = "traffic.window"
    t_start: float
    t_end: float
    exact: bool  # packets_*/bytes_* come from kernel counters
    sample_rate: float
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    sampled: int  # records seen in this window (both directions)
    proto_in: dict[str, int]  # "tcp" "udp" "icmp" "other" -> packets (inbound, scaled)
    proto_out: dict[str, int]
    ipver_in: dict[str, int]  # "4" "6" -> packets
    tcp_flags: dict[str, int]  # inbound, by combination: SYN SYN-ACK ACK RST ... -> packets
    fragments: dict[str, int]  # "first" "later" -> packets (inbound)
    size_hist: dict[str, int]  # inbound, bucket label -> packets
    ttl_hist: dict[int, int]  # inbound TTL/hop limit -> packets
    src_distinct: int  # HyperLogLog estimate, inbound sources
    src_hll: bytes  # HLL registers (mergeable across windows)
    top_src_ips: list[Any]  # [[ip, packets], ...] inbound
    top_dst_ips: list[Any]  # [[ip, packets, bytes], ...] inbound (the victims)
    top_src_ports: list[Any]  # [[proto, port, packets], ...] inbound
    top_dst_ports: list[Any]  # [[proto, port, packets], ...] inbound
    victims: list[Victim]
    signatures: dict[str, int]  # payload signature name -> packets (scaled)
    bidir_packets: int  # inbound TCP packets of conversations with outbound traffic too
    malformed: int
    kernel_drops: int  # in this window
    conn_count: int
    # inbound packets and bytes (scaled records) in the second half of the window: the rate of a flood
    # that began mid-window, for the detector's fast rule
    tail_packets_in: int = 0
    tail_bytes_in: int = 0
    # the packet records' own estimates, also when counters make packets_*/bytes_* exact: the base of the
    # record-derived shares (bulk exemption, tail) the detector applies to the totals; 0 = not known
    records_packets_in: int = 0
    records_bytes_in: int = 0
    records_packets_out: int = 0
    records_bytes_out: int = 0
    # country -> packets of the window's heaviest inbound sources, by the lookup [aggregator] geo names
    # (empty when it is "off"): the incidents' geo_breakdown is summed from these
    geo: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # aggregator-specific, documented there
    # inbound frames whose IP header does not parse (scaled; counted in proto_in "other" too)
    malformed_in: int = 0
    # inbound TLS ClientHellos (new TLS connections) to [aggregator] tls_ports (scaled), and their top
    # sources [[ip, hellos], ...] (floodwatch/aggregate/tls.py)
    tls_hellos: int = 0
    top_tls_src: list[Any] = field(default_factory=list)
    # inbound records with an IP header (not scaled): the sample src_hll and ttl_hist were made from, of
    # the sum(ttl_hist) packets they stand for; 0 = not known (no correction of the distinct count)
    sampled_src: int = 0

    def wire_fields(self) -> dict[str, Any]:
        """All-zero HLL registers (every window of a silent link: 4 KiB at p=12, ten a second) travel
        as their length; `expand_wire` gives the same bytes back."""
        fields = self.to_dict()
        regs = self.src_hll
        if regs and regs == _zeros(len(regs)):
            fields["src_hll"] = len(regs)
        return fields

    @classmethod
    def expand_wire(cls, fields: dict[str, Any]) -> None:
        n = fields["src_hll"]
        if isinstance(n, bytes):
            return
        if type(n) is not int or not 0 < n <= MAX_HLL_BYTES or n & (n - 1):
            raise MessageDecodeError(f"{cls.TOPIC}.src_hll: {n!r} is neither registers nor their count")
        fields["src_hll"] = _zeros(n)


MAX_QUIET_RUN = 36_000  # windows in one QuietWindows (an hour of 100 ms windows; the aggregator sends ~10)


@register
@dataclass(frozen=True)
class QuietWindows(Message):
    """`count` consecutive windows that are alike but for their times, as one message: a silent link's
    windows (ten a second, all empty) go once a second instead of one by one. `first` is the first of
    them; window i (0-based) is `first` moved i widths on the window grid (t_start = index / per second,
    as the aggregator's windows are). A consumer of traffic.window handles every window of `windows()`
    as if each had come alone."""

    TOPIC: ClassVar[str] = "traffic.quiet"
    first: TrafficWindow
    count: int

    def windows(self) -> list[TrafficWindow]:
        """The windows it stands for, each with its own containers (readers may fold into them)."""
        first = self.first
        per_second = round(1 / (first.t_end - first.t_start))
        index = round(first.t_start * per_second)
        fields = first.__dict__
        mutable = [k for k, v in fields.items() if isinstance(v, dict | list)]
        out = [first]
        for i in range(index + 1, index + self.count):
            w = object.__new__(TrafficWindow)  # a copy without dataclasses.replace's checks: 9x cheaper
            w.__dict__.update(fields, t_start=i / per_second, t_end=(i + 1) / per_second)
            for k in mutable:
                w.__dict__[k] = fields[k].copy()
            out.append(w)
        return out

    def wire_fields(self) -> dict[str, Any]:
        return {"first": self.first.wire_fields(), "count": self.count}

    @classmethod
    def expand_wire(cls, fields: dict[str, Any]) -> None:
        first, count = fields["first"], fields["count"]
        if type(count) is not int or not 0 < count <= MAX_QUIET_RUN:
            raise MessageDecodeError(f"{cls.TOPIC}.count: {count!r} is not 1..{MAX_QUIET_RUN}")
        if not isinstance(first, dict):
            raise MessageDecodeError(f"{cls.TOPIC}.first: {type(first).__name__} is not a window's fields")
        window = _build(TrafficWindow, first)
        assert isinstance(window, TrafficWindow)
        if not 0 < window.t_end - window.t_start <= 1 or not math.isfinite(window.t_start):
            raise MessageDecodeError(f"{cls.TOPIC}.first: times {window.t_start!r}..{window.t_end!r} are no window")
        fields["first"] = window


@register
@dataclass(frozen=True)
class WebWindow(Message):
    """Requests read from web server access logs in one window of read time (actors/weblog.py).

    Tops are [[name, requests], ...] from heavy-hitter tables (bounded whatever the clients send)."""

    TOPIC: ClassVar[str] = "weblog.window"
    t_start: float
    t_end: float
    requests: int
    lines: int  # lines read (requests + malformed)
    malformed: int
    methods: dict[str, int]  # GET POST HEAD ... (others as OTHER)
    status: dict[str, int]  # 2xx 3xx 4xx 5xx other
    with_query: int  # requests with a query string
    distinct_queries: int  # HyperLogLog estimate of the distinct query strings
    distinct_clients: int  # HyperLogLog estimate of the client addresses
    client_hll: bytes  # its registers (mergeable across windows)
    top_clients: list[Any]
    top_prefixes: list[Any]
    top_paths: list[Any]
    top_agents: list[Any]
    top_sites: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)


@register
@dataclass(frozen=True)
class TrafficSecond(Message):
    """The per-second summary: what the reporter sends as a metrics sample."""

    TOPIC: ClassVar[str] = "traffic.second"
    t_start: float
    t_end: float
    pps: int
    bps: int
    pps_in: int
    bps_in: int
    pps_out: int
    bps_out: int
    tcp_pct: float
    udp_pct: float
    icmp_pct: float
    other_pct: float
    conn_count: int
    src_distinct: int
    sample_rate: float
    exact: bool
    kernel_drops: int
    malformed: int


@register
@dataclass(frozen=True)
class TrafficSummary(Message):
    """The whole run (the whole capture in `analyze`)."""

    TOPIC: ClassVar[str] = "traffic.summary"
    t_first: float
    t_last: float
    packets: int
    bytes: int
    protocols: dict[str, int]
    source_ip_count: int
    source_ip_count_exact: bool
    top_src_ips: list[IpCount]
    top_dst_ips: list[IpCount]  # with bytes
    top_src_ports: list[PortCount]
    top_dst_ports: list[PortCount]
    tcp_flags: dict[str, int]
    fragments: dict[str, int]
    malformed: int
    sample_rate: float
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Incidents: detector -> reporter, recorder, executor, analyze


@dataclass(frozen=True)
class IncidentEvent(Message):
    """Every field of the API's incident call, plus the contract's part B fields."""

    incident_key: str  # UUID made once per incident
    status: str  # "active" | "resolved"
    attack_family: str
    attack_subtype: str
    severity: str  # low | medium | high | critical
    confidence: int  # 0-100
    started_at: float
    ended_at: float | None
    updated_at: float
    seq: int  # 0 for opened, then +1 per event
    peak_pps: int
    peak_bps: int
    protocol_breakdown: dict[str, float]
    tcp_flag_breakdown: dict[str, int]
    geo_breakdown: dict[str, int]
    source_ip_count: int
    top_src_ips: list[IpCount]
    top_dst_ports: list[PortCount]
    target_ips: list[str]
    ioc_matches: list[Any]
    spoofing_detected: bool
    botnet_detected: bool
    vectors: list[VectorShare] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    exporters: list[str] = field(default_factory=list)  # network mode: the routers that saw it


@register
@dataclass(frozen=True)
class IncidentOpened(IncidentEvent):
    TOPIC: ClassVar[str] = "incident.opened"


@register
@dataclass(frozen=True)
class IncidentUpdated(IncidentEvent):
    TOPIC: ClassVar[str] = "incident.updated"


@register
@dataclass(frozen=True)
class IncidentResolved(IncidentEvent):
    TOPIC: ClassVar[str] = "incident.resolved"


@register
@dataclass(frozen=True)
class IncidentEnriched(Message):
    """Forensic findings from the recorder; the detector merges them and re-publishes an update."""

    TOPIC: ClassVar[str] = "incident.enriched"
    incident_key: str
    attack_subtype: str  # "" when the findings do not change it
    ioc_matches: list[Any]
    findings: dict[str, Any]
    findings_path: str


@register
@dataclass(frozen=True)
class PcapSaved(Message):
    TOPIC: ClassVar[str] = "pcap.saved"
    incident_key: str
    path: str
    packets: int
    bytes: int
    linktype: int
    sha256: str
    sample_rate: int
    truncated: bool  # the packet or time limit was reached


# --------------------------------------------------------------------------------------------------
# Remote config and commands: reporter <-> detector, executor


@register
@dataclass(frozen=True)
class ConfigReceived(Message):
    TOPIC: ClassVar[str] = "config.received"
    fetched_at: float
    node_id: int | None
    pps_threshold: int | None
    bps_threshold: int | None
    baseline: dict[str, Any]
    ioc_patterns: list[IocPattern]  # normalised


@register
@dataclass(frozen=True)
class CommandReceived(Message):
    TOPIC: ClassVar[str] = "command.received"
    command_id: int
    command: Any  # as the API sent it: only data, validated by the executor
    received_at: float
    source: str  # "api" | "policy"
    incident_key: str = ""


@register
@dataclass(frozen=True)
class CommandFinished(Message):
    TOPIC: ClassVar[str] = "command.finished"
    command_id: int
    status: str  # "applied" | "rejected" | "failed"
    error: str
    output: str
    executed_at: float
    source: str = "api"


@register
@dataclass(frozen=True)
class AnalysisFinished(Message):
    """The detector has handled the end of a finite stream (used by `floodwatch analyze`)."""

    TOPIC: ClassVar[str] = "analysis.finished"
    source: str
    packets: int
    incidents: int


# --------------------------------------------------------------------------------------------------
# Drain events: an actor that holds work says when it has nothing pending. Each is published at the
# actor's heartbeat when it differs from the last one, so a reader knows which events it covers.


@register
@dataclass(frozen=True)
class RecorderDrained(Message):
    """The recorder has no dissection waiting or running (`floodwatch analyze` waits for it)."""

    TOPIC: ClassVar[str] = "recorder.drained"
    saved: int  # captures saved and announced (pcap.saved) since the recorder started
    unsaved: int  # incidents that got no capture file: write errors, busy, low disk, empty


@register
@dataclass(frozen=True)
class ReporterDrained(Message):
    """The reporter's outbox is empty: everything it was given is delivered (or dead-lettered)."""

    TOPIC: ClassVar[str] = "reporter.drained"
    incident_events: int  # incident.opened/updated/resolved events it received since it started
    pcaps: int  # pcap.saved events it received since it started
