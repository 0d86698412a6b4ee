"""The runtime: what every actor process and the supervisor stand on.

core.py        ActorCore[S]: typed settings, counters and their sources, handshake, bus wait, heartbeats
actor.py       Actor[S]: the synchronous face (zmq.Poller loop, timers, bulk PUSH/PULL)
aio.py         AsyncActor[S]: the asyncio face (aiohttp-based actors)
entry.py       run_actor(): the `main(argv)` of every actor module
supervisor/    the supervisor: children, restart policy, event proxy, zygote, systemd notify

Kept import-light on purpose: the supervisor imports floodwatch.runtime.supervisor and must not load
the actor faces (zmq.asyncio, aiohttp...).
"""
