"""The credentials cache (floodwatch/server/authcache.py): how long it trusts a key, what makes it forget,
and its bound, with an injected clock."""

from __future__ import annotations

from floodwatch.server.authcache import AUTH_CACHE_LISTENING_SECONDS, AUTH_CACHE_SECONDS, AuthCache


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_key_is_kept_5_s_unless_removals_are_heard_then_60_s() -> None:
    clock = Clock()
    cache = AuthCache(clock)
    cache.put("u1", "h1", 7, cache.generation)
    assert cache.get("u1", "h1") == 7 and cache.get("u1", "other key") is None and cache.get("u2", "h1") is None
    clock.t += AUTH_CACHE_SECONDS
    assert cache.get("u1", "h1") is None
    cache.listening(True)
    cache.put("u1", "h1", 7, cache.generation)
    clock.t += AUTH_CACHE_LISTENING_SECONDS - 0.1
    assert cache.get("u1", "h1") == 7
    clock.t += 0.1
    assert cache.get("u1", "h1") is None


def test_listening_or_not_starts_from_an_empty_cache() -> None:
    """Removals made while nobody listened are not replayed; entries made while listening would outlive
    the short bound once the notifications stop."""
    cache = AuthCache(Clock())
    cache.put("u1", "h1", 7, cache.generation)
    cache.listening(True)
    assert cache.get("u1", "h1") is None
    cache.put("u1", "h1", 7, cache.generation)
    cache.listening(False)
    assert cache.get("u1", "h1") is None and len(cache) == 0


def test_a_removed_node_is_forgotten_under_every_key_and_a_lookup_that_raced_the_removal_is_not_kept() -> None:
    cache = AuthCache(Clock())
    cache.put("u1", "h1", 7, cache.generation)
    cache.put("u1", "h2", 7, cache.generation)
    cache.put("u2", "h3", 8, cache.generation)
    before = cache.generation  # a lookup of node 7 starts: its row is read before the removal commits
    cache.forget(7)
    assert cache.get("u1", "h1") is None and cache.get("u1", "h2") is None and cache.get("u2", "h3") == 8
    cache.put("u1", "h1", 7, before)  # its answer arrives after the notification
    assert cache.get("u1", "h1") is None


def test_the_cache_is_bounded_the_oldest_entries_go_first() -> None:
    cache = AuthCache(Clock(), max_entries=3)
    for i in range(5):
        cache.put(f"u{i}", "h", i, cache.generation)
    assert len(cache) == 3 and cache.get("u0", "h") is None and cache.get("u1", "h") is None
    assert [cache.get(f"u{i}", "h") for i in (2, 3, 4)] == [2, 3, 4]
