"""The real Prometheus server (Debian's `prometheus`) for the tests: a temporary config and data dir,
a short scrape interval, queries through its own HTTP API. Optionally inside a network namespace
(`wrap`), where the test reaches its API through a small client run in that namespace."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PYTHON, eventually, stop_process

TARGET_LABELS = ("__name__", "instance", "job")
_CLIENT = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def require_prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("Debian's prometheus is not installed (scripts/setup.sh --dev installs it)")
    return path


@dataclass
class Target:
    job: str
    address: str  # HOST:PORT
    token_file: str = ""


@dataclass
class Prometheus:
    targets: Sequence[Target]
    port: int
    wrap: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NS]
    proc: subprocess.Popen[bytes] | None = None
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fwprom-")))

    def config(self) -> dict[str, Any]:
        jobs = []
        for t in self.targets:
            job: dict[str, Any] = {"job_name": t.job, "static_configs": [{"targets": [t.address]}]}
            if t.token_file:
                job["authorization"] = {"type": "Bearer", "credentials_file": t.token_file}
            jobs.append(job)
        return {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs}

    def start(self) -> Prometheus:
        binary = require_prometheus()
        cfg = self.tmp / "prometheus.yml"
        cfg.write_text(json.dumps(self.config()))  # JSON is YAML
        log = open(self.tmp / "prometheus.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*self.wrap, binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        eventually(self._ready, 30, interval=0.2, message="prometheus ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"prometheus exited: {self.log()}"
        try:
            return self._get("/-/ready").startswith("Prometheus")
        except (OSError, subprocess.CalledProcessError):
            return False

    def _get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.port}{path}"
        if not self.wrap:
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode())
        out = subprocess.run([*self.wrap, PYTHON, "-c", _CLIENT, url], capture_output=True, text=True,
                             timeout=30, check=True)
        return out.stdout

    def api(self, path: str, **params: str) -> Any:
        reply = json.loads(self._get(f"/api/v1/{path}?{urllib.parse.urlencode(params)}"))
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> dict[str, float]:
        """An instant query -> {its labels as k=v,... (without job and instance): value}."""
        out = {}
        for item in self.api("query", query=expr)["result"]:
            labels = ",".join(f"{k}={v}" for k, v in sorted(item["metric"].items()) if k not in TARGET_LABELS)
            out[labels] = float(item["value"][1])
        return out

    def value(self, expr: str) -> float | None:
        """The single value of a query (None when it has no result)."""
        found = self.query(expr)
        assert len(found) <= 1, found
        return next(iter(found.values()), None)

    def metric_type(self, name: str) -> str:
        meta = self.api("metadata", metric=name).get(name) or [{}]
        return str(meta[0].get("type", ""))

    def log(self) -> str:
        p = self.tmp / "prometheus.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 15)
        shutil.rmtree(self.tmp, ignore_errors=True)
