"""A test actor whose behaviour a test controls through a file: python -m tests.dummy_actor --config F.

The actor's name comes from $FLOODWATCH_ACTOR (set by the supervisor). The file
<state_dir>/<name>.mode holds one word: "ok" (default), "crash" (exit 1 at start-up), "hang" (stop
heartbeating and ignore SIGTERM, as a wedged process would) or "pull" (ok, and also bind a PULL on the
packets endpoint). It counts traffic.window events ("windows") and bulk messages ("bulk").
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from floodwatch.config import Config
from floodwatch.messages import Message, TrafficWindow
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.entry import run_actor


class DummyActor(Actor[None]):
    name = "dummy"
    subscribes = (TrafficWindow,)

    def __init__(self, config: Config) -> None:
        type(self).name = os.environ.get("FLOODWATCH_ACTOR", "dummy")
        self._mode_file = Path(config.agent.state_dir) / f"{self.name}.mode"
        super().__init__(config)
        self.counters["ticks"] = 0

    def mode(self) -> str:
        try:
            return self._mode_file.read_text().strip()
        except OSError:
            return "ok"

    def on_start(self) -> None:
        mode = self.mode()
        if mode == "crash":
            raise RuntimeError("dummy asked to crash at start-up")
        if mode == "pull":
            self.pull(self.endpoints.packets, self._bulk, hwm=100)
        self.counters["windows"] = 0
        self.counters["bulk"] = 0
        self.every(0.1, self._tick)

    def on_message(self, msg: Message) -> None:
        self.counters["windows"] += 1

    def _bulk(self, msg: Message) -> None:
        self.counters["bulk"] += 1

    def _tick(self) -> None:
        self.counters["ticks"] += 1
        if self.mode() == "hang":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            while True:  # a wedged actor: alive, silent, deaf
                time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    DummyActor.name = os.environ.get("FLOODWATCH_ACTOR", "dummy")  # in its log lines from the start
    return run_actor(DummyActor, argv)


if __name__ == "__main__":
    sys.exit(main())
