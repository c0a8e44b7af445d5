"""A patient is (organisation, patient_id) in the pure domain (issue 16 item 4): one
patient_id of two organisations is two states, with alert ids, ledger rows and claim ids
of their own; states stored before keep their alerts' ids; the offline evaluators key the
way the worker does (a line without an organisation stamp is DEFAULT_ORG's)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerts.batch import AckItem, EventItem, apply_batch
from alerts.evaluate import fold_changes, run_alerts_evaluate
from alerts.models import alert_id
from alerts.rules import acknowledge, on_event
from alerts.state import decode_state, encode_state, new_state, state_to_dict
from billing.claims837 import line_control_number, plan_claims
from billing.evaluate import fold_jsonl
from billing.ledger import ledger_rows, states_from_rows
from billing.rules import compute_claims
from billing.state import fold_events
from schemas.events import DEFAULT_ORG, EVENT_ADAPTER, Event, key_text
from tests.conftest import EventFactory

AS_OF = dt.datetime(2026, 12, 15, tzinfo=dt.UTC)


def _events(raw: list[dict[str, Any]], org: str | None = None) -> list[Event]:
    stamp = {"org_id": org} if org else {}
    return [EVENT_ADAPTER.validate_python({**r, **stamp}) for r in raw]


def _history(f: EventFactory, pid: str) -> list[dict[str, Any]]:
    return [
        f.episode_started(pid, at="2026-10-01T09:00:00-05:00"),
        *f.daily_exercises(pid, dt.date(2026, 10, 1), 17),
        f.pain(pid, 9, "2026-10-21T10:00:00-05:00"),
    ]


def test_the_key_and_its_text() -> None:
    (ev,) = _events([EventFactory().pain("p-1", 3, "2026-10-21T10:00:00-05:00")])
    assert ev.patient_key == (DEFAULT_ORG, "p-1")
    stamped = ev.model_copy(update={"org_id": "clinic-a"})
    assert stamped.patient_key == ("clinic-a", "p-1")
    assert key_text(stamped.patient_key) == "clinic-a/p-1"


def test_one_patient_id_of_two_organisations_is_two_states_with_their_own_alerts() -> None:
    f = EventFactory()
    raw = _history(f, "p-1")
    a, b = _events(raw, "org-a"), _events(raw, "org-b")  # the very same event ids too
    result = apply_batch({}, [EventItem(e) for e in [*a, *b]])
    assert sorted(result.states) == [("org-a", "p-1"), ("org-b", "p-1")]
    fired = [c.alert for c in result.changes if c.change == "fired"]
    assert sorted((x.org_id, x.kind) for x in fired) == [
        ("org-a", "pain_high"),
        ("org-b", "pain_high"),
    ]
    assert fired[0].id != fired[1].id and fired[0].event_ids == fired[1].event_ids
    assert fired[0].id == alert_id("p-1", "pain_high", raw[-1]["event_id"], fired[0].org_id)
    # an acknowledgement reaches its own organisation's patient only
    b_alert = next(x for x in fired if x.org_id == "org-b")
    at = dt.datetime(2026, 10, 22, tzinfo=dt.UTC)
    acked = apply_batch(
        result.states, [AckItem("p-1", b_alert.id, at, "c", org_id="org-a")]
    )  # A's patient has no such alert: nothing happens
    assert acked.changes == []
    acked = apply_batch(result.states, [AckItem("p-1", b_alert.id, at, "c", org_id="org-b")])
    assert [(c.change, c.alert.org_id) for c in acked.changes] == [("acknowledged", "org-b")]
    # the offline fold keys the same way, and dedupes event ids per organisation
    states, changes = fold_changes(iter([*a, *b, *a]))
    assert sorted(states) == sorted(result.states)
    assert [c.alert.id for c in changes] == [c.alert.id for c in result.changes]


def test_the_stored_state_names_its_organisation() -> None:
    f = EventFactory()
    s = new_state("p-1", "org-a")
    for e in _events(_history(f, "p-1"), "org-a"):
        s, _ = on_event(s, e)
    raw = encode_state(s)
    stored = orjson.loads(raw)
    assert stored["o"] == "org-a" and stored["a"]
    assert not [a for a in stored["a"] if "org_id" in a]  # the state's, not each alert's
    again = decode_state(raw)
    assert again == s and again.key == ("org-a", "p-1")
    assert all(x.org_id == "org-a" for x in again.alerts.values())


def test_states_stored_before_keep_their_alert_ids() -> None:
    """A version-3 state (before patients were scoped by organisation) decodes with
    ``legacy_ids``: its alerts, cool-downs and billing periods keep the ids they were
    fired with, so a period's alert still resolves and no trigger fires twice."""
    f = EventFactory()
    legacy = new_state("p-1", "org-a")
    legacy.legacy_ids = True
    raw = _events(_history(f, "p-1"), "org-a")
    for e in raw[:-1]:
        legacy, _ = on_event(legacy, e)
    v3 = state_to_dict(legacy)
    v3["v"] = 3
    del v3["li"]  # what migration 013 leaves: version 3, the organisation added as "o"
    old = decode_state(orjson.dumps(v3))
    assert old.legacy_ids and old.key == ("org-a", "p-1")
    old, changes = on_event(old, raw[-1])
    (fired,) = [c.alert for c in changes]
    assert fired.id == alert_id("p-1", "pain_high", raw[-1].event_id, None)
    assert fired.org_id == "org-a"
    assert decode_state(encode_state(old)) == old  # written back as version 4, still legacy
    # an acknowledgement of a stored (resolved) snapshot must be of this very patient
    other = fired.model_copy(update={"org_id": "org-b", "status": "resolved"})
    with pytest.raises(KeyError):
        acknowledge(new_state("p-1", "org-a"), other.id, AS_OF, "c", other)


def test_ledger_rows_and_billing_folds_key_by_organisation() -> None:
    f = EventFactory()
    raw = _history(f, "p-1")
    a, b = _events(raw, "org-a"), _events(raw[:10], "org-b")
    rows = ledger_rows([*a, *b])
    assert {r[0] for r in rows.data_days} == {"org-a", "org-b"}
    assert len(rows.episode_events) == 2  # one event id, two organisations: two rows
    folded = fold_events([*a, *b])
    assert sorted(folded) == [("org-a", "p-1"), ("org-b", "p-1")]
    names = (
        ("org_id", "patient_id", "local_date", "episode_id", "first_event_id"),
        (
            "org_id",
            "event_id",
            "patient_id",
            "episode_id",
            "local_date",
            "occurred_at",
            "utc_offset_s",
            "minutes",
            "clinician_role",
            "interactive",
            "supersedes",
        ),
        ("org_id", "event_id", "patient_id", "type", "episode_id", "occurred_at", "payload"),
    )
    back = states_from_rows(
        *(
            [dict(zip(n, r, strict=True)) for r in table]
            for n, table in zip(
                names, (rows.data_days, rows.time_logs, rows.episode_events), strict=True
            )
        )
    )
    for key in folded:
        assert back[key].data_dates == folded[key].data_dates
    lines = {key: compute_claims([st], AS_OF, include_open=True) for key, st in folded.items()}
    assert lines[("org-a", "p-1")] != lines[("org-b", "p-1")]


def test_claim_and_line_ids_name_a_non_default_organisation() -> None:
    f = EventFactory()
    (state,) = fold_events(_events(_history(f, "p-1"))).values()
    claims = compute_claims([state], AS_OF)
    assert claims
    ids = {
        org: {c.claim_id for c in plan_claims([], claims, *_range(), org_id=org)}
        for org in (DEFAULT_ORG, "org-a", "org-b")
    }
    assert not ids["org-a"] & ids["org-b"] and not ids[DEFAULT_ORG] & ids["org-a"]
    assert {c.claim_id for c in plan_claims([], claims, *_range())} == ids[DEFAULT_ORG]
    line = claims[0]
    assert line_control_number(line) == line_control_number(line, DEFAULT_ORG)
    assert line_control_number(line, "org-a") != line_control_number(line, "org-b")


def _range() -> tuple[dt.date, dt.date]:
    return dt.date(2000, 1, 1), dt.date(2100, 1, 1)


def test_offline_evaluators_key_a_file_by_organisation(tmp_path: Path) -> None:
    """A file with one patient_id under two organisation stamps (and unstamped lines,
    DEFAULT_ORG's) evaluates as three patients, as the worker would store them."""
    f = EventFactory()
    raw = _history(f, "p-1")
    lines = [
        *(json.dumps({**r, "org_id": "org-a"}) for r in raw),
        *(json.dumps({**r, "org_id": "org-b"}) for r in raw),
        *(json.dumps(r) for r in raw),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out, err = io.StringIO(), io.StringIO()
    assert run_alerts_evaluate(path, AS_OF, out, err=err) == 0, err.getvalue()
    pain = [
        a for a in (json.loads(x) for x in out.getvalue().splitlines()) if a["kind"] == "pain_high"
    ]
    assert sorted(a["org_id"] for a in pain) == sorted([DEFAULT_ORG, "org-a", "org-b"])
    assert len({a["id"] for a in pain}) == 3
    states, errors = fold_jsonl(lines)
    assert not errors and sorted(states) == [
        (DEFAULT_ORG, "p-1"),
        ("org-a", "p-1"),
        ("org-b", "p-1"),
    ]
