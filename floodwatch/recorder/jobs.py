"""Dissection jobs: the child process (`python -m floodwatch.recorder.dissect`) seen from the actor.

`DissectJob.start()` writes the job (incident subtype, IOC patterns) to a private temporary file and
starts the child in its own session (so it and its tshark form one process group); `poll()` never
blocks: it returns None while the child runs, and a `JobResult` once it exited, failed or was killed
at its deadline. `DissectQueue` runs one job at a time and keeps at most `limit` waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import floodwatch

_PKG_ROOT = str(Path(floodwatch.__file__).resolve().parent.parent)
STDERR_TAIL = 2000


@dataclass(frozen=True)
class JobSpec:
    incident_key: str
    pcap: str
    out: str  # the findings JSON
    attack_subtype: str = ""
    ioc_patterns: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class JobResult:
    spec: JobSpec
    ok: bool
    findings: dict[str, Any] | None
    error: str  # why it failed ("" when ok)
    timed_out: bool
    elapsed: float


class DissectJob:
    def __init__(self, spec: JobSpec, tshark: str, timeout: float, memory_mb: int = 0, mode: int = 0o640,
                 min_packets: int = 10, min_share: float = 0.2, user: str = "nobody",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.tshark = tshark
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.mode = mode
        self.user = user
        self.thresholds = {"min_packets": min_packets, "min_share": min_share}
        self.clock = clock
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._job_file = ""
        self._err: IO[bytes] | None = None

    def start(self) -> None:
        fd, self._job_file = tempfile.mkstemp(prefix="floodwatch-dissect-", suffix=".json")  # 0600
        with os.fdopen(fd, "w") as f:
            json.dump({"attack_subtype": self.spec.attack_subtype, "ioc_patterns": self.spec.ioc_patterns,
                       **self.thresholds}, f)
        argv = [sys.executable, "-m", "floodwatch.recorder.dissect", self.spec.pcap, "--out", self.spec.out,
                "--tshark", self.tshark, "--job", self._job_file, "--memory-mb", str(self.memory_mb),
                "--mode", oct(self.mode)[2:], "--user", self.user]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (_PKG_ROOT, os.environ.get("PYTHONPATH")) if p))
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _cleanup
        self.started = self.clock()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self._err, start_new_session=True, env=env)
        except OSError:
            self._cleanup()
            raise

    def poll(self) -> JobResult | None:
        assert self.proc is not None, "poll before start"
        code = self.proc.poll()
        elapsed = self.clock() - self.started
        if code is None:
            if elapsed <= self.timeout:
                return None
            self.kill()
            self._cleanup()
            return JobResult(self.spec, False, None, f"dissection cut off after {self.timeout:g} s", True, elapsed)
        self.kill()  # whatever the child left in its group (a tshark that outlived it)
        err = self._stderr_tail()
        self._cleanup()
        if code != 0:
            return JobResult(self.spec, False, None, err or f"dissection exited with {code}", False, elapsed)
        try:
            findings = json.loads(Path(self.spec.out).read_text())
        except (OSError, ValueError) as e:
            return JobResult(self.spec, False, None, f"findings unreadable: {e}", False, elapsed)
        return JobResult(self.spec, True, findings, "", False, elapsed)

    def kill(self) -> None:
        """SIGKILL the job's process group (the child we started and its tshark)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def _stderr_tail(self) -> str:
        if self._err is None:
            return ""
        self._err.seek(0, os.SEEK_END)
        size = self._err.tell()
        self._err.seek(max(0, size - STDERR_TAIL))
        lines = self._err.read().decode("utf-8", "replace").strip().splitlines()
        return " ".join(line for line in lines if "Running as user" not in line and "dangerous" not in line)[-500:]

    def _cleanup(self) -> None:
        if self._job_file:
            with contextlib.suppress(OSError):
                os.unlink(self._job_file)
            self._job_file = ""
        if self._err is not None:
            self._err.close()
            self._err = None


class DissectQueue:
    """One job at a time, at most `limit` waiting (the oldest waiting one is dropped past it)."""

    def __init__(self, factory: Callable[[JobSpec], DissectJob], limit: int) -> None:
        self.factory = factory
        self.limit = limit
        self.waiting: deque[JobSpec] = deque()
        self.running: DissectJob | None = None
        self.dropped = 0

    def submit(self, spec: JobSpec) -> None:
        self.waiting.append(spec)
        while len(self.waiting) > self.limit:
            self.waiting.popleft()
            self.dropped += 1

    def poll(self) -> list[JobResult]:
        """Finished results (at most one), and start the next job when idle."""
        out: list[JobResult] = []
        if self.running is not None:
            res = self.running.poll()
            if res is None:
                return out
            out.append(res)
            self.running = None
        while self.waiting and self.running is None:
            spec = self.waiting.popleft()
            job = self.factory(spec)
            try:
                job.start()
            except OSError as e:
                out.append(JobResult(spec, False, None, f"cannot start the dissection: {e}", False, 0.0))
                continue
            self.running = job
        return out

    def stop(self) -> None:
        if self.running is not None:
            self.running.kill()
            self.running._cleanup()
            self.running = None
        self.waiting.clear()
