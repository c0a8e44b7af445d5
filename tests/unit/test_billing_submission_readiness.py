"""The readiness gates on the submission plan (issue 20 item 4, billing.submission): a
blocked group is refused and kept for the next run, an override lets a line out only while
it holds every blocked code the line has, a billed line later blocked is neither amended
nor voided, and the project's billing fixtures without fact streams block nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from billing.readiness import ReadinessConfig, ReadinessFacts
from billing.state import PatientBillingState
from billing.submission import (
    Override,
    ReadinessInputs,
    claims_in_range,
    line_id,
    line_text,
    plan_submission,
)
from schemas.events import DEFAULT_ORG
from tests.unit.test_billing_readiness import (
    AS_OF,
    FEES,
    NPI,
    data_days,
    parse,
    poc,
    rpm,
    started,
)
from tests.unit.test_billing_submission import AS_OF as EXAMPLE_AS_OF
from tests.unit.test_billing_submission import EVERYTHING, recorded
from tests.unit.test_billing_submission import states as example_states

CONSENTS_SENT = ReadinessConfig(streams={"": {"consent": "sent"}})


def scenario(events: list[dict[str, Any]]) -> tuple[dict[str, PatientBillingState], ReadinessFacts]:
    states: dict[str, PatientBillingState] = {}
    facts = ReadinessFacts()
    for ev in parse(events):
        states.setdefault(ev.patient_id, PatientBillingState(patient_id=ev.patient_id)).apply(ev)
        facts.apply(ev)
    return states, facts


def inputs(facts: ReadinessFacts, *overrides: Override) -> ReadinessInputs:
    return ReadinessInputs(facts, FEES, {NPI: "TEST-01"}, overrides, CONSENTS_SENT)


BASE = [started(), *data_days(), poc("2026-03-01")]  # no consent: every line is blocked


def test_a_blocked_line_is_refused_and_an_override_holds_while_it_holds_every_blocked_code() -> (
    None
):
    states, facts = scenario(BASE)
    plan = plan_submission(
        DEFAULT_ORG, states, [], [], *EVERYTHING, AS_OF, "csv", None, readiness=inputs(facts)
    )
    assert plan.claims == [] and plan.refused
    assert {a.checks_text for a in plan.refused} == {
        "CONSENT_MISSING+PROCEDURE_UNKNOWN+RPM_UNKNOWN+SPEND_UNKNOWN"
    }
    assert line_text(plan.refused[0].line) == "p-1 ep-1 98975 2026-03-01"

    lets_out = [
        Override(i, line_id(a.line), frozenset({"CONSENT_MISSING"}))
        for i, a in enumerate(plan.refused, 1)
    ]
    plan = plan_submission(
        DEFAULT_ORG,
        states,
        [],
        [],
        *EVERYTHING,
        AS_OF,
        "csv",
        None,
        readiness=inputs(facts, *lets_out),
    )
    assert plan.refused == [] and plan.claims
    stored = [plan.readiness_of(ln) for _, ln in plan.record]
    assert {(r.readiness, r.override_id is not None) for r in stored if r} == {("blocked", True)}
    assert None not in stored

    # a new blocked code (an RPM period over the line's) is not one the override held
    states, facts = scenario([*BASE, rpm("2026-03-01", "2026-03-31", on="2026-04-01")])
    plan = plan_submission(
        DEFAULT_ORG,
        states,
        [],
        [],
        *EVERYTHING,
        AS_OF,
        "csv",
        None,
        readiness=inputs(facts, *lets_out),
    )
    assert plan.claims == [] and {"CONSENT_MISSING", "RPM_OVERLAP"} <= set(plan.refused[0].checks)


def test_a_billed_line_that_is_blocked_later_is_neither_amended_nor_voided() -> None:
    states, facts = scenario(BASE)
    consents_sent = inputs(facts)
    first = plan_submission(
        DEFAULT_ORG,
        states,
        [],
        [],
        *EVERYTHING,
        AS_OF,
        "csv",
        None,
        readiness=ReadinessInputs(facts, FEES, {NPI: "TEST-01"}),  # consents not sent yet
    )
    assert first.claims and first.refused == []
    history = recorded([ln for _, ln in first.record], 1, [cid for cid, _ in first.record])
    taken = [c.claim_id for c in first.claims]
    again = plan_submission(
        DEFAULT_ORG,
        states,
        history,
        taken,
        *EVERYTHING,
        AS_OF,
        "csv",
        None,
        readiness=consents_sent,
    )
    assert again.claims == [] and again.withdrawn == []  # no void, no replacement
    assert again.refused  # still named: its group would not go out now


def test_the_projects_billing_fixtures_without_fact_streams_block_nothing() -> None:
    st = example_states()
    everything = claims_in_range(st.values(), EXAMPLE_AS_OF, *EVERYTHING)  # type: ignore[arg-type]
    for readiness in (None, ReadinessInputs(fees=FEES, localities={NPI: "TEST-01"})):
        plan = plan_submission(
            DEFAULT_ORG, st, [], [], *EVERYTHING, EXAMPLE_AS_OF, "csv", None, readiness=readiness
        )  # type: ignore[arg-type]
        assert plan.refused == []
        assert sorted(ln.sort_key() for _, ln in plan.record) == sorted(
            ln.sort_key() for ln in everything
        )
        assert {plan.readiness_of(ln).readiness for _, ln in plan.record} == {"warn"}  # type: ignore[union-attr]
    assert dt.date(2026, 11, 10) in {ln.date_of_service for ln in everything}
