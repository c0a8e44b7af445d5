"""The worker keeps intake state (issue 18 item 3): the ingest step folds intake.submitted,
intake.contacted and an episode.started naming its intake into one state per (organisation,
patient, intake), in the batch's write, with its routing. Streamed in any arrival order and
any split into batches, the stored intakes give what ``rtm intake evaluate`` gives for the
same file (one engine, two drivers)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from intake import engine
from intake.evaluate import evaluate, render
from schemas.events import DEFAULT_ORG
from tests.conftest import EventFactory
from tests.unit.test_step_in_process import Step

AS_OF = dt.datetime(2026, 11, 4, 15, tzinfo=dt.UTC)
SBST_LOW = {str(i): 0 for i in range(1, 10)}  # STarT Back: every item "no"


def cohort() -> list[dict[str, Any]]:
    """Intakes of every kind: a red flag (urgent), low back with STarT Back, an amendment
    on an equal instant (the larger event id wins), a contact before its intake, an
    episode.started naming its intake (a contact), one never contacted (breached), and a
    contact of an intake that never arrives."""
    f = EventFactory()
    p = [f.patient(i) for i in range(1, 7)]
    out = [
        f.intake(p[0], "2026-11-02T10:00:00-06:00", red_flags=["saddle_anesthesia"]),
        f.intake(
            p[1],
            "2026-11-02T16:30:00-06:00",
            body_region="low_back",
            answers={"nprs": 4, "sbst": SBST_LOW},
        ),
        f.intake(p[2], "2026-11-02T09:00:00-06:00", answers={"nprs": 3}),
        f.intake(p[2], "2026-11-02T09:00:00-06:00", answers={"nprs": 9}),  # equal instant
        f.intake(p[3], "2026-11-03T08:00:00-06:00"),
        f.intake(p[4], "2026-11-02T11:00:00-06:00", answers={"nprs": 8}),
    ]
    contact = {
        "schema_version": 1,
        "type": "intake.contacted",
        "channel": "phone",
        "clinician_id": "c-01",
    }
    out += [
        {
            **contact,
            "event_id": f._next(),
            "patient_id": p[0],
            "intake_id": f"{p[0]}-in",
            "occurred_at": "2026-11-02T10:40:00-06:00",
        },
        # before its intake (the scheduler's call led to the intake)
        {
            **contact,
            "event_id": f._next(),
            "patient_id": p[3],
            "intake_id": f"{p[3]}-in",
            "occurred_at": "2026-11-03T07:30:00-06:00",
        },
        {
            **contact,
            "event_id": f._next(),
            "patient_id": p[5],
            "intake_id": "never",
            "occurred_at": "2026-11-03T07:30:00-06:00",
        },
        f.episode_started(p[1], "2026-11-03T09:00:00-06:00", intake_id=f"{p[1]}-in"),
    ]
    return out


def offline(events: list[dict[str, Any]]) -> list[str]:
    results, errors = evaluate([json.dumps(e) for e in events], AS_OF)
    assert errors == []
    return [render(r) for r in results]


def streamed(step: Step) -> list[str]:
    states = [w.state for (org, _, _), w in step.store.intakes.items() if org == DEFAULT_ORG]
    return [render(r) for r in engine.results(states, AS_OF)]


async def test_the_stored_intakes_equal_the_offline_command() -> None:
    events = cohort()
    step = Step()
    await step.events(*events)
    got = streamed(step)
    assert got == offline(events)
    assert len(got) == 5  # the contact of an intake that never arrived prints nothing
    routes = {json.loads(line)["patient_id"]: json.loads(line)["route"] for line in got}
    assert sorted(routes.values()).count("urgent") == 1
    # every stored routing names the rule set it was made under
    assert {w.assessment.rules_version for w in step.store.intakes.values() if w.assessment}


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.data())
async def test_any_arrival_order_and_batching_gives_the_same_intakes(data: st.DataObject) -> None:
    events = cohort()
    order = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=3)))
    step = Step()
    for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True):
        await step.events(*order[a:b])
    await step.events(*order[: len(order) // 2])  # a re-delivery changes nothing
    assert streamed(step) == offline(events)
