"""The executor's logic without sockets: one command in, one outcome out; rules remembered and undone.

`Executor.handle` never runs a command id twice (the ledger records it as running before it runs), and
on an agent with `[executor] enabled = false` runs none (each is recorded, audited and counted as rejected);
`resolve`, `expire` and `remove_all` undo rules by running their inverse commands.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from floodwatch.errors import CommandRejected
from floodwatch.executor.hostfacts import FactsSource, HostFacts
from floodwatch.executor.ledger import Ledger, Rule
from floodwatch.executor.plan import ADDS, REMOVES, Plan
from floodwatch.executor.runner import Runner, RunResult
from floodwatch.executor.safety import entry_weight
from floodwatch.executor.validate import validate_command
from floodwatch.settings.executor import SYSCTL_DIRECTIONS, ExecutorSettings

APPLIED, REJECTED, FAILED = "applied", "rejected", "failed"
_HANDLE = re.compile(r"# handle ([0-9]+)")
DISABLED = "mitigation is disabled on this agent ([executor] enabled = false)"
MAX_UNDO_ATTEMPTS = 3
EXPIRE_BATCH = 200
MAX_COMMAND_ID = 2**63 - 1  # the ledger's (SQLite's) integer range


def valid_command_id(command_id: Any) -> bool:
    return type(command_id) is int and 0 <= command_id <= MAX_COMMAND_ID


def facts_source(s: ExecutorSettings, runner: Runner, api_url: str = "") -> FactsSource:
    """The host's facts, read through the runner (its namespace prefix, if any), cached 2 s."""
    return FactsSource(runner, s.protected_ports, [k for k in s.sysctl_keys if k in SYSCTL_DIRECTIONS],
                       api_url=api_url)


@dataclass(frozen=True)
class Outcome:
    source: str
    command_id: int
    status: str
    error: str
    output: str
    executed_at: float
    replayed: bool = False  # this id was handled before: the recorded result, nothing ran now


class Executor:
    def __init__(self, settings: ExecutorSettings, ledger: Ledger, runner: Runner,
                 clock: Callable[[], float] = time.time, log: Any = logger,
                 facts: Callable[[], HostFacts] | None = None) -> None:
        self.s = settings
        self.ledger = ledger
        self.runner = runner
        self.clock = clock
        self.log = log
        self.facts = facts or facts_source(settings, runner)
        self.counters: dict[str, int] = {"applied": 0, "rejected": 0, "failed": 0, "replayed": 0,
                                         "rules_removed": 0, "undo_failed": 0, "bad_id": 0}
        self._undo_failures: dict[int, int] = {}

    # -- commands --------------------------------------------------------------------------------
    def handle(self, source: str, command_id: int, command: Any, incident_key: str = "") -> Outcome:
        """Validate and run one command once; a repeated id returns the recorded outcome."""
        now = self.clock()
        if not valid_command_id(command_id):
            return self._bad_id(source, command_id, now)
        text = command if isinstance(command, str) else repr(command)[:500]
        if not self.ledger.begin(source, command_id, text, now, incident_key):
            return self._replay(source, command_id, now)
        if not self.s.enabled:  # recorded, audited, counted and logged like any refusal
            return self._finish(source, command_id, REJECTED, DISABLED, "", [], text)
        try:
            plan = validate_command(command, self.s, self.current_facts())
            self._check_state(plan, source)
        except CommandRejected as e:
            return self._finish(source, command_id, REJECTED, str(e), "", [], text)
        if self.s.dry_run:
            return self._finish(source, command_id, APPLIED, "", f"dry-run: would run {plan.argv}", plan.argv)
        undo = self._prepare_undo(plan)
        result = self.runner.run(plan.argv)
        if not result.ok:
            return self._finish(source, command_id, FAILED, result.error, result.output, plan.argv)
        self._remember(plan, undo, result, source, command_id, incident_key, now)
        return self._finish(source, command_id, APPLIED, "", result.output, plan.argv)

    def _bad_id(self, source: str, command_id: Any, now: float) -> Outcome:
        """An id the ledger cannot hold (not an int in 0..2**63-1): rejected, counted, nothing recorded.
        Re-sent at every poll it is rejected again each time; nothing runs."""
        self.counters["bad_id"] += 1
        self.counters["rejected"] += 1
        why = f"command id {str(command_id)[:40]} is not an integer in 0..{MAX_COMMAND_ID}"
        self.ledger.audit(now, "command", source, None, f"id {str(command_id)[:40]}", REJECTED, why)
        self.log.warning("command {}#{} rejected: {}", source, str(command_id)[:40], why)
        return Outcome(source, command_id, REJECTED, why, "", now)

    def current_facts(self) -> HostFacts:
        """The host's facts, with each sysctl the agent changed at its value from before that change:
        a command may tighten a key from the host's own setting, and loosen it back no further."""
        facts = self.facts()
        baseline = dict(facts.sysctl)
        for key in baseline.keys() | set(SYSCTL_DIRECTIONS):
            for rule in self.ledger.rules_by_identity(f"sysctl {key}")[:1]:
                value = rule.undo[-1].rpartition("=")[2]
                if value.isdigit():
                    baseline[key] = int(value)
        return dataclasses.replace(facts, sysctl=baseline)

    def _replay(self, source: str, command_id: int, now: float) -> Outcome:
        rec = self.ledger.command(source, command_id)
        assert rec is not None
        self.counters["replayed"] += 1
        self.ledger.audit(now, "replayed", source, command_id, "", rec.status, "seen before: not run again")
        if rec.status == "running":  # only while another handle() of it is in progress (never, in one thread)
            return Outcome(source, command_id, FAILED, "still running", "", now, replayed=True)
        return Outcome(source, command_id, rec.status, rec.error, rec.output, rec.executed_at or now, replayed=True)

    def _check_state(self, plan: Plan, source: str) -> None:
        if plan.effect == ADDS and self.s.max_rules:
            count, adds = self.ledger.count_entries(), entry_weight(plan.match)
            if count + adds > self.s.max_rules:
                raise CommandRejected(f"rule cap reached: {count} entries in force, this command adds {adds} "
                                      f"(max_rules = {self.s.max_rules}; an ipset prefix counts its addresses)")
        if plan.effect != REMOVES:
            return
        held = self.ledger.rules_by_identity(plan.identity)
        by_rule = plan.program in ("iptables", "ip6tables") or (plan.program == "nft" and "handle" in plan.argv)
        if not held and by_rule:
            raise CommandRejected("only rules the agent added may be deleted, and this one is not in force")
        if held and source != "policy" and all(r.source == "policy" for r in held):
            raise CommandRejected("this rule belongs to the agent's own policy: only the policy removes it")

    def _prepare_undo(self, plan: Plan) -> list[str] | None:
        """The inverse command, when it must be known before the run (sysctl: the value now)."""
        if not plan.sysctl_key:
            return plan.undo
        earlier = self.ledger.rules_by_identity(plan.identity)
        if earlier:  # keep the value from before the agent's first change
            return earlier[0].undo
        current = self.runner.run(["sysctl", "-n", plan.sysctl_key])
        value = current.output.strip()
        if not current.ok or not value.isdigit():
            return None
        return ["sysctl", "-w", f"{plan.sysctl_key}={value}"]

    def _remember(self, plan: Plan, undo: list[str] | None, result: RunResult, source: str, command_id: int,
                  incident_key: str, now: float) -> None:
        if plan.effect == REMOVES:
            for rule in self.ledger.rules_by_identity(plan.identity)[:1]:
                self.ledger.remove_rule(rule.id)
            return
        if plan.effect != ADDS:
            return
        identity = plan.identity
        if plan.nft_rule[1]:
            m = _HANDLE.search(result.output)
            if not m:
                self.log.warning("nft printed no rule handle; the rule cannot be undone: {}", plan.summary)
                return
            table, chain = plan.nft_rule
            identity = f"nft {self.s.nft_family} {table} {chain} handle {m.group(1)}"
            undo = ["nft", "delete", "rule", self.s.nft_family, table, chain, "handle", m.group(1)]
        if undo is None:
            self.log.warning("no way to undo {}; it stays until changed by hand", plan.summary)
            return
        for old in self.ledger.rules_by_identity(identity):
            if plan.sysctl_key or plan.program == "ipset" or "element" in plan.argv:
                self.ledger.remove_rule(old.id)  # the same object: one entry, the latest expiry
        ttl = min(self.s.default_ttl or self.s.max_ttl, self.s.max_ttl)
        self.ledger.add_rule(identity, plan.argv, undo, source, command_id, incident_key, now, now + ttl,
                             weight=entry_weight(plan.match))

    def _finish(self, source: str, command_id: int, status: str, error: str, output: str,
                argv: list[str], text: str = "") -> Outcome:
        now = self.clock()
        self.ledger.finish(source, command_id, status, error, output, now)
        self.ledger.audit(now, "command", source, command_id, argv or text, status, error)
        self.counters[status] += 1
        level = "INFO" if status == APPLIED else "WARNING"
        self.log.log(level, "command {}#{} {}: {}", source, command_id, status, error or " ".join(argv))
        return Outcome(source, command_id, status, error, output, now)

    def recover(self) -> list[Outcome]:
        """After a crash: commands left running are failed, never re-run."""
        out = []
        for rec in self.ledger.interrupted():
            reason = "interrupted: the agent stopped while this command ran; it is not run again"
            out.append(self._finish(rec.source, rec.command_id, FAILED, reason, "", []))
        return out

    def forget_after_reboot(self, boot_id: str) -> int:
        """Kernel rules do not survive a reboot: forget the ledger's rules when the boot id changed."""
        known = self.ledger.meta("boot_id")
        self.ledger.set_meta("boot_id", boot_id)
        if not known or known == boot_id:
            return 0
        rules = self.ledger.rules()
        for rule in rules:
            self.ledger.remove_rule(rule.id)
            self.ledger.audit(self.clock(), "forgotten", rule.source, rule.command_id, rule.argv, "removed",
                              "the host rebooted since this rule was added")
        return len(rules)

    # -- undoing rules -----------------------------------------------------------------------------
    def undo(self, rule: Rule, reason: str) -> bool:
        """Run a rule's inverse; it leaves the ledger on success or after repeated failures."""
        now = self.clock()
        if rule.undo[:2] == ["ipset", "destroy"] and rule.undo[2:3] and rule.undo[2] in self.s.policy_sets:
            self.ledger.remove_rule(rule.id)  # never: a policy's set outlives any command's TTL
            self.ledger.audit(now, "undo", rule.source, rule.command_id, rule.undo, REJECTED,
                              f"{reason}; the set belongs to a policy: not destroyed")
            return False
        result = self.runner.run(rule.undo)
        self.ledger.audit(now, "undo", rule.source, rule.command_id, rule.undo,
                          APPLIED if result.ok else FAILED, f"{reason}; {result.error}".strip("; "))
        if result.ok:
            self.ledger.remove_rule(rule.id)
            self.counters["rules_removed"] += 1
            self.log.info("removed ({}): {}", reason, " ".join(rule.undo))
            return True
        self.counters["undo_failed"] += 1
        tries = self._undo_failures[rule.id] = self._undo_failures.get(rule.id, 0) + 1
        self.log.warning("could not remove ({}, try {}): {}: {}", reason, tries, " ".join(rule.undo), result.error)
        if tries >= MAX_UNDO_ATTEMPTS:
            self.ledger.remove_rule(rule.id)
        return False

    def resolve(self, incident_key: str) -> int:
        """Undo every rule tied to an incident (it has resolved)."""
        if not incident_key:
            return 0
        rules = self.ledger.rules_for_incident(incident_key)
        return sum(self.undo(r, f"incident {incident_key} resolved") for r in rules)

    def expire(self, batch: int = EXPIRE_BATCH) -> int:
        """Undo rules past their TTL, at most `batch` per call (the actor's loop must keep beating)."""
        return sum(self.undo(r, "ttl passed") for r in self.ledger.expired(self.clock())[:batch])

    def remove_all(self) -> int:
        return sum(self.undo(r, "shutdown") for r in reversed(self.ledger.rules()))
