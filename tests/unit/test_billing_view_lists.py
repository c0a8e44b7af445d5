"""The billing view's lists of current periods (issue 17: "close to 16 days" listed 146 of
200 patients, 84 of them 10 or more days away, cut silently at 100, and hid the patients at
risk of billing nothing)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from billing.rules import PeriodProgress, progress_text
from streams.http.pages.billing import CLOSE_DAYS, CLOSE_LIMIT, watch_periods

START = dt.date(2026, 11, 1)


def progress(patient: str, data_days: int, days_left: int) -> SimpleNamespace:
    period = PeriodProgress(
        episode_id=f"{patient}-ep",
        period_index=0,
        period_start=START,
        period_end=START + dt.timedelta(days=29),
        data_days=data_days,
        days_left=days_left,
        days_needed=max(0, 16 - data_days),
        earned=None,
        on_track_for=None,
        summary="",
        codes=progress_text(data_days, days_left),
    )
    return SimpleNamespace(patient_id=patient, period=period)


def test_close_means_a_few_days_away_and_the_cut_is_said() -> None:
    rows = [progress(f"p{i:03d}", 11 + i % 5, 10) for i in range(150)]  # 1-5 days missing
    rows += [progress("far", 4, 20), progress("met", 18, 5), progress("gone", 12, 2)]
    watch = watch_periods(rows)
    assert watch.close_total == 150 and len(watch.close) == CLOSE_LIMIT
    ids = {r["patient_id"] for r in watch.close}
    assert not ids & {"far", "met", "gone"}  # 12 days away; 98977 met; out of reach
    slack = [r["days_left"] - r["days_needed"] for r in watch.close]
    assert slack == sorted(slack) and max(r["days_needed"] for r in watch.close) <= CLOSE_DAYS


def test_the_periods_billing_nothing_yet_are_listed_fewest_days_left_first() -> None:
    watch = watch_periods(
        [progress("a", 0, 20), progress("b", 1, 3), progress("c", 2, 10), progress("d", 0, 3)]
    )
    assert [r["patient_id"] for r in watch.nothing] == ["d", "b", "a"]  # c has 98985
    assert watch.nothing_total == 3
    assert watch.nothing[0]["summary"] == "98977 out of reach; needs 2 for 98985 in 3 days"
