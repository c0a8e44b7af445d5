"""The bench's arithmetic, pure and unit-tested: percentiles, histogram quantiles, size
statistics and ratios, the worker's /metrics text (summed over workers), the consumer
group's state, the alert records' trigger ids and the first alert or webhook per event."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; None when empty."""
    if not values:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within [0, 100]")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99 and max of latencies given in seconds, reported in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000.0, 1)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p95_ms": ms(percentile(seconds, 95)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds)) if seconds else None,
    }


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style quantile from cumulative buckets [(upper_bound, count), ...].

    Linear interpolation inside the bucket, like PromQL's histogram_quantile; a quantile in
    the +Inf bucket returns the largest finite bound. q in [0, 1].
    """
    bs = sorted(buckets)
    if not bs or bs[-1][1] <= 0:
        return None
    total = bs[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in bs:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def size_stats(sizes: Sequence[float]) -> dict[str, Any]:
    """n, median, p99, mean and max of byte sizes (linear-interpolated percentiles)."""

    def r(v: float | None) -> int | None:
        return None if v is None else round(v)

    return {
        "n": len(sizes),
        "median": r(percentile(sizes, 50)),
        "p99": r(percentile(sizes, 99)),
        "mean": r(sum(sizes) / len(sizes)) if sizes else None,
        "max": r(max(sizes)) if sizes else None,
    }


def growth(before: float | None, after: float | None) -> float | None:
    """after / before, rounded; None when either is missing or before is 0."""
    if not before or after is None:
        return None
    return round(after / before, 3)


def group_lag(ends: Mapping[Any, int], committed: Mapping[Any, int | None]) -> int:
    """Records not yet committed by a consumer group: sum of end - committed offsets."""
    lag = 0
    for tp, end in ends.items():
        done = committed.get(tp)
        lag += max(0, end - (done if done is not None and done >= 0 else 0))
    return lag


def check(value: float | None, op: str, threshold: float) -> bool | None:
    """value >= / <= / < threshold; None when there is no value."""
    if value is None:
        return None
    if op == ">=":
        return value >= threshold
    if op == "<=":
        return value <= threshold
    if op == "<":
        return value < threshold
    raise ValueError(f"unknown operator {op!r}")


def parse_metrics(text: str) -> dict[str, Any]:
    """Counters summed over labels, histogram buckets as [(le, cumulative count)]; each
    labelled sample also on its own, as Prometheus writes it (``name{k="v"}``)."""
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                b = out.setdefault(s.name, {})
                le = float(s.labels["le"])
                b[le] = b.get(le, 0.0) + s.value
            else:
                out[s.name] = out.get(s.name, 0.0) + s.value
                if s.labels:
                    labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                    out[f"{s.name}{{{labels}}}"] = s.value
    for k, v in list(out.items()):
        if isinstance(v, dict):
            out[k] = sorted(v.items())
    return out


def merge_metrics(per_worker: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``parse_metrics`` of several workers of one consumer group as one: counters summed,
    histogram buckets summed per bound (each worker counts what it did)."""
    out: dict[str, Any] = {}
    buckets: dict[str, dict[float, float]] = {}
    for m in per_worker:
        for name, v in m.items():
            if isinstance(v, list):
                b = buckets.setdefault(name, {})
                for le, n in v:
                    b[le] = b.get(le, 0.0) + n
            else:
                out[name] = out.get(name, 0.0) + v
    out.update({name: sorted(b.items()) for name, b in buckets.items()})
    return out


def delta(before: Mapping[str, Any], after: Mapping[str, Any], name: str) -> float:
    """How much a counter (a sample of ``parse_metrics``) grew between two readings."""
    return float(after.get(name, 0.0) - before.get(name, 0.0))


STATE_READS = "rtm_worker_state_reads"  # rule states decoded from the table (cache misses)
STATE_DROPPED = "rtm_worker_state_cache_dropped"  # ... and dropped at RTM_WORKER_STATE_CACHE


def state_cache_between(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, int]:
    """The worker's state cache between two ``parse_metrics`` readings: the states batches
    read from the table and those dropped at the cache's limit."""
    return {
        "reads": int(delta(before, after, STATE_READS)),
        "dropped": int(delta(before, after, STATE_DROPPED)),
    }


def gc_between(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's garbage collections between two ``parse_metrics`` readings, by
    generation (rtm_worker_gc_pause_seconds): how many, the seconds they stopped it, and the
    objects they found unreachable (rtm_worker_gc_collected_objects_total)."""
    out: dict[str, Any] = {}
    for g in ("0", "1", "2"):
        count, total = (
            f'rtm_worker_gc_pause_seconds_{k}{{generation="{g}"}}' for k in ("count", "sum")
        )
        found = f'rtm_worker_gc_collected_objects_total{{generation="{g}"}}'
        out[g] = {
            "collections": int(delta(before, after, count)),
            "seconds": round(delta(before, after, total), 4),
            # what they found unreachable: the cyclic garbage made meanwhile
            "garbage": int(delta(before, after, found)),
        }
    return out


def group_stable(described: Mapping[str, Any], group: str, members: int) -> bool:
    """Whether a DescribeGroups answer (aiokafka's ``to_object()``) shows `group` Stable
    with `members` members: no rebalance pending, every worker in."""
    for g in described.get("groups") or []:
        if g.get("group") == group:
            return bool(g.get("state") == "Stable" and len(g.get("members") or []) == members)
    return False


def alert_trigger_ids(obj: Any) -> tuple[str | None, list[str]]:
    """(change, event_ids) of an alert record: an AlertChange or a bare Alert snapshot."""
    if not isinstance(obj, dict):
        return None, []
    change = obj.get("change") if isinstance(obj.get("change"), str) else None
    inner = obj.get("alert")
    alert: dict[str, Any] = inner if isinstance(inner, dict) else obj
    ids = alert.get("event_ids") or []
    return change, [i for i in ids if isinstance(i, str)]


AlertRecord = tuple[float, str | None, list[str]]  # (instant s, change, event ids)


def first_fired(records: Iterable[AlertRecord], accepted: Mapping[str, float]) -> dict[str, float]:
    """Per accepted event (its accept instant by id, s): the earliest record of a 'fired'
    change (or a bare alert snapshot) whose event ids hold it, minus the accept, in s.
    Other changes (resolved, escalated, ...) say nothing about how fast the alert came."""
    lags: dict[str, float] = {}
    for at, change, ids in records:
        if change not in (None, "fired"):
            continue
        for i in ids:
            if i in accepted:
                lag = at - accepted[i]
                lags[i] = min(lag, lags.get(i, lag))
    return lags


def delivery_records(arrivals: Iterable[tuple[float, Any]]) -> list[AlertRecord]:
    """A webhook receiver's (arrival, payload) as alert records: a delivery's body is the
    alert change as published (``{"change": ..., "alert": {... "event_ids": ...}}``)."""
    return [(at, *alert_trigger_ids(payload)) for at, payload in arrivals]


def webhook_summary(
    delivered: Iterable[AlertRecord],
    published: Iterable[AlertRecord],
    accepted: Mapping[str, float],
    red_flags: Collection[str],
) -> dict[str, Any]:
    """accept -> webhook delivered per red-flag event, with what was expected: every
    accepted red-flag event whose 'fired' alert was published (or was delivered, should
    the alert record have been missed). An expected event without a delivery is counted
    as undelivered, not left out of the percentiles silently."""
    red = {i: at for i, at in accepted.items() if i in red_flags}
    lags = first_fired(delivered, red)
    expected = set(first_fired(published, red)) | set(lags)
    return {
        **summarize_ms(list(lags.values())),
        "expected": len(expected),
        "delivered": len(lags),
        "undelivered": len(expected - set(lags)),
    }
