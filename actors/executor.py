"""The executor actor: validated mitigation commands in, one command.finished per command id out.

Commands come from the reporter (the API's pending commands) and from the local policies; incidents
drive the policies and the removal of their rules; a timer removes rules whose TTL has passed.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from floodwatch.executor import policies
from floodwatch.executor.core import (
    MAX_COMMAND_ID,
    Executor,
    Outcome,
    facts_source,
)
from floodwatch.executor.ledger import Ledger
from floodwatch.executor.runner import Runner
from floodwatch.messages import (
    CommandFinished,
    CommandReceived,
    IncidentEvent,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    Message,
)
from floodwatch.paths import executor_files
from floodwatch.runtime.actor import Actor
from floodwatch.runtime.core import on_phase
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.executor import ExecutorSettings


def effective_settings(settings: ExecutorSettings, capture_ifaces: list[str]) -> ExecutorSettings:
    """tc_interfaces defaults to the monitored (capture) interfaces."""
    if settings.tc_interfaces:
        return settings
    return dataclasses.replace(settings, tc_interfaces=[i for i in capture_ifaces if i != "auto"])


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class ExecutorActor(Actor[ExecutorSettings]):
    name = "executor"
    subscribes = (CommandReceived, IncidentOpened, IncidentUpdated, IncidentResolved)

    def on_start(self) -> None:
        s = effective_settings(self.settings, self.config.capture.interfaces)
        self.s = s
        state = Path(self.config.agent.state_dir)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        ledger, audit = executor_files(s, state)
        self.ledger = Ledger(ledger, audit, s.max_audit_bytes)
        self.runner = Runner(s.timeout, s.max_output_bytes, s.argv_prefix)
        api_url = self.config.reporter.url if self.config.reporter.enabled else ""
        self.executor = Executor(s, self.ledger, self.runner, log=self.log,
                                 facts=facts_source(s, self.runner, api_url))
        self.count_from(self._counters, gauges=("rules_in_force",))
        forgotten = self.executor.forget_after_reboot(boot_id())
        if forgotten:
            self.log.info("the host rebooted: {} remembered rules were gone with it", forgotten)
        for outcome in self.executor.recover():
            self._publish(outcome)
        if s.enabled and s.policies and not s.dry_run:
            self._setup_policies()
        # on the heartbeat's phase (the same multiples of the monotonic clock): one wake-up for both
        self.every(on_phase(s.expire_interval), self._expire, first=0.0)
        self.health = "dry-run" if s.dry_run else ("disabled" if not s.enabled else "ok")

    def _setup_policies(self) -> None:
        for argv in policies.setup_commands(self.s):
            result = self.runner.run(argv)
            self.ledger.audit(self.executor.clock(), "setup", "policy", None, argv,
                              "applied" if result.ok else "failed", result.error)
            if not result.ok:
                self.log.warning("policy setup failed: {}: {}", " ".join(argv), result.error)
        for check, insert in policies.match_rules(self.s):
            if self.runner.run(check).ok:
                continue
            result = self.runner.run(insert)
            self.ledger.audit(self.executor.clock(), "setup", "policy", None, insert,
                              "applied" if result.ok else "failed", result.error)

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, CommandReceived):
            self._command(msg)
        elif isinstance(msg, IncidentResolved):
            self.executor.resolve(msg.incident_key)
        elif isinstance(msg, IncidentEvent) and self.s.policies and self.s.enabled:
            self._policies(msg)

    def _command(self, msg: CommandReceived) -> None:
        self._publish(self.executor.handle(msg.source, msg.command_id, msg.command, msg.incident_key))

    def _policies(self, event: IncidentEvent) -> None:
        done = self.ledger.commands_for_incident("policy", event.incident_key)
        for text in policies.commands_for(event, self.s):
            if text in done:
                continue
            command_id = self.ledger.next_id("policy")
            self._publish(self.executor.handle("policy", command_id, text, event.incident_key))

    def _expire(self) -> None:
        self.executor.expire()

    def _publish(self, o: Outcome) -> None:
        if type(o.command_id) is not int or not 0 <= o.command_id <= 2 * MAX_COMMAND_ID + 1:
            return  # no ack can carry it (msgpack: 64 bits); counted as bad_id by the executor
        self.publish(CommandFinished(command_id=o.command_id, status=o.status, error=o.error, output=o.output,
                                     executed_at=o.executed_at, source=o.source))

    def _counters(self) -> dict[str, int]:
        return {**self.executor.counters, "rules_in_force": self.ledger.count_rules()}

    def on_stop(self) -> None:
        if self.s.remove_on_shutdown:
            removed = self.executor.remove_all()
            self.log.info("removed {} rules at shutdown", removed)
        self.freeze_counters()
        self.ledger.close()


def main(argv: list[str] | None = None) -> int:
    return run_actor(ExecutorActor, argv)


if __name__ == "__main__":
    sys.exit(main())
