"""Dissecting a stored capture on the server, on an operator's request: the recorder's own job
(`floodwatch.recorder.jobs.DissectJob`: a child process, tshark fed on stdin and run as an unprivileged
user, killed at its deadline), one at a time, a bounded queue. The findings are kept beside the capture
(`<capture>.findings.json`, 0600), so a replaced capture has none until dissected again."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from floodwatch.recorder.jobs import DissectJob, DissectQueue, JobSpec

MAX_FINDINGS_BYTES = 2 * 1024 * 1024
MAX_ERRORS = 1000


class Dissections:
    def __init__(self, pcap_dir: Path, tshark: str = "tshark", timeout: float = 120.0, memory_mb: int = 2048,
                 user: str = "nobody", limit: int = 8) -> None:
        self.pcap_dir = pcap_dir
        self.make = lambda spec: DissectJob(spec, tshark, timeout, memory_mb, 0o600, user=user)
        self.queue = DissectQueue(self.make, limit)
        self.pending: set[str] = set()
        self.errors: OrderedDict[str, str] = OrderedDict()
        self._submitted = asyncio.Event()  # wakes run() from its idle wait

    def findings_path(self, file_name: str) -> Path:
        return self.pcap_dir / f"{file_name}.findings.json"  # file_name: chosen by the server

    def state(self, file_name: str) -> tuple[str, Any]:
        """('done', findings) | ('running', None) | ('failed', error) | ('none', None)."""
        path = self.findings_path(file_name)
        if file_name in self.pending:
            return "running", None
        try:
            if path.stat().st_size <= MAX_FINDINGS_BYTES:
                return "done", json.loads(path.read_text())
        except (OSError, ValueError):
            pass
        if file_name in self.errors:
            return "failed", self.errors[file_name]
        return "none", None

    def submit(self, incident_id: int, file_name: str, subtype: str = "") -> None:
        if file_name in self.pending:
            return
        self.pending.add(file_name)
        self.errors.pop(file_name, None)
        self.queue.submit(JobSpec(str(incident_id), str(self.pcap_dir / file_name),
                                  str(self.findings_path(file_name)), attack_subtype=subtype))
        self.pending &= {Path(s.pcap).name for s in self.queue.waiting} | self._running()
        self._submitted.set()

    def _running(self) -> set[str]:
        job = self.queue.running
        return {Path(job.spec.pcap).name} if job is not None else set()

    def poll(self) -> None:
        for res in self.queue.poll():
            name = Path(res.spec.pcap).name
            self.pending.discard(name)
            if not res.ok:
                self.errors[name] = res.error or "dissection failed"
                while len(self.errors) > MAX_ERRORS:
                    self.errors.popitem(last=False)
        self.pending &= {Path(s.pcap).name for s in self.queue.waiting} | self._running()

    async def run(self) -> None:
        """Follow the jobs every half second while there are some; with none, sleep until a submit."""
        while True:
            if not self.pending and self.queue.running is None and not self.queue.waiting:
                self._submitted.clear()
                await self._submitted.wait()
            await asyncio.sleep(0.5)
            self.poll()

    def stop(self) -> None:
        self.queue.stop()
