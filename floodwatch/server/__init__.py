"""The embedded Agent API server (../shared/AGENT_API.md parts A and B): aiohttp + SQLite.

It runs standalone (`floodwatch server`, `python -m floodwatch.server`) or as the supervised
`apiserver` actor (actors/apiserver.py). See docs/server.md.
"""
