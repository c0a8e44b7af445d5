"""`rtm chaos`'s scenarios, settings, figures and table (what the command line needs
before anything runs; the runner is ``rtm.bench.chaos``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

SCENARIOS = (
    "worker_kills",
    "db_outage",
    "kafka_outage",
    "gateway_kills",
    "rebalance",
    "db_restarts",
    "kafka_sigkill",
)
SCENARIO_CODES = {
    "worker_kills": "wk",
    "db_outage": "do",
    "kafka_outage": "ko",
    "gateway_kills": "gk",
    "rebalance": "rb",
    "db_restarts": "dr",
    "kafka_sigkill": "ks",
}
COHORT_START = dt.date(2026, 9, 1)
Log = Callable[[str], None]


@dataclass(frozen=True)
class ChaosConfig:
    patients: int = 40
    days: int = 45
    seed: int = 7
    worker_kills: int = 10
    db_outage_s: float = 60.0
    kafka_outage_s: float = 30.0
    gateway_kills: int = 5
    db_restarts: int = 10
    batch_size: int = 50
    lanes: int = 4
    scenarios: tuple[str, ...] = SCENARIOS
    settle_timeout_s: float = 300.0

    @property
    def as_of(self) -> dt.datetime:
        end = COHORT_START + dt.timedelta(days=self.days + 3)
        return dt.datetime(end.year, end.month, end.day, tzinfo=dt.UTC)


# the CI sample: every scenario, small cohort, short faults (about 3 minutes in all)
QUICK = ChaosConfig(
    patients=12,
    days=30,
    worker_kills=3,
    db_outage_s=8.0,
    kafka_outage_s=8.0,
    gateway_kills=2,
    db_restarts=10,
    batch_size=25,
    settle_timeout_s=120.0,
)


@dataclass
class Figures:
    scenario: str
    faults: str = ""
    events: int = 0
    acked: int = 0
    acked_not_stored: int = 0
    stored_twice: int = 0
    alerts_expected: int = 0
    alerts_missing: int = 0
    alerts_extra: int = 0
    alerts_differing: int = 0
    billing_differences: int = 0
    catch_up_s: float | None = None
    http_503: int = 0
    retry_after_missing: int = 0
    http_5xx_other: int = 0
    ok_while_broker_down: int = 0
    transport_errors: int = 0
    webhooks_expected: int = 0
    webhooks_undelivered: int = 0
    task_failures: int = 0  # supervised (logged, retried) exceptions in the worker's tasks
    unexpected_exits: int = 0
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    MUST_BE_ZERO = (
        "acked_not_stored",
        "stored_twice",
        "alerts_missing",
        "alerts_extra",
        "alerts_differing",
        "billing_differences",
        "retry_after_missing",
        "http_5xx_other",
        "ok_while_broker_down",
        "webhooks_undelivered",
        "unexpected_exits",
    )

    @property
    def ok(self) -> bool:
        return all(getattr(self, name) == 0 for name in self.MUST_BE_ZERO)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


COLUMNS = (
    ("scenario", "scenario"),
    ("faults", "faults"),
    ("events", "events"),
    ("acked", "acked"),
    ("acked_not_stored", "acked, not stored"),
    ("stored_twice", "stored twice"),
    ("alerts_expected", "alerts"),
    ("alerts_missing", "missing"),
    ("alerts_extra", "extra"),
    ("alerts_differing", "differing"),
    ("billing_differences", "billing diffs"),
    ("catch_up_s", "catch-up s"),
    ("http_503", "503s"),
    ("http_5xx_other", "other 5xx"),
    ("ok_while_broker_down", "200 w/o broker"),
    ("webhooks_expected", "webhooks"),
    ("webhooks_undelivered", "undelivered"),
    ("task_failures", "task failures (retried)"),
    ("unexpected_exits", "exits"),
)


def render_table(result: dict[str, Any]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = [
        "| " + " | ".join("n/a" if s[k] is None else str(s[k]) for k, _ in COLUMNS) + " |"
        for s in result["scenarios"]
    ]
    verdict = "OK: nothing lost, nothing doubled" if result["ok"] else "FAILED"
    return "\n".join([head, rule, *rows, "", f"{verdict} ({result['elapsed_s']} s)"])
