"""The weblog actor: web server access logs, followed as written -> weblog.window events.

A thin adapter around floodwatch.weblog.follow.Logs (pure logic): reads every configured log each
`poll_interval` (at once again while a backlog remains), publishes one WebWindow every `window`
seconds of wall time (also when empty: the detector sees quiet as quiet), and persists each file's
position (inode, offset of the last complete line, head fingerprint) in the state directory every
second and on stop, so a restart neither re-reads nor skips lines. `python -m actors.weblog --config FILE`.
"""

from __future__ import annotations

import sys
import time

from floodwatch.config import Config
from floodwatch.paths import weblog_positions
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.weblog import WeblogSettings
from floodwatch.weblog.follow import Logs, load_positions, save_positions

SAVE_INTERVAL = 1.0


class WeblogActor(Actor[WeblogSettings]):
    name = "weblog"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.state_path = weblog_positions(self.settings, config.agent.state_dir)
        self.logs = Logs(self.settings, load_positions(self.state_path), time.time())
        self.counters.update({"windows": 0, "state_errors": 0})
        self.count_from(lambda: {**self.logs.counters, **self.logs.follower_counters()})
        self._backlog = False

    def on_start(self) -> None:
        self.every(lambda: 0.0 if self._backlog else self.settings.poll_interval, self.poll, first=0.0)
        self.every(self.settings.window, self.flush)
        self.every(SAVE_INTERVAL, self.save)

    def poll(self) -> None:
        self._backlog = self.logs.poll() >= self.settings.read_bytes

    def flush(self) -> None:
        self.poll()
        self.publish(self.logs.flush(time.time()))
        self.counters["windows"] += 1

    def save(self) -> None:
        try:
            save_positions(self.state_path, self.logs.positions())
        except OSError as e:
            self.counters["state_errors"] += 1
            self.log.warning("cannot save log positions to {}: {}", self.state_path, e)

    def on_stop(self) -> None:
        self.save()
        self.logs.close()


def main(argv: list[str] | None = None) -> int:
    return run_actor(WeblogActor, argv)


if __name__ == "__main__":
    sys.exit(main())
