"""The supervisor's parts: main (`floodwatch run`), core (the Supervisor, its loop, run_until()), child
(a supervised actor and its ChildState), restart (backoff and flapping), proxy (the event proxy
thread), zygote (the fork server), holes (the image's holes, filled before the zygote is forked),
sdnotify (systemd). `python supervisor.py` in a checkout is a thin
entry over main.

Nothing is imported here: the zygote imports floodwatch.runtime.supervisor.zygote, and every actor
it forks would carry the supervisor's modules.
"""
