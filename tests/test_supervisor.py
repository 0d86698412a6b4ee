"""The supervisor as users meet it: real processes, real sockets, real signals."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from floodwatch import messages
from floodwatch.cli import query_status
from floodwatch.config import load_config
from floodwatch.messages import StreamEnded, TrafficWindow
from tests.helpers import (
    base_config,
    eventually,
    pid_alive,
    start_supervisor,
    status,
    stop_process,
    tcp_endpoints,
    try_status,
    write_config,
)

pytestmark = pytest.mark.slow


class Sys:
    """A supervisor process running dummy actors, with its config and log."""

    def __init__(self, tmp: Path, actors: list[str], critical: list[str] | None = None,
                 env: dict[str, str] | None = None, **supervisor: Any) -> None:
        self.tmp = tmp
        self.endpoints = tcp_endpoints()
        self.state = tmp / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        sup = {"actors": actors, "modules": {a: "tests.dummy_actor" for a in actors},
               "critical": critical or []}
        sup.update(supervisor)
        self.cfg = base_config(tmp, self.endpoints, supervisor=sup)
        self.config = write_config(tmp / "floodwatch.toml", self.cfg)
        self.log = tmp / "supervisor.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def mode(self, actor: str, mode: str) -> None:
        (self.state / f"{actor}.mode").write_text(mode)

    def start(self) -> Sys:
        self.proc = start_supervisor(self.config, self.log, self.env)
        return self

    def status(self) -> dict[str, Any]:
        return try_status(self.config)

    def running(self, *names: str) -> dict[str, Any]:
        st = self.status()
        return st if st and all(st.get(n, {}).get("state") == "running" for n in names) else {}

    def logtext(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def make_sys(tmp_path: Path) -> Iterator[Any]:
    made: list[Sys] = []

    def make(actors: list[str], **kw: Any) -> Sys:
        s = Sys(tmp_path / f"s{len(made)}", actors, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        if s.proc is not None:
            stop_process(s.proc, 20)


def test_kill_9_of_an_actor_is_restarted_within_a_second(make_sys: Any) -> None:
    s = make_sys(["d1", "d2"]).start()
    st = eventually(lambda: s.running("d1", "d2"), 20)
    old = st["d1"]["pid"]
    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()
    new = eventually(lambda: (p := s.status().get("d1", {}).get("pid")) and p != old and p, 1.0)
    assert time.monotonic() - killed_at < 1.0
    assert pid_alive(new)
    st = eventually(lambda: s.running("d1"), 10)
    assert st["d1"]["restarts"] == 1
    assert st["d2"]["restarts"] == 0 and st["d2"]["pid"] != old


def _supervisor(s: Sys) -> dict[str, Any]:
    return query_status(load_config(s.config)).supervisor


def _children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (zombies included: a child not waited for shows here)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == str(pid):
                out.add(int(entry))
    return out


def _forked(pid: int) -> bool:
    """A fork of the supervisor's image (its command line), not a plain `python -m` process."""
    return b"tests.dummy_actor" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_the_zygote_retires_once_every_actor_runs_and_a_crashed_actor_comes_from_a_new_one(make_sys: Any) -> None:
    """The zygote exits once every actor has started (its pages are then the supervisor's and the
    actors' copies, not a tenth process). An actor that crashes later is forked from a new zygote,
    forked from the supervisor then: a fork (not a plain process), named, with the supervisor's config;
    and that zygote retires again, leaving no process or zombie behind."""
    s = make_sys(["d1", "d2"])
    s.cfg["log"] = {"level": "DEBUG"}
    write_config(s.config, s.cfg)
    s.start()
    st = eventually(lambda: s.running("d1", "d2"), 20)
    assert s.proc is not None
    eventually(lambda: _supervisor(s)["zygote"] == "retired", 10, message="the zygote retired")
    assert _supervisor(s)["zygote_pid"] is None
    old, d2 = st["d1"]["pid"], st["d2"]["pid"]
    assert _children_of(s.proc.pid) == {old, d2}  # the zygote is gone, and waited for
    os.kill(old, signal.SIGKILL)
    st = eventually(lambda: (x := s.running("d1", "d2")) and x["d1"]["pid"] not in (None, old) and x, 20)
    new = st["d1"]["pid"]
    assert _forked(new) and Path(f"/proc/{new}/comm").read_text().strip() == "fw-d1"
    assert st["d1"]["restarts"] == 1 and st["d2"]["pid"] == d2
    assert _config_lines(s, "d1") == ["the supervisor's copy"] * 2
    eventually(lambda: _supervisor(s)["zygote"] == "retired" and _children_of(s.proc.pid) == {new, d2}, 10,
               message="the new zygote retired too")
    assert "zygote failed" not in s.logtext()


def _crash_looping(make_sys: Any) -> Sys:
    """d1 and d2 run; d3 crashes at start-up again and again (so a zygote is kept for its restarts)."""
    s = make_sys(["d1", "d2", "d3"], backoff_initial=0.3, backoff_factor=1.0, flap_max_restarts=1000)
    s.mode("d3", "crash")
    s.start()
    eventually(lambda: s.running("d1", "d2"), 20)
    return s


def test_actors_start_as_plain_processes_when_the_zygote_is_gone(make_sys: Any) -> None:
    """The fork server dies: the next (re)start falls back to a plain `python -m` process, which works
    as well, and the supervisor says so; it does not try the zygote again."""
    s = _crash_looping(make_sys)
    zygote = eventually(lambda: _supervisor(s)["zygote_pid"], 10)
    assert pid_alive(zygote)
    os.kill(zygote, signal.SIGKILL)
    eventually(lambda: not pid_alive(zygote), 10, message="the zygote is gone")
    st = s.status()
    old, d2 = st["d1"]["pid"], st["d2"]["pid"]
    os.kill(old, signal.SIGKILL)
    st = eventually(lambda: (x := s.running("d1", "d2")) and x["d1"]["pid"] not in (None, old) and x, 20)
    new = st["d1"]["pid"]
    assert not _forked(new)  # a plain process, not a fork of the zygote
    assert st["d1"]["restarts"] == 1 and st["d2"]["pid"] == d2
    assert _supervisor(s)["zygote_pid"] is None and _supervisor(s)["zygote"] == "failed"
    assert "zygote failed" in s.logtext()
    os.kill(new, signal.SIGKILL)  # and the next restart is a plain process again
    st = eventually(lambda: (x := s.running("d1")) and x["d1"]["pid"] not in (None, old, new) and x, 20)
    assert not _forked(st["d1"]["pid"])


def test_forked_actors_and_the_zygote_are_named(make_sys: Any) -> None:
    """Actors forked from the zygote (itself a child of the supervisor) show as fw-<actor> in ps/top, and
    the zygote as fw-zygote: a fork keeps its parent's command line, so the name is what tells them apart."""
    s = _crash_looping(make_sys)
    st = s.status()
    zygote = eventually(lambda: _supervisor(s)["zygote_pid"], 10)
    assert Path(f"/proc/{zygote}/comm").read_text().strip() == "fw-zygote"
    assert [Path(f"/proc/{st[n]['pid']}/comm").read_text().strip() for n in ("d1", "d2")] == ["fw-d1", "fw-d2"]
    assert s.proc is not None
    assert Path(f"/proc/{zygote}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(s.proc.pid)


def test_supervisor_stays_small_and_reads_aligned_heartbeats_together(make_sys: Any) -> None:
    """The supervisor runs all the time: it loads only what its actors import (it preloads their modules
    and forks the zygote from that image), so with actors that need no numpy, SQLite or aiohttp it has
    none of them; and the actors' heartbeats keep to a shared phase, so they arrive together."""
    s = make_sys(["d1", "d2", "d3"], heartbeat_interval=0.5, heartbeat_timeout=5.0).start()
    eventually(lambda: s.running("d1", "d2", "d3"), 20)
    assert s.proc is not None
    maps = Path(f"/proc/{s.proc.pid}/maps").read_text()
    for lib in ("_multiarray_umath", "_sqlite3", "aiohttp"):
        assert lib not in maps, f"the supervisor loaded {lib}"

    def ages() -> list[float] | None:
        st = s.status()
        got = [st.get(n, {}).get("last_heartbeat") for n in ("d1", "d2", "d3")]
        return got if all(isinstance(a, float) for a in got) else None

    def spread() -> float:
        got = eventually(ages, 5)
        return max(got) - min(got)

    eventually(lambda: spread() < 0.05, 5)  # from the first beat on the shared phase (the first is at start)
    spreads = []
    deadline = time.monotonic() + 1.6  # more than three heartbeat periods
    while time.monotonic() < deadline:
        spreads.append(spread())
    # the beats of one period arrive a scheduling delay apart (a look can fall between two of them)
    apart = [x for x in spreads if x > 0.1]
    assert len(spreads) >= 10 and len(apart) <= len(spreads) // 10, spreads


def test_crash_loop_backs_off_then_non_critical_actor_stays_down(make_sys: Any) -> None:
    s = make_sys(["d1", "d2"], backoff_initial=0.05, backoff_factor=2.0, flap_max_restarts=4, flap_window=60.0)
    s.mode("d1", "crash")
    s.start()
    st = eventually(lambda: s.status().get("d1", {}).get("state") == "failed" and s.status(), 30)
    assert st["d1"]["restarts"] == 4
    assert st["d1"]["pid"] is None
    assert st["d2"]["state"] == "running"  # the rest of the agent keeps going
    assert s.proc is not None and s.proc.poll() is None
    delays = [float(x) for x in re.findall(r"d1 exited with 1; restart in ([0-9.]+) s", s.logtext())]
    assert delays == sorted(delays) and delays[-1] >= 4 * delays[0], delays
    assert "d1 exited with 1; giving up" in s.logtext()


def test_critical_actor_flapping_makes_the_supervisor_exit_nonzero(make_sys: Any) -> None:
    s = make_sys(["d1", "d2"], critical=["d1"], backoff_initial=0.05, flap_max_restarts=2)
    s.mode("d1", "crash")
    s.start()
    eventually(lambda: s.running("d2"), 20)
    d2 = s.status()["d2"]["pid"]
    assert s.proc is not None
    assert s.proc.wait(30) == 1  # systemd's Restart=on-failure takes it from here
    eventually(lambda: not pid_alive(d2), 5, message="no orphan left behind")


def test_hung_actor_is_killed_and_restarted(make_sys: Any) -> None:
    s = make_sys(["d1"], heartbeat_timeout=1.0, stop_timeout=1.0)
    s.start()
    old = eventually(lambda: s.running("d1"), 20)["d1"]["pid"]
    s.mode("d1", "hang")  # it stops heartbeating and ignores SIGTERM
    eventually(lambda: not pid_alive(old), 15, message="hung actor killed")
    s.mode("d1", "ok")
    st = eventually(lambda: s.running("d1"), 15)
    assert st["d1"]["pid"] != old and st["d1"]["restarts"] == 1
    assert "no heartbeat" in s.logtext() and "SIGKILL" in s.logtext()


def test_sigterm_stops_every_actor_and_leaves_no_process(make_sys: Any) -> None:
    s = make_sys(["d1", "d2", "d3"], stop_timeout=3.0)
    s.start()
    pids = [a["pid"] for a in eventually(lambda: s.running("d1", "d2", "d3"), 20).values()]
    assert s.proc is not None
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    assert not [p for p in pids if pid_alive(p)]
    stops = re.findall(r"supervisor stopped (d\d)", s.logtext())
    assert stops == ["d3", "d2", "d1"]  # reverse start order


def test_supervisor_killed_hard_takes_its_actors_with_it(make_sys: Any) -> None:
    s = make_sys(["d1", "d2"])
    s.start()
    pids = [a["pid"] for a in eventually(lambda: s.running("d1", "d2"), 20).values()]
    assert s.proc is not None
    s.proc.kill()
    s.proc.wait(5)
    eventually(lambda: not [p for p in pids if pid_alive(p)], 10, message="actors gone with the supervisor")


def test_sighup_restarts_only_the_actor_whose_section_changed(make_sys: Any) -> None:
    from floodwatch.settings.executor import ExecutorSettings

    s = make_sys(["executor", "detector"])
    s.start()
    before = eventually(lambda: s.running("executor", "detector"), 20)
    # flip one setting of [executor] (whatever its first non-`enabled` scalar field is)
    field = next(f for f in dataclasses.fields(ExecutorSettings) if f.name != "enabled"
                 and isinstance(f.default, bool | int | float | str) and not isinstance(f.default, list))
    default: Any = field.default
    new_value: Any = (not default) if isinstance(default, bool) else (
        default + 1 if isinstance(default, int | float) else default + "-changed")
    s.cfg.setdefault("executor", {})[field.name] = new_value
    write_config(s.config, s.cfg)
    assert s.proc is not None
    s.proc.send_signal(signal.SIGHUP)
    after = eventually(lambda: (st := s.running("executor", "detector")) and
                       st["executor"]["pid"] != before["executor"]["pid"] and st, 20)
    assert after["executor"]["restarts"] == 1
    assert after["detector"]["pid"] == before["detector"]["pid"]
    assert after["detector"]["restarts"] == 0


def _config_lines(s: Any, actor: str) -> list[str]:
    return re.findall(rf" {actor} config \S+: (the supervisor's copy|loaded from the file)", s.logtext())


def test_forked_actors_use_the_supervisors_config_and_a_changed_file_is_read_again(make_sys: Any) -> None:
    """Actors forked from the zygote run with the Config the supervisor loaded before the fork (shared
    pages, no second parse). An actor restarted after the file changed (no reload yet) reads the file
    as it is now, as it always did; after SIGHUP the actors restarted for the change read it too."""
    s = make_sys(["d1", "d2", "executor"])
    s.cfg["log"] = {"level": "DEBUG"}
    write_config(s.config, s.cfg)
    s.start()
    st = eventually(lambda: s.running("d1", "d2", "executor"), 20)
    for name in ("d1", "d2", "executor"):
        assert _config_lines(s, name) == ["the supervisor's copy"]
    os.kill(st["d1"]["pid"], signal.SIGKILL)  # a restart with the file unchanged: still the shared copy
    eventually(lambda: _config_lines(s, "d1") == ["the supervisor's copy"] * 2, 20)
    s.cfg["supervisor"]["heartbeat_timeout"] = 14.0
    write_config(s.config, s.cfg)  # changed on disk, not reloaded
    st = eventually(lambda: s.running("d1", "d2", "executor"), 20)
    os.kill(st["d2"]["pid"], signal.SIGKILL)
    eventually(lambda: _config_lines(s, "d2") == ["the supervisor's copy", "loaded from the file"], 20)
    s.cfg.setdefault("executor", {})["dry_run"] = True
    write_config(s.config, s.cfg)
    assert s.proc is not None
    s.proc.send_signal(signal.SIGHUP)  # the executor's section changed: it is restarted, reads the file
    eventually(lambda: _config_lines(s, "executor") == ["the supervisor's copy", "loaded from the file"], 20)
    assert _config_lines(s, "d1") == ["the supervisor's copy"] * 2


def test_systemd_notify_ready_then_watchdog(make_sys: Any, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    try:
        s = make_sys(["d1", "d2"], env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
        s.start()
        got: list[str] = []
        while sum("WATCHDOG=1" in g for g in got) < 2:
            got.append(sock.recv(4096).decode())
        ready = next(i for i, g in enumerate(got) if "READY=1" in g.splitlines())
        first_wd = next(i for i, g in enumerate(got) if "WATCHDOG=1" in g)
        assert ready < first_wd
        assert any(line.startswith("STATUS=") for g in got for line in g.splitlines())
    finally:
        sock.close()


def _garbage() -> list[bytes]:
    rnd = os.urandom
    return [
        rnd(1),
        rnd(300),
        msgpack.packb([99, "traffic.window", {}]),  # wrong version
        msgpack.packb([messages.SCHEMA_VERSION, "no.such.type", {}]),  # unknown type
        msgpack.packb([messages.SCHEMA_VERSION, "traffic.window", {"t_start": "x"}]),  # wrong fields
        msgpack.packb([messages.SCHEMA_VERSION, "stream.ended", {"source": 1, "packets": "x", "ts": 0.0,
                                                                "error": ""}]),  # wrong types
        messages.encode(StreamEnded("x", 1, 0.0))[:-3],  # truncated
    ]


def _window() -> TrafficWindow:
    return TrafficWindow(
        t_start=0.0, t_end=0.1, exact=False, sample_rate=1.0, packets_in=1, bytes_in=60, packets_out=0,
        bytes_out=0, sampled=1, proto_in={"udp": 1}, proto_out={}, ipver_in={"4": 1}, tcp_flags={},
        fragments={}, size_hist={}, ttl_hist={64: 1}, src_distinct=1, src_hll=b"", top_src_ips=[],
        top_dst_ips=[], top_src_ports=[], top_dst_ports=[], victims=[], signatures={}, bidir_packets=0,
        malformed=0, kernel_drops=0, conn_count=0,
    )


def test_garbage_on_every_bus_socket_is_counted_and_dropped(make_sys: Any) -> None:
    s = make_sys(["d1", "d2"])
    s.mode("d1", "pull")
    s.start()
    eventually(lambda: s.running("d1", "d2"), 20)
    ep = s.endpoints
    ctx = zmq.Context()
    pub, push, dealer = ctx.socket(zmq.PUB), ctx.socket(zmq.PUSH), ctx.socket(zmq.DEALER)
    for sock in (pub, push, dealer):
        sock.setsockopt(zmq.LINGER, 0)
    pub.connect(ep.events_in)
    push.connect(ep.packets)
    dealer.connect(ep.control)
    try:
        good = messages.frames(_window())
        # events: make sure the path is up, then garbage, then one more good message
        eventually(lambda: pub.send_multipart(good) or s.status()["d1"]["counters"].get("windows", 0) > 0, 10)
        before = s.status()
        junk = _garbage()
        for g in junk:
            pub.send_multipart([b"traffic.window", g])
        pub.send_multipart([b"traffic.window"])  # one frame, no body
        pub.send_multipart(good)
        want = before["d1"]["counters"]["bad_messages"] + len(junk) + 1
        st = eventually(lambda: (x := s.status()) and x["d1"]["counters"]["bad_messages"] >= want and
                        x["d2"]["counters"]["bad_messages"] >= want and x, 10)
        assert st["d1"]["counters"]["windows"] > before["d1"]["counters"]["windows"]
        # bulk channel: garbage, a frame over the size limit, then a valid message still gets through
        for g in junk:
            push.send(g)
        push.send(b"\x00" * (messages.MAX_MESSAGE_BYTES + 1))
        push2 = ctx.socket(zmq.PUSH)
        push2.setsockopt(zmq.LINGER, 0)
        push2.connect(ep.packets)
        push2.send(messages.encode(StreamEnded("test", 0, 0.0)))
        st = eventually(lambda: (x := s.status()) and x["d1"]["counters"].get("bulk", 0) >= 1 and x, 10)
        assert st["d1"]["counters"]["bad_messages"] >= want + len(junk)
        push2.close(0)
        # control socket: junk frames are read and counted; the supervisor keeps answering
        bad_before = query_status(load_config(s.config)).supervisor["bad_control_messages"]
        dealer.send(os.urandom(64))
        dealer.send_multipart([b"a", b"b", b"c"])
        dealer.send(msgpack.packb([messages.SCHEMA_VERSION, "actor.heartbeat", {"x": 1}]))
        eventually(lambda: query_status(load_config(s.config)).supervisor["bad_control_messages"]
                   == bad_before + 3, 10, message="the supervisor read and counted the three bad frames")
        st = status(s.config)
        assert st["d1"]["restarts"] == 0 and st["d2"]["restarts"] == 0
        assert st["d1"]["state"] == st["d2"]["state"] == "running"
    finally:
        for sock in (pub, push, dealer):
            sock.close(0)
        ctx.term()


def test_standalone_actor_without_supervisor_exits_with_a_clear_message(tmp_path: Path) -> None:
    cfg = base_config(tmp_path, tcp_endpoints(), supervisor={"hello_timeout": 0.5})
    path = write_config(tmp_path / "c.toml", cfg)
    out = subprocess.run(["python", "-m", "tests.dummy_actor", "--config", str(path)], capture_output=True,
                         text=True, timeout=30, cwd=Path(__file__).resolve().parent.parent,
                         env=dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"]))
    assert out.returncode == 2
    assert "no supervisor answered" in out.stderr and "floodwatch run" in out.stderr
