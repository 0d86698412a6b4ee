"""Forensic dissection of a saved capture with tshark, run as a child process with a hard time limit.

`python -m floodwatch.recorder.dissect FILE --out JSON [--tshark PATH] [--job JOB]` runs tshark's
dissectors over the file (one pass, `-T fields`; a second small pass for memcached payloads, whose UDP
commands tshark 4.0 does not decode) and writes the findings atomically as JSON: DNS query names and
types, NTP modes and private request codes (monlist), memcached commands, SSDP methods and headers, HTTP
methods, hosts, URIs and user agents, SNMP PDUs and communities, TCP flags and options, IP fragments.
Every table is bounded (an attacker picks how many names there are). The summary says which attack
subtype the packets show (`floodwatch.recorder.evidence`) and which IOC patterns they carry.

The recorder actor starts this module with `DissectJob` (floodwatch/recorder/jobs.py), which kills the
process group at the deadline; nothing here runs in the actor's process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from floodwatch.errors import CaptureError
from floodwatch.recorder import evidence

SEP = "\x1f"  # tshark's aggregator between several occurrences of a field
MAX_KEYS = 5000  # distinct values kept per table
TOP = 20  # values reported per table
MAX_VALUE = 200  # characters kept of a value (names, URIs, user agents)
FIELDS = (
    "frame.protocols", "ip.src", "ipv6.src", "ip.frag_offset", "ip.flags.mf",
    "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.option_kind",
    "tcp.options.mss_val", "tcp.options.wscale.shift", "tcp.window_size_value",
    "dns.flags.response", "dns.qry.name", "dns.qry.type", "dns.resp.type",
    "ntp.flags.mode", "ntp.priv.reqcode",
    "http.request.method", "http.host", "http.request.uri", "http.user_agent", "http.response.code",
    "http.request.line", "http.response.line", "snmp.data", "snmp.community",
)  # fmt: skip
IDX = {name: i for i, name in enumerate(FIELDS)}
DNS_TYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT", 28: "AAAA",
             33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3",
             99: "SPF", 251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA"}  # fmt: skip
NTP_MODES = {0: "reserved", 1: "symmetric_active", 2: "symmetric_passive", 3: "client", 4: "server",
             5: "broadcast", 6: "control", 7: "private"}  # fmt: skip
NTP_REQCODES = {0: "PEER_LIST", 1: "PEER_LIST_SUM", 2: "PEER_INFO", 4: "SYS_INFO", 6: "IO_STATS",
                20: "MON_GETLIST", 42: "MON_GETLIST_1"}  # fmt: skip
SNMP_PDUS = {0: "get-request", 1: "get-next-request", 2: "get-response", 3: "set-request", 4: "trap",
             5: "getBulkRequest", 6: "inform-request", 7: "snmpV2-trap", 8: "report"}  # fmt: skip
TCP_OPTIONS = {0: "EOL", 1: "NOP", 2: "MSS", 3: "WS", 4: "SACK_PERM", 5: "SACK", 8: "TS", 19: "MD5",
               28: "UTO", 29: "AO", 30: "MPTCP", 34: "TFO"}  # fmt: skip
SSDP_HEADERS = ("ST", "NT", "NTS", "USN", "MAN", "SERVER", "LOCATION", "USER-AGENT")
MEMCACHED_PORT = 11211


class Table:
    """A Counter that keeps at most MAX_KEYS distinct values; later new values are counted as other."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.other = 0

    def add(self, value: str, n: int = 1) -> None:
        value = value[:MAX_VALUE]
        if value in self.counts or len(self.counts) < MAX_KEYS:
            self.counts[value] += n
        else:
            self.other += n

    def top(self) -> list[list[Any]]:
        return [[k, v] for k, v in self.counts.most_common(TOP)]

    def total(self) -> int:
        return sum(self.counts.values()) + self.other


def _values(row: list[str], name: str) -> list[str]:
    cell = row[IDX[name]] if IDX[name] < len(row) else ""
    return [v for v in cell.split(SEP) if v] if cell else []


def _first(row: list[str], name: str) -> str:
    vals = _values(row, name)
    return vals[0] if vals else ""


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def _named(table: dict[int, str], text: str) -> str:
    n = _int(text)
    return table.get(n, str(n)) if n is not None else text


class Findings:
    """Everything counted over one file's packets."""

    def __init__(self) -> None:
        self.packets = 0
        self.t: dict[str, Table] = {}
        self.evidence: Counter[str] = Counter()

    def table(self, name: str) -> Table:
        return self.t.setdefault(name, Table())

    def add(self, row: list[str]) -> None:
        self.packets += 1
        protos = _first(row, "frame.protocols").split(":")
        self.table("protocols").add(protos[-1] if protos else "")
        src = _first(row, "ip.src") or _first(row, "ipv6.src")
        if src:
            self.table("sources").add(src)
        if _first(row, "ip.frag_offset") not in ("", "0") or _first(row, "ip.flags.mf") in ("1", "True"):
            self.table("ip_fragments").add("later" if _first(row, "ip.frag_offset") not in ("", "0") else "first")
        sport = _int(_first(row, "udp.srcport") or "-1") or -1
        if "udp" in protos:
            self._udp(row, protos, sport)
        if "tcp" in protos:
            self._tcp(row, protos)
        if "dns" in protos or "mdns" in protos:
            self._dns(row)
        if "ntp" in protos:
            self._ntp(row)
        if "http" in protos or "ssdp" in protos:
            self._http(row, "ssdp" in protos)
        if "snmp" in protos:
            for pdu in _values(row, "snmp.data"):
                self.table("snmp_pdus").add(_named(SNMP_PDUS, pdu))
            for c in _values(row, "snmp.community"):
                self.table("snmp_communities").add(c)

    def _udp(self, row: list[str], protos: list[str], sport: int) -> None:
        subtype = evidence.udp_subtype(sport, protos)
        if subtype:
            self.evidence[subtype] += 1
        dport = _first(row, "udp.dstport")
        self.table("udp_dst_ports").add(dport)
        self.table("udp_src_ports").add(str(sport))

    def _tcp(self, row: list[str], protos: list[str]) -> None:
        flags = _int(_first(row, "tcp.flags") or "0") or 0
        names = evidence.flag_names(flags)
        self.table("tcp_flags").add("-".join(sorted(names)) or "NULL")
        if "http" in protos and _first(row, "http.request.method"):
            self.evidence["http_request_flood"] += 1
        else:
            self.evidence[evidence.tcp_subtype(names)] += 1
        kinds = _values(row, "tcp.option_kind")
        self.table("tcp_options").add(",".join(_named(TCP_OPTIONS, k) for k in kinds) or "none")
        for mss in _values(row, "tcp.options.mss_val"):
            self.table("tcp_mss").add(mss)
        for ws in _values(row, "tcp.options.wscale.shift"):
            self.table("tcp_wscale").add(ws)
        self.table("tcp_windows").add(_first(row, "tcp.window_size_value"))
        self.table("tcp_dst_ports").add(_first(row, "tcp.dstport"))

    def _dns(self, row: list[str]) -> None:
        is_response = _first(row, "dns.flags.response") in ("1", "True")
        self.table("dns_messages").add("response" if is_response else "query")
        for name in _values(row, "dns.qry.name"):
            self.table("dns_query_names").add(name.lower())
        for qt in _values(row, "dns.qry.type"):
            self.table("dns_query_types").add(_named(DNS_TYPES, qt))
        for at in _values(row, "dns.resp.type"):
            self.table("dns_answer_types").add(_named(DNS_TYPES, at))

    def _ntp(self, row: list[str]) -> None:
        mode = _first(row, "ntp.flags.mode")
        self.table("ntp_modes").add(_named(NTP_MODES, mode))
        for code in _values(row, "ntp.priv.reqcode"):
            self.table("ntp_request_codes").add(_named(NTP_REQCODES, code))

    def _http(self, row: list[str], ssdp: bool) -> None:
        prefix = "ssdp" if ssdp else "http"
        for m in _values(row, "http.request.method"):
            self.table(f"{prefix}_methods").add(m)
        for code in _values(row, "http.response.code"):
            self.table(f"{prefix}_status").add(code)
        if ssdp:
            for line in _values(row, "http.request.line") + _values(row, "http.response.line"):
                name, _, value = line.partition(":")
                if name.strip().upper() in SSDP_HEADERS:
                    self.table(f"ssdp_header_{name.strip().lower()}").add(value.strip().removesuffix("\\r\\n"))
            return
        for field, table in (("http.host", "http_hosts"), ("http.request.uri", "http_uris"),
                             ("http.user_agent", "http_user_agents")):
            for v in _values(row, field):
                self.table(table).add(v)

    def add_memcached(self, payload_hex: str) -> None:
        try:
            data = bytes.fromhex(payload_hex.replace(":", ""))
        except ValueError:
            return
        body = data[8:] if len(data) > 8 else data  # the UDP frame header
        word = body.split(b"\r\n", 1)[0].split(b" ", 1)[0][:32]
        text = word.decode("ascii", "replace")
        self.table("memcached_commands").add(text if text.isalpha() else "(not a text command)")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"packets": self.packets}
        for name in sorted(self.t):
            tab = self.t[name]
            out[name] = {"top": tab.top(), "distinct": len(tab.counts), "other": tab.other, "total": tab.total()}
        out["evidence"] = dict(self.evidence.most_common())
        return out


def drop_to(user: str) -> dict[str, Any]:
    """Popen arguments that run tshark as `user` (when we are root) in a clean environment: its
    dissectors parse what attackers sent, so they never run with root's rights."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    if os.geteuid() != 0 or not user:
        return {"env": env}
    try:
        pw = pwd.getpwnam(user)
    except KeyError as e:
        raise RuntimeError(f"dissect_user {user!r} does not exist") from e
    return {"env": env, "user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}


def tshark_rows(tshark: str, path: str, fields: tuple[str, ...], display_filter: str = "",
                max_packets: int = 0, user: str = "") -> Iterator[list[str]]:
    """Run tshark over a file (handed over on its stdin, so that an unprivileged tshark needs no access
    to it) and yield one list of field texts per packet; RuntimeError on failure."""
    argv = [tshark, "-n", "-r", "-", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", f"aggregator={SEP}", "-E", "quote=n"]
    if display_filter:
        argv += ["-Y", display_filter]
    if max_packets:
        argv += ["-c", str(max_packets)]
    for f in fields:
        argv += ["-e", f]
    with tempfile.TemporaryFile() as err, open(path, "rb") as capture:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=capture, **drop_to(user))
        assert proc.stdout is not None
        for line in proc.stdout:
            yield line.decode("utf-8", "replace").rstrip("\n").split("\t")
        code = proc.wait()
        if code != 0:
            err.seek(0)
            msg = err.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
            useful = [m for m in msg if "Running as user" not in m and "could be dangerous" not in m]
            raise RuntimeError(f"tshark exited {code}: {' '.join(useful)[-500:] or 'no message'}")


def dissect(path: str, tshark: str, job: dict[str, Any], user: str = "") -> dict[str, Any]:
    """The findings of one capture file (see the module docstring)."""
    found = Findings()
    for row in tshark_rows(tshark, path, FIELDS, user=user):
        found.add(row)
    if found.table("protocols").counts.get("memcache"):
        for row in tshark_rows(tshark, path, ("udp.payload",), "memcache", max_packets=MAX_KEYS, user=user):
            found.add_memcached(row[0])
    out = found.to_dict()
    iocs = evidence.ioc_matches(path, job.get("ioc_patterns", []), out)
    subtype, verdict = evidence.judge(found.evidence, found.packets, str(job.get("attack_subtype", "")),
                                      int(job.get("min_packets", 10)), float(job.get("min_share", 0.2)))
    out["summary"] = {"attack_subtype": subtype, "verdict": verdict, "incident_subtype": job.get("attack_subtype", ""),
                      "ioc_matches": iocs}
    return out


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = 0o640) -> None:
    tmp = path.parent / f".{path.name}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _limit_self(memory_mb: int) -> None:
    """Be gentle with the host: low priority, and bounded memory (tshark inherits both)."""
    with contextlib.suppress(OSError):
        os.nice(10)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m floodwatch.recorder.dissect", description=__doc__)
    p.add_argument("file")
    p.add_argument("--out", required=True, help="where to write the findings JSON")
    p.add_argument("--tshark", default="tshark")
    p.add_argument("--job", default="", help="JSON file: attack_subtype, ioc_patterns, min_packets, min_share")
    p.add_argument("--memory-mb", type=int, default=0)
    p.add_argument("--user", default="", help="run tshark as this user when started as root")
    p.add_argument("--mode", type=lambda s: int(s, 8), default=0o640)
    args = p.parse_args(argv)
    _limit_self(args.memory_mb)
    tshark = shutil.which(args.tshark)
    if tshark is None:
        print(f"dissect: tshark not found at {args.tshark!r}", file=sys.stderr)
        return 3
    try:
        job = json.loads(Path(args.job).read_text()) if args.job else {}
        findings = dissect(args.file, tshark, job, args.user)
        findings.update({"status": "ok", "file": os.path.basename(args.file), "version": 1})
        write_json_atomic(Path(args.out), findings, args.mode)
    except (OSError, RuntimeError, ValueError, CaptureError) as e:
        print(f"dissect: {args.file}: {e}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
