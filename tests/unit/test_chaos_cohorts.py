"""rtm chaos: each scenario streams a cohort of its own."""

from __future__ import annotations

from rtm.bench.chaos_report import SCENARIO_CODES, SCENARIOS


def test_every_scenario_has_its_own_id_prefix() -> None:
    """Two scenarios sharing a prefix (db_outage and db_restarts by their first letters)
    would post the same event ids: the second would be all duplicates and test nothing."""
    assert set(SCENARIO_CODES) == set(SCENARIOS)
    assert len(set(SCENARIO_CODES.values())) == len(SCENARIO_CODES)
