"""The worker's cache of decoded rule states (``streams.db.alert_states.StateCache``): least
recently used first, at most ``limit`` patients."""

from __future__ import annotations

from alerts.state import new_state
from streams.db.alert_states import Cached, StateCache


def cached(patient: str, rev: int = 1, part: int = 0) -> Cached:
    return (rev, part, new_state(patient))


def test_without_a_limit_every_patient_is_kept() -> None:
    cache = StateCache()
    for i in range(50):
        cache.put(("o", f"p{i}"), cached(f"p{i}"))
    assert len(cache) == 50 and cache.dropped == 0


def test_beyond_the_limit_the_least_recently_used_is_dropped() -> None:
    cache = StateCache(limit=2)
    a, b, c = ("o", "a"), ("o", "b"), ("o", "c")
    cache.put(a, cached("a"))
    cache.put(b, cached("b"))
    cache.put(a, cached("a", rev=2))  # a used again: b is now the oldest
    cache.put(c, cached("c"))
    assert list(cache) == [a, c] and cache.dropped == 1
    assert b not in cache and cache.get(b) is None
    assert cache[a][0] == 2  # the newer revision replaced the older


def test_a_partitions_patients_are_those_it_holds() -> None:
    cache = StateCache()
    cache.put(("o", "a"), cached("a", part=1))
    cache.put(("o", "b"), cached("b", part=2))
    cache.put(("o", "c"), cached("c", part=1))
    assert cache.of_partitions({1}) == [("o", "a"), ("o", "c")]
    cache.pop(("o", "a"))
    cache.pop(("o", "a"))  # not held: nothing
    assert cache.of_partitions({1, 2}) == [("o", "b"), ("o", "c")]
    assert cache.of_partitions(set()) == []
