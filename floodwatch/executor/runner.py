"""Run one argv: no shell, a clean environment, a timeout, and a cap on the output kept."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import IO

# Programs are looked up here only, never in the caller's PATH.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RunResult:
    returncode: int  # -1 when it could not start or timed out
    output: str  # stdout then stderr, cut to the size limit
    error: str  # "" on success, else why it failed (exit code, timeout, not found)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.error


class Runner:
    """Runs argv lists; `prefix` (e.g. ["ip", "netns", "exec", NS]) is a test/container feature."""

    def __init__(self, timeout: float, max_output: int, prefix: list[str] | None = None) -> None:
        self.timeout = timeout
        self.max_output = max_output
        self.prefix = list(prefix or [])

    def resolve(self, argv: list[str]) -> list[str]:
        """The full argv: prefix + absolute program path + arguments."""
        full = [*self.prefix, *argv]
        program = shutil.which(full[0], path=SAFE_PATH)
        if program is None:
            raise FileNotFoundError(f"{full[0]} not found in {SAFE_PATH}")
        return [program, *full[1:]]

    def run(self, argv: list[str]) -> RunResult:
        try:
            full = self.resolve(argv)
        except FileNotFoundError as e:
            return RunResult(-1, "", str(e))
        env = {"PATH": SAFE_PATH, "LC_ALL": "C"}
        # Output goes to an unnamed temporary file, so a chatty program cannot fill our memory;
        # we read back at most max_output bytes.
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, close_fds=True, start_new_session=True, cwd="/")
            except OSError as e:
                return RunResult(-1, "", f"cannot start {full[0]}: {e.strerror or e}")
            try:
                rc = proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return RunResult(-1, _read(out, self.max_output), f"timed out after {self.timeout:g} s")
            text = _read(out, self.max_output)
        if rc != 0:
            last = text.strip().splitlines()[-1:] or [""]
            return RunResult(rc, text, f"exit status {rc}: {last[0][:300]}")
        return RunResult(0, text, "")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait(5)


def _read(handle: IO[bytes], limit: int) -> str:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    data = handle.read(limit)
    text = data.decode("utf-8", "replace")
    if size > limit:
        text += f"\n[output cut: {size} bytes, kept {limit}]"
    return text
