"""Aggregation of packet records into 100 ms windows, per-second rollups and a whole-run summary.

Pure logic (no sockets): the aggregator actor (actors/aggregator.py) feeds `Engine` with bus messages
and publishes what it returns. See docs/aggregator.md.
"""
