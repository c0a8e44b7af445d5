"""Per-organisation intake rule sets (issue 18 item 2): the worker's step routes each
organisation's intakes under that organisation's newest stored rule set (else the worker's),
records the version used, and times intake_overdue by it; a rule set stored meanwhile takes
effect at the next refresh."""

from __future__ import annotations

import datetime as dt

from alerts.models import AlertConfig
from intake.rules import DEFAULT_RULES, IntakeRules
from tests.conftest import EventFactory
from tests.unit.test_step_in_process import NOW, Step

FAST_ORG = "clinic-fast"


def fast(version: str = "fast-1", hours: float = 0.0025) -> IntakeRules:
    """Urgent intakes due 9 s after submission."""
    urgent = DEFAULT_RULES.service_levels["urgent"].model_copy(update={"hours": hours})
    return DEFAULT_RULES.model_copy(
        update={
            "version": version,
            "service_levels": {**DEFAULT_RULES.service_levels, "urgent": urgent},
        }
    )


def screened(f: EventFactory, patient: str, org: str, at: dt.datetime) -> dict[str, object]:
    return {**f.intake(patient, at.isoformat(), red_flags=["saddle_anesthesia"]), "org_id": org}


async def test_each_organisation_is_routed_under_its_own_rule_set() -> None:
    step = Step()
    step.store.rule_sets[FAST_ORG] = fast()
    f = EventFactory()
    at = NOW - dt.timedelta(minutes=5)
    p1, p2 = f.patient(1), f.patient(2)
    await step.events(screened(f, p1, FAST_ORG, at), screened(f, p2, "default", at))
    routed = {k[0]: w.assessment for k, w in step.store.intakes.items()}
    assert routed[FAST_ORG] is not None and routed["default"] is not None
    assert routed[FAST_ORG].rules_version == "fast-1"
    assert routed[FAST_ORG].due_at - at == dt.timedelta(seconds=9)
    assert routed["default"].rules_version == DEFAULT_RULES.version
    assert routed["default"].due_at - at == dt.timedelta(hours=1)
    # the timer: the fast organisation's intake is overdue 9 s in, the other's is not yet
    await step.tick(at + dt.timedelta(seconds=10))
    overdue = {a.org_id for a in step.store.alerts.values() if a.kind == "intake_overdue"}
    assert overdue == {FAST_ORG}


async def test_a_rule_set_stored_meanwhile_takes_effect_at_the_next_refresh() -> None:
    step = Step()
    step.ingest.rules_refresh_s = 0.0  # read before every batch
    f = EventFactory()
    at = NOW - dt.timedelta(minutes=5)
    await step.events(screened(f, f.patient(1), FAST_ORG, at))
    step.store.rule_sets[FAST_ORG] = fast("fast-2")
    await step.events(screened(f, f.patient(2), FAST_ORG, at))
    versions = sorted(
        w.assessment.rules_version for w in step.store.intakes.values() if w.assessment
    )
    assert versions == ["fast-2", DEFAULT_RULES.version]


def test_the_worker_s_rule_set_is_the_fallback() -> None:
    config = AlertConfig(intake_rules=fast("worker-1"), intake_rules_by_org={FAST_ORG: fast()})
    assert config.intake_rules_for(FAST_ORG).version == "fast-1"
    assert config.intake_rules_for("elsewhere").version == "worker-1"
