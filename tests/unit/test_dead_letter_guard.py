"""The dead-letter limit: a bad deploy halts ingestion instead of dead-lettering a stream."""

from __future__ import annotations

import pytest

from streams.services.ingest import DeadLetterGuard, Decoded


def guard() -> DeadLetterGuard:
    return DeadLetterGuard(max_consecutive=100, max_ratio=0.5, window_s=60.0, min_records=200)


@pytest.mark.parametrize(
    ("batches", "halts_at"),
    [
        # (records, dead) per batch, one second apart
        ([(50, 50), (40, 40)], None),  # 90 in a row: under 100, and under 200 seen
        ([(50, 50), (60, 60)], 1),  # 110 in a row
        ([(50, 50), (10, 9), (60, 60)], None),  # a good record ends the run; 119/120 < 200 seen
        ([(100, 40), (100, 40), (100, 40)], None),  # 40 % over the window
        ([(100, 40), (100, 50), (100, 80)], 2),  # 90 of 200 is 45 %; then 170 of 300 > 50 %
        ([(1000, 0), (300, 60)], None),  # a few bad records in a healthy stream
    ],
)
def test_halts_on_a_run_or_a_share_of_dead_letters(
    batches: list[tuple[int, int]], halts_at: int | None
) -> None:
    g = guard()
    reasons = [g.check(float(i), n, d) for i, (n, d) in enumerate(batches)]
    halted = [i for i, r in enumerate(reasons) if r is not None]
    assert (halted[0] if halted else None) == halts_at, reasons


def test_the_window_forgets_old_batches() -> None:
    g = guard()
    assert g.check(0.0, 150, 140) is None  # 140/150: not judged under 200 records
    assert g.check(61.0, 100, 60) is None  # the first batch left the window
    assert g.check(62.0, 100, 0) is None


def test_a_halting_batch_is_not_counted() -> None:
    g = guard()
    assert g.check(0.0, 120, 120) is not None  # would be 120 in a row
    assert g.check(1.0, 10, 0) is None  # state unchanged by the refused batch
    assert g.consecutive == 0


@pytest.mark.parametrize(
    ("flags", "halts"),
    [
        # one fetch holding a storm and the good records after it: still a run of 300
        ([True] * 300 + [False] * 2, True),
        ([False] * 2 + [True] * 300, True),  # the run at the end
        ([True] * 60 + [False] + [True] * 60, False),  # two runs of 60
        ([False] + [True] * 150 + [False], True),  # a run between good records
        ([True] * 99 + [False] * 5, False),
    ],
)
def test_a_run_counts_in_record_order_whatever_the_fetch(flags: list[bool], halts: bool) -> None:
    """The run is in record order: the worker may fetch a storm and the good records after it
    in one batch (a busy box: everything arrives before the first poll) or in pieces."""
    batch = Decoded(dead_flags=flags)
    g = guard()
    reason = g.check(0.0, len(flags), sum(flags), batch.dead_runs())
    assert (reason is not None) == halts, reason


def test_a_run_carries_over_into_the_next_batch() -> None:
    g = guard()
    first = Decoded(dead_flags=[False] + [True] * 60)
    assert g.check(0.0, 61, 60, first.dead_runs()) is None
    second = Decoded(dead_flags=[True] * 50 + [False])
    assert g.check(1.0, 51, 50, second.dead_runs()) is not None  # 60 + 50 in a row
