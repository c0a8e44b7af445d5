"""The worker stores each claim line's readiness as it streams (issue 20 item 2), on the
in-memory store through ``Ingest.record_batch`` and the refresh off the ingest path
(``streams.services.refresh``): the stored lines equal ``assess`` over the whole log as of
the same time, whatever the batches, their order, duplicates and late facts; an
organisation's first fact of a stream changes the lines of patients who got no event.
(The PostgreSQL path: tests/integration/test_readiness_stream.py.)"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import random
import re
from typing import Any

from billing.readiness import ReadinessConfig, ReadinessFacts, assess
from billing.rules import compute_claims
from billing.state import PatientBillingState
from streams.db.readiness import READINESS_EVENT_TYPES
from streams.services.refresh import refresh_once
from tests.unit.test_billing_readiness import (
    BASE,
    consent,
    data_days,
    ok_facts,
    parse,
    poc,
    rpm,
    started,
)
from tests.unit.test_step_in_process import NOW, Step

# p-2: a second patient of the organisation, with no facts of its own
P2 = [started(patient="p-2", on="2026-04-01T09:00:00Z"), *data_days("p-2", "2026-04-01")]


def offline(
    events: list[dict[str, Any]], as_of: dt.datetime = NOW
) -> set[tuple[str, str, str, str, str]]:
    """(patient, cpt, DOS, readiness, checks) by ``assess`` over the log (no fees: the
    in-memory store holds none, so KX is not judged on either side)."""
    states: dict[str, PatientBillingState] = {}
    facts = ReadinessFacts()
    for ev in parse(events):
        states.setdefault(ev.patient_id, PatientBillingState(patient_id=ev.patient_id)).apply(ev)
        facts.apply(ev)
    lines = compute_claims(states.values(), as_of, include_open=True)
    assessed = assess(
        lines, states, facts, as_of, [], lambda _o, _l: None, ReadinessConfig(), strict_fees=False
    )
    return {
        (
            a.line.patient_id,
            a.line.cpt,
            a.line.date_of_service.isoformat(),
            a.readiness,
            a.checks_text,
        )
        for a in assessed
    }


async def stored(step: Step) -> set[tuple[str, str, str, str, str]]:
    """The lines stored once the refresh has folded every marked patient."""
    while await refresh_once(step.store, step.clock):
        pass
    return {
        (
            a.line.patient_id,
            a.line.cpt,
            a.line.date_of_service.isoformat(),
            a.readiness,
            a.checks_text,
        )
        for lines in step.store.line_readiness.values()
        for _, a, _ in lines
    }


async def test_a_first_fact_changes_the_lines_of_every_patient_of_the_organisation() -> None:
    step = Step()
    await step.events(*BASE, *P2)
    before = await stored(step)
    assert {r[3:] for r in before} == {
        ("warn", "CONSENT_UNKNOWN+POC_UNKNOWN+PROCEDURE_UNKNOWN+RPM_UNKNOWN+SPEND_UNKNOWN")
    }
    await step.events(consent("2026-03-01"))  # p-1's consent: the stream is sent now
    after = {r[0:3]: r[3:] for r in await stored(step)}
    p2 = [v for k, v in after.items() if k[0] == "p-2"]
    assert p2 and all(v[0] == "blocked" and "CONSENT_MISSING" in v[1] for v in p2)
    assert all("CONSENT" not in v[1] for k, v in after.items() if k[0] == "p-1")
    assert await stored(step) == offline([*BASE, *P2, consent("2026-03-01")])


async def test_any_batches_order_duplicates_and_late_facts_store_what_the_log_gives() -> None:
    facts = [
        *ok_facts(),
        poc("2026-03-01", days=10, patient="p-2", episode="ep-1"),  # expired before its DOS
        rpm("2026-04-20", "2026-05-20", patient="p-2"),  # overlaps p-2's period
        consent("2026-04-05", patient="p-2"),  # after p-2's set-up DOS
    ]
    events = [*BASE, *P2, *facts]
    expected = offline(events)
    assert {r[3] for r in expected} == {"ready", "blocked"}  # the scenario gates something
    for seed in range(3):
        step = Step()
        shuffled = random.Random(seed).sample(events, len(events))
        late = shuffled[len(shuffled) // 2 :]
        batches = [shuffled[: len(shuffled) // 2], late[:5], late[5:], late[:3]]  # a re-delivery
        for batch in batches:
            if batch:
                await step.events(*batch)
        assert await stored(step) == expected, seed


async def test_a_fact_within_the_future_skew_counts_as_the_log_will_give_it() -> None:
    step = Step()
    later = NOW + dt.timedelta(minutes=2)
    fact = consent(later.isoformat().replace("+00:00", "Z"))
    await step.events(*BASE, fact)  # inside the future skew: stored
    assert await stored(step) == offline([*BASE, fact], later)
    assert {r[4].split("+")[0] for r in await stored(step)} == {"CONSENT_AFTER_DOS"}


def test_the_fact_index_predicate_is_the_querys_type_list() -> None:
    """The partial index events_readiness_facts is used only for the literal list it was
    made with: the migration and READINESS_EVENT_TYPES must name the same types."""
    sql = (
        importlib.resources.files("infra") / "migrations" / "037_events_readiness_facts_index.sql"
    ).read_text()
    (listed,) = re.findall(r"WHERE type IN \(([^)]*)\)", sql)
    assert re.findall(r"'([^']+)'", listed) == list(READINESS_EVENT_TYPES)
