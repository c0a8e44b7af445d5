"""``rtm_intake_first_contact_seconds`` (issue 18 item 6): the worker observes, once per
intake, the seconds from the intake's submission to its first contact, when that contact
becomes known (the contact's batch, or the intake's when the contact came first), labelled
by route only: whatever the arrival order and batching, a re-delivery or an amendment
observes nothing more."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import EventFactory
from tests.unit.test_intake_worker import cohort
from tests.unit.test_step_in_process import Step

NAME = "rtm_intake_first_contact_seconds"


def observed(step: Step) -> dict[str, tuple[float, float]]:
    """(count, sum) by route; and no label but the route on any sample."""
    out: dict[str, tuple[float, float]] = {}
    for family in step.metrics.registry.collect():
        if family.name != NAME:
            continue
        for s in family.samples:
            assert set(s.labels) <= {"route", "le"}, s.labels  # no patient or intake id
            if s.name in (f"{NAME}_count", f"{NAME}_sum"):
                count, total = out.get(s.labels["route"], (0.0, 0.0))
                if s.name.endswith("_count"):
                    count = s.value
                else:
                    total = s.value
                out[s.labels["route"]] = (count, total)
    return {r: v for r, v in out.items() if v[0]}


def expected(step: Step) -> dict[str, tuple[float, float]]:
    """From the stored intakes: every routed, contacted one, once."""
    out: dict[str, tuple[float, float]] = {}
    for w in step.store.intakes.values():
        if w.assessment is None or w.state.first_contact_at is None:
            continue
        seconds = max((w.state.first_contact_at - w.assessment.submitted_at).total_seconds(), 0)
        count, total = out.get(w.assessment.route, (0.0, 0.0))
        out[w.assessment.route] = (count + 1, total + seconds)
    return out


async def test_each_first_contact_is_observed_once_by_route() -> None:
    events = cohort()
    step = Step()
    await step.events(*events)
    got = observed(step)
    # three intakes contacted: the red flag 40 min after (urgent), one before its intake
    # (no time), one by an episode.started 16.5 h after
    assert sum(c for c, _ in got.values()) == 3
    assert got["urgent"] == (1.0, 40 * 60.0)
    assert sum(t for _, t in got.values()) == 40 * 60 + 16.5 * 3600
    assert got == expected(step)

    # a re-delivery, a second contact and an amended intake observe nothing more
    again = {
        **events[6],
        "event_id": "second-contact",
        "occurred_at": "2026-11-02T12:00:00-06:00",
    }
    amended = {**events[0], "event_id": "amended", "occurred_at": "2026-11-02T10:05:00-06:00"}
    assert again["patient_id"] == amended["patient_id"]
    await step.events(*events, again, amended)
    assert observed(step) == got


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.data())
async def test_any_arrival_order_and_batching_observes_the_same(data: st.DataObject) -> None:
    events = cohort()
    order = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1), max_size=3)))
    step = Step()
    for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True):
        await step.events(*order[a:b])
    await step.events(*order[: len(order) // 2])
    got = observed(step)
    assert sum(c for c, _ in got.values()) == 3
    assert got == expected(step)


async def test_a_contact_after_the_due_time_is_a_breach_of_its_route() -> None:
    f = EventFactory()
    late, on_time = f.patient(1), f.patient(2)
    step = Step()
    await step.events(
        f.intake(late, "2026-11-02T10:00:00-06:00", red_flags=["saddle_anesthesia"]),
        f.intake(on_time, "2026-11-02T10:00:00-06:00", red_flags=["saddle_anesthesia"]),
    )
    assert step.metric("rtm_intake_breaches_total", route="urgent") == 0
    contact = {"schema_version": 1, "type": "intake.contacted", "channel": "phone"}
    await step.events(
        # urgent is due within the hour: two hours is late, 20 minutes is not
        {
            **contact,
            "event_id": "late-call",
            "patient_id": late,
            "intake_id": f"{late}-in",
            "occurred_at": "2026-11-02T12:00:00-06:00",
        },
        {
            **contact,
            "event_id": "on-time-call",
            "patient_id": on_time,
            "intake_id": f"{on_time}-in",
            "occurred_at": "2026-11-02T10:20:00-06:00",
        },
    )
    assert step.metric("rtm_intake_breaches_total", route="urgent") == 1
    assert step.metric("rtm_intake_first_contact_seconds_count", route="urgent") == 2
    assert step.metric("rtm_intake_first_contact_seconds_sum", route="urgent") == 140 * 60
