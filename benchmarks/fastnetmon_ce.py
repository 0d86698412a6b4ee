"""FastNetMon CE (Debian's `fastnetmon`) as a baseline for benchmarks/collector_decode.py.

It runs as a real process with its NetFlow (v5/v9/IPFIX) and sFlow collectors on loopback ports of its
own, a throwaway config (bans, API, usage reports off; its Prometheus endpoint on loopback is how we
read what it decoded), and is fed the same datagrams over loopback UDP. CPU is its utime+stime from
/proc/<pid>/stat for the stream, minus its idle CPU over the same wall time; records are its own count
(`fastnetmon_total_simple_packets_processed`: one per flow record or sFlow sample). Datagrams are sent
in small bursts, each after the socket's queue is empty (/proc/net/udp), so none is dropped.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.capture_live import cpu_of

BURST = 32
CONF = """logging_level = info
logging_local_syslog_logging = off
logging_remote_syslog_logging = off
disable_usage_report = on
enable_ban = off
enable_ban_ipv6 = off
process_incoming_traffic = on
process_outgoing_traffic = on
networks_list_path = {d}/networks
white_list_path = {d}/whitelist
check_period = 1
enable_connection_tracking = off
threshold_pps = 1000000000
threshold_mbps = 1000000
mirror_afpacket = off
pcap = off
netflow = on
sflow = on
netflow_port = {netflow}
netflow_host = 127.0.0.1
netflow_sampling_ratio = 1
sflow_port = {sflow}
sflow_host = 127.0.0.1
notify_script_path = /nonexistent
monitor_local_ip_addresses = off
pid_path = {d}/fastnetmon.pid
cli_stats_file_path = {d}/fastnetmon.dat
cli_stats_ipv6_file_path = {d}/fastnetmon_ipv6.dat
enable_api = off
prometheus = on
prometheus_port = {prom}
prometheus_host = 127.0.0.1
"""


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FastNetMon:
    def __init__(self, networks: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="fw-fnm-")
        d = Path(self.dir.name)
        (d / "networks").write_text(networks + "\n")
        (d / "whitelist").write_text("")
        self.ports = {"flow": free_port(socket.SOCK_DGRAM), "sflow": free_port(socket.SOCK_DGRAM)}
        self.prom = free_port(socket.SOCK_STREAM)
        (d / "fastnetmon.conf").write_text(CONF.format(d=d, netflow=self.ports["flow"], sflow=self.ports["sflow"],
                                                       prom=self.prom))
        self.proc = subprocess.Popen(["fastnetmon", "--configuration_file", str(d / "fastnetmon.conf"),
                                      "--log_file", str(d / "fastnetmon.log"), "--disable_pid_logic"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.processed()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError(f"fastnetmon did not start (see {d / 'fastnetmon.log'})") from None
                time.sleep(0.2)

    def processed(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.prom}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("fastnetmon_total_simple_packets_processed "):
                    return int(float(line.split()[1]))
        raise OSError("no fastnetmon_total_simple_packets_processed")

    def _queue_empty(self, port: int) -> bool:
        hexport = f":{port:04X}"
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].endswith(hexport):
                    return int(cols[4].split(":")[1], 16) == 0
        return True

    def run(self, proto: str, data: list[bytes]) -> tuple[float, int]:
        """(CPU seconds net of idle, records decoded) for one pass over the datagrams."""
        port = self.ports["sflow" if proto == "sflow" else "flow"]
        c0, w0 = cpu_of(self.proc.pid), time.monotonic()
        time.sleep(1.0)
        idle = (cpu_of(self.proc.pid) - c0) / (time.monotonic() - w0)
        before = self.processed()
        c0, w0 = cpu_of(self.proc.pid), time.monotonic()
        for i in range(0, len(data), BURST):
            while not self._queue_empty(port):
                time.sleep(0.0005)
            for d in data[i : i + BURST]:
                self.sock.sendto(d, ("127.0.0.1", port))
        while not self._queue_empty(port):
            time.sleep(0.001)
        cpu, wall = cpu_of(self.proc.pid) - c0, time.monotonic() - w0
        return max(cpu - idle * wall, 1e-6), self.processed() - before

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.dir.cleanup()
