"""Pure logic of the weblog area: parsing (combined, Caddy, JSON, fuzz), following across rotation and
restarts, bounded windows, and the http_flood detector (flood from few vs a crowd, subtypes, proposals)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from floodwatch.aggregate.hll import HyperLogLog
from floodwatch.config import config_from_dict
from floodwatch.detect.http import HttpDetector
from floodwatch.errors import CommandRejected, ConfigError
from floodwatch.executor.hostfacts import HostFacts
from floodwatch.executor.validate import validate_command
from floodwatch.messages import WebWindow
from floodwatch.settings.executor import ExecutorSettings
from floodwatch.settings.weblog import HttpDetectSettings, WeblogSettings
from floodwatch.weblog.parse import parser_for
from floodwatch.weblog.tail import Follower
from floodwatch.weblog.window import WindowBuilder


def nginx_line(ip: str, path: str = "/", method: str = "GET", status: int = 200, agent: str = "curl/8") -> bytes:
    return (f'{ip} - - [30/Nov/2026:19:00:00 +0000] "{method} {path} HTTP/1.1" {status} 612 "-" '
            f'"{agent}"\n').encode()


def test_combined_lines_are_counted_and_bad_lines_are_malformed() -> None:
    chunk = (nginx_line("198.51.100.7", "/a?x=1") + nginx_line("2001:db8::1", "/login", "POST", 403)
             + b"garbage\n" + b'shop.example:443 203.0.113.9 - - [30/Nov/2026:19:00:00 +0000] "GET / HTTP/2.0" '
             b'200 1 "-" "Mozilla \\"x\\""\n')
    c = parser_for("apache")(chunk)
    assert (c.lines, c.requests, c.malformed) == (4, 3, 1)
    assert c.clients == {b"198.51.100.7": 1, b"2001:db8::1": 1, b"203.0.113.9": 1}
    assert c.paths == {b"/a": 1, b"/login": 1, b"/": 1} and c.queries == {b"x=1": 1}
    assert c.hosts[b"shop.example"] == 1 and c.methods[b"POST"] == 1 and c.statuses[b"403"] == 1
    fast = parser_for("nginx")(nginx_line("198.51.100.7") * 3)  # the split path (aligned quotes)
    assert (fast.requests, fast.malformed, fast.clients) == (3, 0, {b"198.51.100.7": 3})


def test_caddy_and_generic_json() -> None:
    caddy = json.dumps({"request": {"remote_ip": "192.0.2.1", "client_ip": "192.0.2.5", "method": "GET",
                                    "host": "shop.example", "uri": "/p?q=1",
                                    "headers": {"User-Agent": ["bot/1"]}}, "status": 502}).encode()
    c = parser_for("caddy")(caddy + b"\n{not json\n[1]\n")
    assert (c.lines, c.requests, c.malformed) == (3, 1, 2)
    assert c.clients == {b"192.0.2.5": 1} and c.hosts == {b"shop.example": 1} and c.statuses == {b"502": 1}
    g = parser_for("json", {"client": "ip", "uri": "req.url", "status": "code"})
    c = g(b'{"ip": "192.0.2.9", "req": {"url": "/x"}, "code": 200}\n{"ip": "192.0.2.9"}\n')
    assert (c.requests, c.malformed, c.paths) == (1, 1, {b"/x": 1})


@pytest.mark.parametrize("fmt", ["nginx", "apache", "caddy"])
def test_fuzzed_lines_never_raise_and_every_line_is_counted(fmt: str) -> None:
    rng = random.Random(21)
    good = nginx_line("198.51.100.1", "/x") if fmt != "caddy" else b'{"request":{"client_ip":"1.2.3.4","uri":"/"}}\n'
    parse = parser_for(fmt)
    for _ in range(300):
        line = bytearray(good)
        for _ in range(rng.randrange(1, 8)):
            op = rng.randrange(3)
            i = rng.randrange(len(line) - 1)
            if op == 0:
                line[i] = rng.randrange(256) if rng.random() < 0.5 else ord(rng.choice('"\\ [?'))
            elif op == 1:
                del line[i]
            else:
                line.insert(i, ord(rng.choice('"\\ x?:')))
        chunk = bytes(line).replace(b"\n", b"") + b"\n" + good
        c = parse(chunk)
        assert c.lines == 2 and c.requests + c.malformed == 2 and c.requests >= 1


def test_follower_rotation_copytruncate_and_restart(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b"history\n")
    f = Follower(str(log))
    assert f.read() == b""  # a file first seen is followed from its end
    with open(log, "ab") as w:
        w.write(b"a\npart")
    assert f.read() == b"a\n"
    with open(log, "ab") as w:
        w.write(b"ial\nb\n")
    os.rename(log, str(log) + ".1")  # rotation by rename; the server still writes the old file
    log.write_bytes(b"new1\n")
    with open(str(log) + ".1", "ab") as w:
        w.write(b"late\n")
    assert f.read() == b"partial\nb\nlate\nnew1\n"
    saved, rotated = f.position(), f.rotated_position()
    f.close()
    with open(log, "ab") as w:
        w.write(b"while-down\n")
    with open(str(log) + ".1", "ab") as w:
        w.write(b"late2\n")
    g = Follower(str(log), saved, rotated=rotated)  # a restart: nothing re-read, nothing skipped
    assert g.read() == b"late2\nwhile-down\n"
    log.write_bytes(b"t\n")  # copy-truncate: shorter than our offset
    assert g.read() == b"t\n" and g.counters["truncations"] == 1
    g.close()


def test_window_memory_is_bounded_under_random_clients_paths_and_agents() -> None:
    s = WeblogSettings(capacity=64, top_n=5)
    wb = WindowBuilder(s, 0.0)
    parse = parser_for("nginx")
    rng = random.Random(5)
    for _ in range(20):
        chunk = b"".join(nginx_line(f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                                    f"/{rng.getrandbits(64):x}?{rng.getrandbits(32)}", agent=f"ua{rng.getrandbits(40)}")
                         for _ in range(1000))
        chunk += nginx_line("198.51.100.66") * 3000
        wb.add(parse(chunk), b"site")
        for top in (wb.clients, wb.paths, wb.agents, wb.prefixes):
            assert len(top.names) <= 4 * 64 + 2000 and top.hh.keys.size <= 64 + 1
    w = wb.flush(1.0)
    assert w.requests == 80_000 and w.top_clients[0][0] == "198.51.100.66"
    assert 59_000 <= w.top_clients[0][1] <= 60_000  # a lower bound, within the summary's error
    assert 15_000 < w.distinct_clients < 25_000 and w.with_query == 20_000
    assert w.top_paths[0][0] == "/" and w.top_sites == [["site", 80_000]]


def sketch(distinct: int, first: int = 0) -> bytes:
    """HyperLogLog registers of `distinct` clients numbered from `first`."""
    hll = HyperLogLog(10)
    hll.add_keys(np.arange(first, first + distinct, dtype=np.uint64))
    return hll.to_bytes()


def window(t: float, requests: int, clients: list[tuple[str, int]], distinct: int, seconds: float = 0.25,
           path: str = "/", status: dict[str, int] | None = None, agent: str = "h2load", with_query: int = 0,
           method: str = "GET", first: int = 0) -> WebWindow:
    return WebWindow(client_hll=sketch(distinct, first), t_start=t, t_end=t + seconds, requests=requests,
                     lines=requests, malformed=0,
                     methods={method: requests}, status=status or {"2xx": requests}, with_query=with_query,
                     distinct_queries=with_query, distinct_clients=distinct, top_clients=[list(c) for c in clients],
                     top_prefixes=[], top_paths=[[path, requests]], top_agents=[[agent, requests]],
                     top_sites=[["shop", requests]])


def run(det: HttpDetector, windows: list[WebWindow]) -> list[str]:
    return [f"{e.TOPIC}:{e.attack_subtype}" for w in windows for e in det.step(w)]


def test_flood_from_few_opens_fast_and_resolves_as_one_incident() -> None:
    det = HttpDetector(HttpDetectSettings(hold_down=1.0))
    quiet = [window(i * 0.25, 5, [("192.0.2.1", 1)], 5) for i in range(8)]
    flood = [window(2 + i * 0.25, 2000, [("198.51.100.9", 2000)], 1) for i in range(12)]
    after = [window(5 + i * 0.25, 5, [("192.0.2.1", 1)], 5) for i in range(8)]
    events = []
    for w in quiet + flood + after:
        events += det.step(w)
    assert [e.TOPIC for e in events if e.TOPIC != "incident.updated"] == ["incident.opened", "incident.resolved"]
    opened = events[0]
    assert opened.started_at == 2.0 and opened.updated_at == 2.25  # 8,000 r/s vs a 200 r/s floor: one window
    assert opened.attack_family == "http_flood" and opened.top_src_ips[0] == {"ip": "198.51.100.9", "count": 2000}
    assert opened.extra["site"] == "shop" and opened.extra["status_mix"] == {"2xx": 100.0}
    assert "iptables -I INPUT -s 198.51.100.9 -j DROP" in opened.extra["mitigation"]


def test_a_crowd_of_ordinary_clients_opens_nothing_a_few_fast_clients_do() -> None:
    det = HttpDetector(HttpDetectSettings())
    # a sale: 4,000 r/s from 4,000 addresses at 1 r/s each (a quarter of them in each 0.25 s window, each
    # looking like 4 r/s there), the top 10 carrying 1 %
    crowd = [window(i * 0.25, 1000, [(f"203.0.113.{k}", 10) for k in range(10)], 1000, first=1000 * (i % 4))
             for i in range(40)]
    assert run(det, crowd) == [] and det.counters["crowd_windows"] == 40
    # the same rate from 100 addresses (40 r/s each): a flood even though no address dominates
    flood = [window(20 + i * 0.25, 1000, [(f"198.51.100.{k}", 10) for k in range(10)], 100, first=10**6)
             for i in range(8)]
    assert run(det, flood)[:1] == ["incident.opened:bot_flood"]


def test_rates_just_over_the_threshold_need_to_be_sustained() -> None:
    det = HttpDetector(HttpDetectSettings(sustain_seconds=1.0))
    burst = [window(i * 0.25, 100, [("198.51.100.9", 100)], 1) for i in range(3)]  # 400 r/s for 0.75 s
    assert run(det, [*burst, window(1.0, 0, [], 0), window(1.25, 0, [], 0)]) == []
    held = [window(5 + i * 0.25, 100, [("198.51.100.9", 100)], 1) for i in range(5)]
    assert run(det, held) == ["incident.opened:bot_flood"]


@pytest.mark.parametrize(("kw", "subtype"), [
    ({"status": {"4xx": 900, "2xx": 100}}, "error_flood"),
    ({"with_query": 1000, "agent": ""}, "cache_bypass"),
    ({"path": "/wp-login.php"}, "login_flood"),
    ({"path": "/search"}, "path_flood"),
    ({"method": "POST"}, "post_flood"),
])
def test_subtypes(kw: dict[str, object], subtype: str) -> None:
    det = HttpDetector(HttpDetectSettings())
    w = window(0, 1000, [("198.51.100.9", 1000)], 1, **kw)  # type: ignore[arg-type]
    w2 = WebWindow(**{**w.to_dict(), "top_agents": [[f"ua{i}", 100] for i in range(10)]})
    assert det.step(w2)[0].attack_subtype == subtype


def test_mitigation_proposals_pass_the_executor_validator() -> None:
    det = HttpDetector(HttpDetectSettings())
    ev = det.step(window(0, 2000, [("198.51.100.9", 1500), ("2001:db8::7", 500)], 2))[0]
    cmds = ev.extra["mitigation"]
    assert len(cmds) == 4  # two blocks, a per-source hashlimit per web port
    s = ExecutorSettings()
    facts = HostFacts(listening=frozenset({("tcp", 80), ("tcp", 443)}))
    for cmd in cmds:
        try:
            validate_command(cmd, s, facts)
        except CommandRejected as e:
            raise AssertionError(f"{cmd}: {e}") from e


def test_config_sources_are_validated() -> None:
    ok = config_from_dict({"weblog": {"enabled": True, "source": [{"path": "/var/log/nginx/access.log"}]}})
    assert ok.weblog.source[0].format == "nginx"
    for bad in ({"enabled": True}, {"source": [{"path": "rel.log"}]}, {"source": [{"path": "/a", "format": "iis"}]},
                {"source": [{"path": "/a", "format": "json", "fields": {"client": "ip"}}]}):
        with pytest.raises(ConfigError):
            config_from_dict({"weblog": bad})
