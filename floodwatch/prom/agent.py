"""The agent's /metrics: what the supervisor knows (its `status.reply`, the same `floodwatch status`
shows) as Prometheus families.

Per actor: up, state, restarts, last heartbeat age, uptime, CPU and memory; then every number of its
heartbeat counters as `floodwatch_<actor>_<counter>_total` (a counter: a total that only grows while
the actor lives; it starts again from 0 when the actor restarts, which Prometheus' rate() handles) or
`floodwatch_<actor>_<counter>` (a gauge: a name the actor declared a level, carried in its heartbeat's
`gauges`). Text values (e.g. the reporter's last_error) are not exported. The series are bounded by the
code, not the traffic: a fixed set of actors, each with at most MAX_COUNTERS_PER_ACTOR counters.
"""

from __future__ import annotations

from typing import Any

from floodwatch import __version__
from floodwatch.messages import StatusReply
from floodwatch.prom.text import COUNTER, GAUGE, Exposition, metric_name
from floodwatch.runtime.supervisor.child import ChildState

MAX_COUNTERS_PER_ACTOR = 200


def render(reply: StatusReply | None, node: str) -> str:
    out = Exposition()
    out.add("floodwatch_agent_info", GAUGE, "The agent's version and node name (value 1).", 1,
            {"version": __version__, "node": node})
    out.add("floodwatch_supervisor_up", GAUGE, "1 when the supervisor answered this scrape's status request.",
            int(reply is not None))
    if reply is None:
        return out.render()
    sup = reply.supervisor
    out.add("floodwatch_supervisor_ready", GAUGE, "1 once every actor was ready (systemd READY=1).",
            int(bool(sup.get("ready"))))
    out.add("floodwatch_supervisor_uptime_seconds", GAUGE, "Seconds since the supervisor started.",
            float(sup.get("uptime", 0.0)))
    out.add("floodwatch_supervisor_reloads_total", COUNTER, "Config reloads (SIGHUP).", int(sup.get("reloads", 0)))
    out.add("floodwatch_supervisor_bad_control_messages_total", COUNTER,
            "Control messages that were not valid messages.", int(sup.get("bad_control_messages", 0)))
    for row in reply.actors:
        _actor(out, row)
    for row in reply.actors:
        _counters(out, str(row.get("name", "")), row.get("counters") or {}, set(row.get("gauges") or ()))
    return out.render()


def _actor(out: Exposition, row: dict[str, Any]) -> None:
    labels = {"actor": str(row.get("name", ""))}
    state = str(row.get("state", ""))
    out.add("floodwatch_actor_up", GAUGE, "1 while the actor is running (ready and heartbeating).",
            int(state == ChildState.RUNNING.value), labels)
    fam = out.family("floodwatch_actor_state", GAUGE, "1 for the state the actor is in, 0 for the others.")
    for s in ChildState:
        fam.add(int(state == s.value), {**labels, "state": s.value})
    out.add("floodwatch_actor_restarts_total", COUNTER, "Times the supervisor restarted the actor.",
            int(row.get("restarts", 0)), labels)
    age = row.get("last_heartbeat")
    if isinstance(age, int | float):
        out.add("floodwatch_actor_last_heartbeat_age_seconds", GAUGE,
                "Seconds since the actor's last heartbeat reached the supervisor.", float(age), labels)
    out.add("floodwatch_actor_uptime_seconds", GAUGE, "Seconds since the actor's process started.",
            float(row.get("uptime", 0.0)), labels)
    out.add("floodwatch_actor_cpu_seconds_total", COUNTER, "CPU time of the actor's process (user + system).",
            float(row.get("cpu_seconds", 0.0)), labels)
    out.add("floodwatch_actor_resident_memory_bytes", GAUGE, "Resident memory of the actor's process.",
            int(row.get("rss_bytes", 0)), labels)
    out.add("floodwatch_actor_healthy", GAUGE, "0 while the actor reports a problem (`floodwatch status`).",
            int(row.get("health") in ("ok", "")), labels)


def _counters(out: Exposition, actor: str, counters: dict[str, Any], gauges: set[str]) -> None:
    numbers = [(k, v) for k, v in sorted(counters.items()) if isinstance(v, int | float)]
    for key, value in numbers[:MAX_COUNTERS_PER_ACTOR]:
        gauge = key in gauges
        name = metric_name("floodwatch", actor, key) if gauge else metric_name("floodwatch", actor, key, "total")
        if name in out.families:  # a clash with a name already written: the first one stands
            continue
        kind = GAUGE if gauge else COUNTER
        out.add(name, kind, f"The {actor} actor's {key} ({kind}; docs/metrics.md).", value)
