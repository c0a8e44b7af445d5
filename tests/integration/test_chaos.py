"""`rtm chaos`, the CI sample (issue 11 part 1): every scenario on a small cohort with
short faults (about 3 minutes in all); the full run is `rtm chaos` (docs/reliability.md).

Two scenarios stop the shared PostgreSQL and Kafka of this machine's test services: the
scenario itself starts them again, and the fixture below checks they answer afterwards
(so a failure here does not take the rest of the suite with it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra import services
from rtm.bench.chaos import run_chaos
from rtm.bench.chaos_report import QUICK, render_table
from streams.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def restored(base_settings: Settings) -> Iterator[Settings]:
    yield base_settings
    services.up(base_settings, log=print)  # idempotent: starts whatever a failure left down


def test_chaos_sample_loses_nothing_and_doubles_nothing(restored: Settings) -> None:
    result = run_chaos(restored, QUICK, log=print)
    print(render_table(result))
    by_name = {s["scenario"]: s for s in result["scenarios"]}
    assert set(by_name) == {
        "worker_kills",
        "db_outage",
        "kafka_outage",
        "gateway_kills",
        "rebalance",
        "db_restarts",
        "kafka_sigkill",
    }
    for name, s in by_name.items():
        assert s["acked"] == s["events"] > 0, (name, s)  # every event was acknowledged
        assert s["alerts_expected"] > 0, (name, s)  # the cohort exercises the rules
        for figure in (
            "acked_not_stored",
            "stored_twice",
            "alerts_missing",
            "alerts_extra",
            "alerts_differing",
            "billing_differences",
            "http_5xx_other",
            "retry_after_missing",
            "ok_while_broker_down",
            "webhooks_undelivered",
            "unexpected_exits",
        ):
            assert s[figure] == 0, (name, figure, s)
        assert s["catch_up_s"] is not None, (name, s)
    # the broker outage was felt: the gateway said 503 (with Retry-After), not 200 or 500
    assert by_name["kafka_outage"]["http_503"] > 0, by_name["kafka_outage"]
    # (the chaos stacks' produce timeout, 3 s, is shorter than every broker outage: a 503
    # is always seen)
    assert by_name["kafka_sigkill"]["http_503"] > 0, by_name["kafka_sigkill"]
    # the restarts met the worker's timers (supervised, retried) and webhooks reached the
    # receiver anyway
    restarts = by_name["db_restarts"]
    assert restarts["faults"].startswith("10 PostgreSQL restarts"), restarts
    assert restarts["webhooks_expected"] > 0 and restarts["task_failures"] > 0, restarts
    assert result["ok"]
