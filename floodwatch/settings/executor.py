"""[executor] config section: which commands the agent may run, and on which of its own objects.

Every command is validated against a per-program grammar (floodwatch/executor/); these keys say which
objects are the agent's own. docs/executor.md describes each key and the choices behind the defaults.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,27}$")
_IFACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")
_KEY = re.compile(r"^net(\.[a-z0-9_-]+)+$")
_TC_RATE = re.compile(r"([1-9][0-9]{0,9})(bit|kbit|mbit|gbit|bps|kbps|mbps)")
_TC_RATE_FACTOR = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "bps": 8, "kbps": 8000,
                   "mbps": 8 * 10**6}
BUILTIN_CHAINS = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")
# sysctl key -> (protective direction, kernel default used when the value cannot be read, lowest value
# a command may set). A command may only move a key in its direction from the host's value.
SYSCTL_DIRECTIONS: dict[str, tuple[str, int, int]] = {
    "net.ipv4.tcp_syncookies": ("up", 1, 1),
    "net.ipv4.tcp_max_syn_backlog": ("up", 128, 128),
    "net.ipv4.tcp_synack_retries": ("down", 5, 1),
    "net.ipv4.icmp_ratelimit": ("up", 1000, 1),
    "net.ipv4.icmp_echo_ignore_all": ("up", 0, 0),
    "net.ipv4.icmp_echo_ignore_broadcasts": ("up", 1, 0),
    "net.ipv6.icmp.ratelimit": ("up", 1000, 1),
}
DEFAULT_REFLECTOR_PORTS = [17, 19, 53, 69, 111, 123, 137, 161, 389, 427, 520, 1900, 3283, 3702, 5353, 11211]


def tc_rate_bits(text: str) -> int:
    """A tc rate ('1mbit', '500kbit', '10mbps') -> bit/s; ValueError when it is not one."""
    m = _TC_RATE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a tc rate (N followed by bit, kbit, mbit, gbit, bps, kbps or mbps)")
    return int(m.group(1)) * _TC_RATE_FACTOR[m.group(2)]


@dataclass(frozen=True)
class ExecutorSettings:
    enabled: bool = True
    dry_run: bool = False  # validate, log and audit every command, run none ("applied" with output "dry-run")
    # iptables/ip6tables: the tables and chains a command may touch. Chains other than the agent's own
    # (FLOODWATCH) must be listed explicitly; INPUT is here because the API's own example uses it.
    iptables_tables: list[str] = field(default_factory=lambda: ["filter"])
    iptables_chains: list[str] = field(default_factory=lambda: ["FLOODWATCH", "INPUT"])
    nft_family: str = "inet"  # the agent's nftables table: `<nft_family> <nft_table>`
    nft_table: str = "floodwatch"
    ipset_prefix: str = "floodwatch"  # ipset names the agent owns start with this
    # tc only on these interfaces (empty: the capture interfaces, "auto" excluded), only qdiscs with
    # this handle major number (hex, e.g. "fa00" for "fa00:").
    tc_interfaces: list[str] = field(default_factory=list)
    tc_handle: str = "fa00"
    # sysctl: only these keys (one per command, integer values within each key's built-in range).
    sysctl_keys: list[str] = field(
        default_factory=lambda: [
            "net.ipv4.tcp_syncookies",
            "net.ipv4.tcp_max_syn_backlog",
            "net.ipv4.tcp_synack_retries",
            "net.ipv4.icmp_ratelimit",
            "net.ipv4.icmp_echo_ignore_all",
            "net.ipv4.icmp_echo_ignore_broadcasts",
            "net.ipv6.icmp.ratelimit",
        ]
    )
    # Never block these sources (DROP/REJECT rules, set elements): add your management networks. Loopback,
    # link-local, multicast, the host's own addresses, gateways, resolvers, the API server and SSH
    # session peers are always protected (docs/executor.md).
    never_block: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # SSH ports: blocking rules without a source never cover them, and the peers of established
    # connections to them are protected.
    protected_ports: list[int] = field(default_factory=lambda: [22])
    allow_accept: bool = False  # ACCEPT/RETURN rules from the network (with a source) are refused unless true
    # A blocking rule with no source may match one of these single source ports (reflection attacks).
    reflector_ports: list[int] = field(default_factory=lambda: list(DEFAULT_REFLECTOR_PORTS))
    min_source_pps: float = 1.0  # per-source limits (hashlimit, nft meter) must let at least this through
    tc_min_rate: str = "1mbit"  # no tc qdisc may shape below this rate
    tc_min_burst_bytes: int = 3000  # ... nor with a burst smaller than two full-size packets
    min_prefix_v4: int = 16  # shortest source prefix a blocking rule may use (/8 = a sixteenth of the net)
    min_prefix_v6: int = 32
    max_command_chars: int = 512  # longer commands are rejected before parsing
    max_arg_chars: int = 128  # longer single arguments are rejected
    # seconds a command may run before it is killed (status "failed"); keep it well under
    # supervisor.heartbeat_timeout: the actor runs one command at a time
    timeout: float = 5.0
    max_output_bytes: int = 16384  # stdout+stderr kept per command (the rest is cut, noted)
    max_rules: int = 1000  # rules in force at most; beyond it a rule-adding command is rejected
    default_ttl: float = 3600.0  # seconds an API rule stays without an incident (0 = until removed)
    max_ttl: float = 86400.0  # no rule (nor ipset/nft element timeout) lives longer than this
    expire_interval: float = 5.0  # how often rules past their TTL are removed
    remove_on_shutdown: bool = False  # undo every rule in force when the actor stops
    ledger_file: str = ""  # SQLite ledger; empty: <state_dir>/executor.sqlite3 (0600)
    audit_file: str = ""  # JSONL audit log; empty: <state_dir>/executor-audit.jsonl (0600); "-" = none
    max_audit_bytes: int = 64 * 1024 * 1024  # the JSONL file is rotated (one .1 kept) beyond this
    # Test/container feature: prepend this to every argv, e.g. ["ip", "netns", "exec", "NS"] to run
    # commands inside a network namespace. Empty on a real host.
    argv_prefix: list[str] = field(default_factory=list)
    # Local mitigation policies (off by default): "syn_block" puts the top sources of a SYN flood into
    # the ipset <ipset_prefix>_block (matched by an iptables rule in the first allowed chain);
    # "reflector_limit" rate-limits the reflector source port of an amplification attack with nftables.
    policies: list[str] = field(default_factory=list)
    policy_min_confidence: int = 70  # only incidents at least this sure trigger a policy
    policy_top_sources: int = 20  # at most this many sources blocked per incident
    policy_min_share: float = 0.01  # a source must carry at least this share of the incident's packets
    policy_rate_pps: int = 1000  # reflector_limit: packets/s let through from the reflector port

    @property
    def own_chains(self) -> list[str]:
        """The agent's own iptables chains (the configured chains that are not built in)."""
        return [c for c in self.iptables_chains if c not in BUILTIN_CHAINS]

    @property
    def policy_sets(self) -> tuple[str, str]:
        """The ipsets of the syn_block policy (v4, v6): only the agent creates them."""
        return f"{self.ipset_prefix}_block", f"{self.ipset_prefix}_block6"

    @property
    def tc_min_rate_bits(self) -> int:
        return tc_rate_bits(self.tc_min_rate)

    def validate(self) -> None:
        checks = (
            (self.nft_family in ("inet", "ip", "ip6"), "nft_family: one of inet, ip, ip6"),
            (bool(_NAME.match(self.nft_table)), f"nft_table: bad name {self.nft_table!r}"),
            (bool(_NAME.match(self.ipset_prefix)), f"ipset_prefix: bad name {self.ipset_prefix!r}"),
            (bool(re.fullmatch(r"[0-9a-f]{1,4}", self.tc_handle)), "tc_handle: 1-4 hex digits"),
            (0 <= self.min_prefix_v4 <= 32 and 0 <= self.min_prefix_v6 <= 128, "min_prefix_v4/v6: out of range"),
            (self.timeout > 0 and self.max_output_bytes > 0, "timeout/max_output_bytes: must be positive"),
            (self.max_rules >= 0 and self.max_ttl > 0 and self.default_ttl >= 0, "max_rules/max_ttl: bad value"),
            (self.expire_interval > 0, "expire_interval: must be positive"),
            (set(self.policies) <= {"syn_block", "reflector_limit"}, f"policies: unknown in {self.policies}"),
            (set(self.iptables_tables) <= {"filter", "raw", "mangle"}, "iptables_tables: filter, raw, mangle"),
            (all(isinstance(p, int) and 1 <= p <= 65535 for p in self.reflector_ports),
             f"reflector_ports: ports 1..65535, got {self.reflector_ports}"),
            (all(isinstance(p, int) and 1 <= p <= 65535 for p in self.protected_ports),
             f"protected_ports: ports 1..65535, got {self.protected_ports}"),
            (self.min_source_pps > 0, "min_source_pps: must be positive"),
            (self.tc_min_burst_bytes >= 0, "tc_min_burst_bytes: must not be negative"),
        )
        for ok, why in checks:
            if not ok:
                raise ValueError(why)
        prefix = self.argv_prefix
        if prefix and prefix[0] != "nsenter" and not (len(prefix) == 4 and prefix[:3] == ["ip", "netns", "exec"]):
            raise ValueError("argv_prefix: only [\"ip\", \"netns\", \"exec\", NS] or an nsenter command")
        for name in self.iptables_chains:
            if not _NAME.match(name):
                raise ValueError(f"iptables_chains: bad chain name {name!r}")
        for name in self.tc_interfaces:
            if not _IFACE.match(name):
                raise ValueError(f"tc_interfaces: bad interface name {name!r}")
        for key in self.sysctl_keys:
            if not _KEY.match(key):
                raise ValueError(f"sysctl_keys: {key!r} is not a net.* key")
        try:
            tc_rate_bits(self.tc_min_rate)
        except ValueError as e:
            raise ValueError(f"tc_min_rate: {e}") from e
        unknown = [k for k in self.sysctl_keys if k not in SYSCTL_DIRECTIONS]
        if unknown:
            raise ValueError(f"sysctl_keys: {unknown} have no known protective direction "
                             f"(known: {', '.join(SYSCTL_DIRECTIONS)})")
        for net in self.never_block:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise ValueError(f"never_block: {e}") from e
