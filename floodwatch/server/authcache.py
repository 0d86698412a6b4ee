"""The agents' credentials the server has verified, so that a request does not cost a database lookup.

Pure logic with an injected clock. An entry is (node UUID, hash of the key presented) -> node id: a hit
needs the key, and only successes are kept, so the cache tells nothing about which nodes exist. Its size
is bounded (AUTH_CACHE_MAX: the oldest entries go first; an attacker's unknown keys are never kept).

How long an entry is trusted depends on how the server learns that a node was removed:
- by its own hand (ApiServer.remove_node: `forget` at once);
- on PostgreSQL, by another replica or the CLI: the store NOTIFYs the removal (pg_store.NODES_CHANNEL)
  and every replica listening `forget`s the node when the notification arrives. While the listening
  connection is up, entries live AUTH_CACHE_LISTENING_SECONDS (the bound for a notification lost on a
  connection that died silently, and for rows changed in the database by hand); while it is down, and
  on SQLite, AUTH_CACHE_SECONDS. Listening again clears the cache: what was missed is not replayed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

AUTH_CACHE_SECONDS = 5.0  # without notifications: a node removed elsewhere is refused within this time
AUTH_CACHE_LISTENING_SECONDS = 60.0  # listening: removals are refused at once; a lost notification: this
AUTH_CACHE_MAX = 100_000


class AuthCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = AUTH_CACHE_MAX) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()  # -> (node id, expiry)
        self._listening = False
        self.generation = 0  # moves on with every removal: a lookup that started before one is not kept

    @property
    def ttl(self) -> float:
        return AUTH_CACHE_LISTENING_SECONDS if self._listening else AUTH_CACHE_SECONDS

    def get(self, node_uuid: str, presented_hash: str) -> int | None:
        hit = self._entries.get((node_uuid, presented_hash))
        if hit is None:
            return None
        if hit[1] <= self.clock():
            del self._entries[(node_uuid, presented_hash)]
            return None
        return hit[0]

    def put(self, node_uuid: str, presented_hash: str, node_id: int, generation: int) -> None:
        """Keep a verified key, looked up in the database when the cache was at `generation` (a node
        removed since may be this one: then it is not kept)."""
        if generation != self.generation:
            return
        key = (node_uuid, presented_hash)
        self._entries.pop(key, None)
        self._entries[key] = (node_id, self.clock() + self.ttl)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, node_id: int) -> None:
        """A node was removed: its entries go (any key)."""
        self.generation += 1
        for key in [k for k, v in self._entries.items() if v[0] == node_id]:
            del self._entries[key]

    def listening(self, up: bool) -> None:
        """The removal notifications are (up) or are no longer (down) received. Either way the entries so
        far go: made before listening, they may have missed a removal; made while listening, they would
        outlive the shorter bound that holds from now on."""
        self._listening = up
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
