"""Claim readiness (issue 20 part 2, docs/billing-readiness.md): every gate at its
boundaries, the per-organisation stream switch, KX pricing and year-to-date, as-of,
arrival order and duplicates, and the project's own fixtures (no line blocked when no fact
stream is sent).

The scenario: patient p-1, episode ep-1 started 2026-03-01 (UTC, PT: GP), data days
2026-03-01..03-16, so two lines: 98975 (DOS 03-01) and 98977 (DOS 03-30), both with the
line period 03-01..03-30. Fees from tests/fixtures/billing/fee-schedule.synthetic.csv
(TEST-01): 98975 $19.50, 98977 $43.10 (version 2026-03-12)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.fees import FeeEntry, parse_fee_schedule
from billing.readiness import (
    SEVERITY,
    AssessedLine,
    MissingFees,
    ReadinessConfig,
    ReadinessFacts,
    ThresholdError,
    ThresholdTable,
    assess,
    default_thresholds,
    parse_thresholds,
    readiness_of,
)
from billing.rules import compute_claims
from billing.state import PatientBillingState
from schemas.events import Event, validate_event

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FEES: list[FeeEntry] = parse_fee_schedule(
    (FIXTURES / "billing" / "fee-schedule.synthetic.csv").read_text(encoding="utf-8")
)
NPI = "1234567893"  # the billing NPI of the scenario
OTHER_NPI = "1245319599"
AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SETUP, DEVICE = "98975", "98977"
_ids = itertools.count(1)


def _env(etype: str, patient: str, on: str, **fields: Any) -> dict[str, Any]:
    when = on if "T" in on else f"{on}T12:00:00Z"
    return {
        "event_id": fields.pop("event_id", f"ev-{next(_ids)}"),
        "schema_version": 1,
        "type": etype,
        "patient_id": patient,
        "occurred_at": when,
        **fields,
    }


def started(
    patient: str = "p-1",
    episode: str = "ep-1",
    on: str = "2026-03-01T09:00:00Z",
    role: str = "PT",
    dx: tuple[str, ...] = ("M54.50",),
    org: str | None = None,
) -> dict[str, Any]:
    ev = _env(
        "episode.started",
        patient,
        on,
        episode_id=episode,
        clinician_id="c-1",
        clinician_role=role,
        timezone="UTC",
        program={"sessions_per_week": 5, "exercise_ids": ["bridge"]},
        billing={
            "rendering_npi": NPI,
            "billing_npi": NPI,
            "payer": "medicare",
            "member_id": "MBI1",
            "diagnosis_codes": list(dx),
            "place_of_service": "11",
        },
        setup_education_completed=True,
    )
    if org is not None:
        ev["org_id"] = org
    return ev


def data_days(patient: str = "p-1", first: str = "2026-03-01", n: int = 16) -> list[dict[str, Any]]:
    day = dt.date.fromisoformat(first)
    return [
        _env(
            "exercise.completed",
            patient,
            (day + dt.timedelta(days=i)).isoformat(),
            exercise_id="bridge",
        )
        for i in range(n)
    ]


def with_org(ev: dict[str, Any], org: str | None) -> dict[str, Any]:
    return {**ev, "org_id": org} if org is not None else ev


def consent(on: str, episode: str = "ep-1", patient: str = "p-1", org: str | None = None) -> Any:
    return with_org(
        _env("consent.recorded", patient, on, episode_id=episode, method="written", scope="rtm"),
        org,
    )


def poc(
    on: str,
    days: int = 90,
    npi: str = NPI,
    episode: str = "ep-1",
    patient: str = "p-1",
    org: str | None = None,
    **extra: Any,
) -> Any:
    return with_org(
        _env(
            "plan_of_care.certified",
            patient,
            on,
            episode_id=episode,
            certifier_npi=npi,
            duration_days=days,
            **extra,
        ),
        org,
    )


def procedure(on: str, global_days: int, npi: str = NPI, patient: str = "p-1") -> Any:
    return _env("procedure.recorded", patient, on, surgeon_npi=npi, global_days=global_days)


def rpm(start: str, end: str, patient: str = "p-1", on: str | None = None) -> Any:
    return _env("rpm.enrolled", patient, on or start, period_start=start, period_end=end)


def spend(
    amount: float | str,
    bucket: str = "pt_slp",
    on: str = "2026-03-01",
    year: int = 2026,
    patient: str = "p-1",
    **extra: Any,
) -> Any:
    return _env(
        "therapy_spend.reported",
        patient,
        on,
        year=year,
        amount_allowed_ytd=float(amount),
        bucket=bucket,
        **extra,
    )


def ok_facts(**skip: bool) -> list[dict[str, Any]]:
    """Facts under which the scenario's lines are ready (each stream sent)."""
    out = []
    if not skip.get("consent"):
        out.append(consent("2026-03-01"))
    if not skip.get("poc"):
        out.append(poc("2026-03-01"))
    if not skip.get("procedures"):
        out.append(procedure("2025-01-10", 90))  # long before: sends the stream
    if not skip.get("rpm"):
        out.append(rpm("2025-01-01", "2025-01-31"))
    if not skip.get("spend"):
        out.append(spend(0))
    return out


def parse(events: list[dict[str, Any]]) -> list[Event]:
    out = []
    for raw in events:
        ev = validate_event(raw)
        assert not isinstance(ev, list), (raw, ev)
        out.append(ev)
    return out


def run(
    events: list[dict[str, Any]],
    as_of: dt.datetime = AS_OF,
    config: ReadinessConfig | None = None,
    locality: str | None = "TEST-01",
    thresholds: ThresholdTable | None = None,
) -> list[AssessedLine]:
    states: dict[str, PatientBillingState] = {}
    facts = ReadinessFacts()
    for ev in parse(events):
        states.setdefault(ev.patient_id, PatientBillingState(patient_id=ev.patient_id)).apply(ev)
        facts.apply(ev)
    claims = compute_claims(states.values(), as_of)
    return assess(
        claims,
        states,
        facts,
        as_of,
        FEES,
        lambda _org, _line: locality,
        config or ReadinessConfig(),
        thresholds,
    )


def by_cpt(assessed: list[AssessedLine], patient: str = "p-1") -> dict[str, AssessedLine]:
    return {a.line.cpt: a for a in assessed if a.line.patient_id == patient}


def checks(events: list[dict[str, Any]], cpt: str = DEVICE, **kw: Any) -> set[str]:
    return set(by_cpt(run(events, **kw))[cpt].checks)


BASE = [started(), *data_days()]


# --- the scenario itself ---------------------------------------------------------------------


def test_the_scenario_is_ready_with_every_fact_in_order() -> None:
    lines = by_cpt(run(BASE + ok_facts()))
    assert set(lines) == {SETUP, DEVICE}
    for a in lines.values():
        assert a.checks == () and a.readiness == "ready", a
        assert a.line.modifiers == ("GP",)
        assert a.line.period_start == dt.date(2026, 3, 1)
        assert a.line.period_end == dt.date(2026, 3, 30)
    assert lines[SETUP].line.date_of_service == dt.date(2026, 3, 1)
    assert lines[DEVICE].line.date_of_service == dt.date(2026, 3, 30)
    assert lines[SETUP].price == Decimal("19.50") and lines[DEVICE].price == Decimal("43.10")
    assert lines[DEVICE].year_to_date == Decimal("62.60")


def test_readiness_is_blocked_over_warn_over_ready() -> None:
    assert readiness_of([]) == "ready"
    assert readiness_of(["POC_LATE", "KX_REQUIRED"]) == "warn"
    assert readiness_of(["POC_LATE", "RPM_OVERLAP"]) == "blocked"
    blocked = {c for c, s in SEVERITY.items() if s == "blocked"}
    assert blocked == {
        "CONSENT_MISSING",
        "CONSENT_AFTER_DOS",
        "POC_MISSING",
        "POC_EXPIRED",
        "CERTIFIER_NPI_INVALID",
        "GLOBAL_PERIOD",
        "RPM_OVERLAP",
        "ICD10_NOT_BILLABLE",
    }


def test_checks_are_sorted() -> None:
    a = by_cpt(run(BASE))[DEVICE]  # nothing sent
    assert list(a.checks) == sorted(a.checks)
    assert (
        a.checks_text == "CONSENT_UNKNOWN+POC_UNKNOWN+PROCEDURE_UNKNOWN+RPM_UNKNOWN+SPEND_UNKNOWN"
    )


# --- consent ----------------------------------------------------------------------------------


def test_consent_missing_blocks_every_line() -> None:
    other_episode = consent("2026-03-01", episode="ep-other")  # sends the stream, not ep-1's
    lines = by_cpt(run(BASE + ok_facts(consent=True) + [other_episode]))
    for a in lines.values():
        assert a.checks == ("CONSENT_MISSING",) and a.readiness == "blocked"


def test_consent_one_day_after_the_dos_blocks_on_the_dos_it_does_not() -> None:
    lines = by_cpt(run(BASE + ok_facts(consent=True) + [consent("2026-03-02")]))
    assert lines[SETUP].checks == ("CONSENT_AFTER_DOS",)  # DOS 03-01
    assert lines[DEVICE].checks == ()  # DOS 03-30
    on_dos = by_cpt(run(BASE + ok_facts(consent=True) + [consent("2026-03-01T23:59:00Z")]))
    assert on_dos[SETUP].checks == ()


def test_the_earliest_consent_counts_and_the_date_is_patient_local() -> None:
    late, early = consent("2026-04-01"), consent("2026-03-01T23:30:00-05:00")  # 03-02 in UTC
    assert by_cpt(run(BASE + ok_facts(consent=True) + [late, early]))[SETUP].checks == ()


# --- plan of care -----------------------------------------------------------------------------


def test_poc_missing_blocks_therapy_lines() -> None:
    other = poc("2026-03-01", episode="ep-other")
    assert checks(BASE + ok_facts(poc=True) + [other]) == {"POC_MISSING"}


@pytest.mark.parametrize("days, expired", [(30, False), (29, True), (90, False), (1, True)])
def test_poc_expiring_on_the_dos_covers_it_the_day_before_does_not(
    days: int, expired: bool
) -> None:
    # certified 03-01 for D days covers 03-01..03-01+D-1; the 98977's DOS is 03-30
    got = checks(BASE + ok_facts(poc=True) + [poc("2026-03-01", days=days)])
    assert got == ({"POC_EXPIRED"} if expired else set())


def test_a_later_certification_covers_what_the_first_left() -> None:
    facts = [poc("2026-03-01", days=10), poc("2026-03-20", days=30)]
    assert checks(BASE + ok_facts(poc=True) + facts) == set()
    gap = [poc("2026-03-01", days=10), poc("2026-03-31", days=30)]
    assert checks(BASE + ok_facts(poc=True) + gap) == {"POC_EXPIRED"}


@pytest.mark.parametrize("cert, late", [("2026-03-31", False), ("2026-04-01", True)])
def test_poc_late_at_31_days_after_the_first_data_day_not_30(cert: str, late: bool) -> None:
    # first data day 03-01; both lines' DOS are before the first certification, which
    # covers every earlier date: only POC_LATE (a warning) when it came > 30 days later
    lines = by_cpt(run(BASE + ok_facts(poc=True) + [poc(cert)]))
    for a in lines.values():
        assert a.checks == (("POC_LATE",) if late else ()), a
        assert a.readiness == ("warn" if late else "ready")


def test_poc_late_counts_from_the_first_data_day() -> None:
    # the episode started 03-01, its first data day is 03-05
    events = [started(), *data_days(first="2026-03-05", n=16)] + ok_facts(poc=True)
    assert checks(events + [poc("2026-04-04")]) == set()  # 30 days after 03-05
    assert checks(events + [poc("2026-04-05")]) == {"POC_LATE"}


@pytest.mark.parametrize("cert, late", [("2026-04-01", False), ("2026-04-02", True)])
def test_poc_late_counts_from_the_start_without_data_days(cert: str, late: bool) -> None:
    # time logs only (98980, DOS 03-31): no data day, so counted from the start, 03-02
    log = _env(
        "clinician.time_logged",
        "p-1",
        "2026-03-10",
        episode_id="ep-1",
        clinician_id="c-1",
        clinician_role="PT",
        minutes=25,
        activity="call",
        interactive=True,
    )
    events = [started(on="2026-03-02T09:00:00Z"), log] + ok_facts(poc=True) + [poc(cert)]
    assert checks(events, cpt="98980") == ({"POC_LATE"} if late else set())


def test_certifier_npi_check_digit() -> None:
    assert checks(BASE + ok_facts(poc=True) + [poc("2026-03-01", npi="1234567890")]) == {
        "CERTIFIER_NPI_INVALID"
    }
    # the covering certification is judged: the first (bad) covers 03-01..03-20 only
    facts = [poc("2026-03-01", days=20, npi="1234567890"), poc("2026-03-15", days=90)]
    lines = by_cpt(run(BASE + ok_facts(poc=True) + facts))
    assert lines[SETUP].checks == ("CERTIFIER_NPI_INVALID",)  # DOS 03-01: the first
    assert lines[DEVICE].checks == ()  # DOS 03-30: the later, valid one


def test_the_latest_covering_certification_ties_by_later_occurred_at() -> None:
    bad_later = poc("2026-03-01T18:00:00Z", npi="1234567890")
    good_earlier = poc("2026-03-01T08:00:00Z")
    assert checks(BASE + ok_facts(poc=True) + [bad_later, good_earlier]) == {
        "CERTIFIER_NPI_INVALID"
    }
    bad_earlier = poc("2026-03-01T08:00:00Z", npi="1234567890")
    good_later = poc("2026-03-01T18:00:00Z")
    assert checks(BASE + ok_facts(poc=True) + [bad_earlier, good_later]) == set()


def test_a_certification_before_the_dos_is_the_one_before_the_first() -> None:
    # DOS before the first certification: the first covers it and its certifier is judged
    lines = by_cpt(run(BASE + ok_facts(poc=True) + [poc("2026-03-10", npi="1234567890")]))
    assert lines[SETUP].checks == ("CERTIFIER_NPI_INVALID",)


def test_poc_gates_skip_physicians_lines() -> None:
    md = [started(role="MD"), *data_days()]
    lines = by_cpt(run(md + ok_facts(poc=True) + [poc("2026-03-01", episode="ep-x")]))
    for a in lines.values():
        assert a.line.modifiers == () and a.checks == () and a.price is None
    unknown = by_cpt(run(md))  # nothing sent: no POC_UNKNOWN nor SPEND_UNKNOWN
    assert unknown[DEVICE].checks == ("CONSENT_UNKNOWN", "PROCEDURE_UNKNOWN", "RPM_UNKNOWN")


# --- global surgery period ------------------------------------------------------------------


@pytest.mark.parametrize(
    "on, global_days, blocked",
    [
        ("2025-12-30", 90, True),  # DOS 03-30 = P + 90
        ("2025-12-29", 90, False),  # P + 91
        ("2026-03-31", 90, True),  # DOS = P - 1 (the day before a major surgery)
        ("2026-04-01", 90, False),  # P - 2
        ("2026-03-20", 10, True),  # P + 10
        ("2026-03-19", 10, False),  # P + 11
        ("2026-03-31", 10, False),  # P - 1: not for a minor procedure
        ("2026-03-30", 0, True),  # P
        ("2026-03-29", 0, False),  # P + 1
        ("2026-03-31", 0, False),  # P - 1
    ],
)
def test_global_period_boundaries(on: str, global_days: int, blocked: bool) -> None:
    got = checks(BASE + ok_facts(procedures=True) + [procedure(on, global_days)])
    assert got == ({"GLOBAL_PERIOD"} if blocked else set())


def test_global_period_only_for_the_surgeon_billing() -> None:
    other = procedure("2026-03-30", 90, npi=OTHER_NPI)
    assert checks(BASE + ok_facts(procedures=True) + [other]) == set()


# --- RPM --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, end, overlap",
    [
        ("2026-03-30", "2026-04-30", True),  # one day shared: 03-30
        ("2026-03-31", "2026-04-30", False),  # adjacent, no overlap
        ("2026-02-01", "2026-03-01", True),  # shares 03-01
        ("2026-02-01", "2026-02-28", False),
        ("2026-03-10", "2026-03-10", True),
    ],
)
def test_rpm_overlap_with_the_line_period(start: str, end: str, overlap: bool) -> None:
    lines = by_cpt(run(BASE + ok_facts(rpm=True) + [rpm(start, end)]))
    for a in lines.values():  # both lines' period is 03-01..03-30
        assert a.checks == (("RPM_OVERLAP",) if overlap else ())


def test_rpm_overlap_uses_the_calendar_month_of_treatment_lines() -> None:
    logs = [
        _env(
            "clinician.time_logged",
            "p-1",
            "2026-03-31",
            episode_id="ep-1",
            clinician_id="c-1",
            clinician_role="PT",
            minutes=25,
            activity="call",
            interactive=True,
        )
    ]
    # the 98980 line's period is March 1-31: an RPM period from 03-31 overlaps it, not 98977's
    lines = by_cpt(run(BASE + logs + ok_facts(rpm=True) + [rpm("2026-03-31", "2026-04-30")]))
    assert lines["98980"].checks == ("RPM_OVERLAP",)
    assert lines[DEVICE].checks == ()


# --- ICD-10-CM --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dx, blocked",
    [
        (("M54.5",), True),  # header
        (("M54.50",), False),
        (("S83.511",), True),  # no 7th character
        (("S83.511A",), False),
        (("M54.50", "M54.5"), True),  # any code of the line
    ],
)
def test_icd10_not_billable(dx: tuple[str, ...], blocked: bool) -> None:
    events = [started(dx=dx), *data_days()] + ok_facts()
    for a in by_cpt(run(events)).values():
        assert a.checks == (("ICD10_NOT_BILLABLE",) if blocked else ())
        assert a.readiness == ("blocked" if blocked else "ready")


# --- streams not sent -------------------------------------------------------------------------


def test_an_organisation_that_never_sends_consent_gets_warnings_not_blocks() -> None:
    # org-a sends every stream but consent
    events = [started(org="org-a"), *data_days()] + [
        with_org(e, "org-a") for e in ok_facts(consent=True)
    ]
    for a in by_cpt(run(events)).values():
        assert a.checks == ("CONSENT_UNKNOWN",) and a.readiness == "warn"


def test_auto_is_per_organisation() -> None:
    # org-a sends consent (for its p-1, not its p-3); org-b never does: its p-2 is unknown
    events = [
        started(org="org-a"),
        *data_days(),
        started(patient="p-3", episode="ep-3", org="org-a"),
        *data_days(patient="p-3"),
        started(patient="p-2", episode="ep-2", org="org-b"),
        *data_days(patient="p-2"),
        consent("2026-03-01", org="org-a"),
    ]
    lines = run(events)
    consent_checks = {
        p: {c for c in by_cpt(lines, p)[DEVICE].checks if c.startswith("CONSENT")}
        for p in ("p-1", "p-2", "p-3")
    }
    assert consent_checks == {
        "p-1": set(),
        "p-2": {"CONSENT_UNKNOWN"},
        "p-3": {"CONSENT_MISSING"},
    }


def test_sent_and_not_sent_switches() -> None:
    # sent without any event: consent missing, no procedure or RPM means none, $0 elsewhere
    sent = ReadinessConfig(
        streams={
            "": {
                "consent": "sent",
                "poc": "sent",
                "procedures": "sent",
                "rpm": "sent",
                "spend": "sent",
            }
        }
    )
    assert checks(BASE, config=sent) == {"CONSENT_MISSING", "POC_MISSING"}
    # not_sent although events exist: gates skipped, warnings instead
    blocking = [consent("2026-04-01"), poc("2026-03-01", days=5), rpm("2026-03-01", "2026-03-31")]
    assert checks(BASE + blocking + ok_facts(consent=True, poc=True, rpm=True)) == {
        "CONSENT_AFTER_DOS",
        "POC_EXPIRED",
        "RPM_OVERLAP",
    }
    off = ReadinessConfig(
        streams={"": {"consent": "not_sent", "poc": "not_sent", "rpm": "not_sent"}}
    )
    assert checks(BASE + blocking + ok_facts(consent=True, poc=True, rpm=True), config=off) == {
        "CONSENT_UNKNOWN",
        "POC_UNKNOWN",
        "RPM_UNKNOWN",
    }


def test_a_stream_is_sent_only_by_facts_that_count_as_of() -> None:
    # the only consent event occurs after as-of: as of then, the stream is not sent
    events = BASE + ok_facts(consent=True) + [consent("2026-06-02")]
    assert checks(events) == {"CONSENT_UNKNOWN"}
    assert checks(events, as_of=dt.datetime(2026, 6, 3, tzinfo=dt.UTC)) == {"CONSENT_AFTER_DOS"}


# --- KX and the medical review threshold -------------------------------------------------------


@pytest.mark.parametrize(
    "external, kx",
    [
        ("2417.40", True),  # 2417.40 + 19.50 + 43.10 = 2480.00: KX at >=
        ("2417.39", False),  # 2479.99
    ],
)
def test_kx_at_exactly_2480(external: str, kx: bool) -> None:
    lines = by_cpt(run(BASE + ok_facts(spend=True) + [spend(external)]))
    device = lines[DEVICE]
    assert device.year_to_date == Decimal(external) + Decimal("62.60")
    assert device.checks == (("KX_REQUIRED",) if kx else ())
    assert device.line.modifiers == (("GP", "KX") if kx else ("GP",))
    assert device.readiness == ("warn" if kx else "ready")
    # the earlier line in export order is below the threshold either way
    assert lines[SETUP].checks == () and lines[SETUP].line.modifiers == ("GP",)


@pytest.mark.parametrize(
    "external, review",
    [("2937.40", False), ("2937.41", True)],  # year to date 3000.00 / 3000.01
)
def test_medical_review_above_3000(external: str, review: bool) -> None:
    device = by_cpt(run(BASE + ok_facts(spend=True) + [spend(external)]))[DEVICE]
    assert device.checks == (
        ("KX_REQUIRED", "MEDICAL_REVIEW_THRESHOLD") if review else ("KX_REQUIRED",)
    )


def test_kx_goes_after_the_assistant_modifier() -> None:
    pta = [started(role="PTA"), *data_days()] + ok_facts(spend=True) + [spend("2470")]
    lines = by_cpt(run(pta))
    assert lines[SETUP].line.modifiers == ("GP", "CQ", "KX")  # 2470 + 19.50
    assert lines[DEVICE].line.modifiers == ("GP", "KX")


def test_buckets_years_and_the_latest_report() -> None:
    # an OT report does not count for PT lines; a 2025 report not for 2026 lines
    other = [spend("2470", bucket="ot"), spend("2470", year=2025, on="2025-12-31")]
    assert checks(BASE + ok_facts(spend=True) + other) == set()
    # the latest report wins, ties by the greater event_id, later than as-of not at all
    reports = [
        spend("2470", on="2026-02-01", event_id="s-a"),
        spend("0", on="2026-03-01T10:00:00Z", event_id="s-b"),
        spend("2470", on="2026-03-01T10:00:00Z", event_id="s-c"),
        spend("0", on="2026-06-02", event_id="s-d"),
    ]
    assert checks(BASE + ok_facts(spend=True) + reports) == {"KX_REQUIRED"}
    assert checks(BASE + ok_facts(spend=True) + reports[:2]) == set()


def test_spend_not_sent_counts_own_lines_only_with_a_warning() -> None:
    # 5 months of 98977 + a month of 98980 etc. are far below 2480: the own-line sum shows
    lines = by_cpt(run(BASE + ok_facts(spend=True)))
    assert lines[DEVICE].checks == ("SPEND_UNKNOWN",)
    assert lines[DEVICE].year_to_date == Decimal("62.60")
    low = ThresholdTable(
        parse_thresholds("version,year,kx_threshold,review_threshold\nv1,2026,60.00,62.59\n")
    )
    lines = by_cpt(run(BASE + ok_facts(spend=True), thresholds=low))
    assert lines[DEVICE].checks == ("KX_REQUIRED", "MEDICAL_REVIEW_THRESHOLD", "SPEND_UNKNOWN")


def test_every_therapy_line_needs_a_fee() -> None:
    with pytest.raises(MissingFees) as exc:
        run(BASE + ok_facts(), locality="ELSEWHERE")
    assert [(ln.cpt, loc) for ln, loc in exc.value.lines] == [
        (SETUP, "ELSEWHERE"),
        (DEVICE, "ELSEWHERE"),
    ]
    assert "p-1 ep-1 98977 2026-03-30" in str(exc.value)
    # physicians' lines need none
    md = [started(role="MD"), *data_days()] + ok_facts()
    assert all(a.readiness == "ready" for a in run(md, locality="ELSEWHERE"))


def test_thresholds_are_versioned_data_and_a_missing_year_uses_the_latest_earlier() -> None:
    table = default_thresholds()
    y2026 = table.for_year(2026)
    assert (y2026.kx, y2026.review) == (Decimal("2480.00"), Decimal("3000.00"))
    assert table.for_year(2027) == y2026 and table.for_year(2031) == y2026
    assert table.for_year(2025) == y2026  # before the first configured: the first
    rows = parse_thresholds(
        "# comment\nversion,year,kx_threshold,review_threshold\n"
        "2026-01-01,2026,2480.00,3000.00\n2026-03-12,2026,2490.00,3000.00\n"
        "2028-01-01,2028,2600.00,3000.00\n"
    )
    t = ThresholdTable(rows)
    assert t.for_year(2026).kx == Decimal("2490.00")  # the highest version of the year
    assert t.for_year(2027).kx == Decimal("2490.00")
    assert t.for_year(2029).kx == Decimal("2600.00")
    for bad in ("year,kx\n2026,1\n", "version,year,kx_threshold,review_threshold\nv,x,1,1\n"):
        with pytest.raises(ThresholdError):
            parse_thresholds(bad)


# --- as-of, arrival order, duplicates ---------------------------------------------------------


def test_facts_after_as_of_do_not_count() -> None:
    # an enrolment in March recorded in June: not a fact as of June 1st, a block after
    late = rpm("2026-03-01", "2026-03-31", on="2026-06-05T10:00:00Z")
    events = BASE + ok_facts() + [late]
    assert checks(events) == set()
    assert checks(events, as_of=dt.datetime(2026, 6, 5, 10, tzinfo=dt.UTC)) == {"RPM_OVERLAP"}
    # at or before as-of counts
    assert checks(events, as_of=dt.datetime(2026, 6, 5, 9, 59, 59, tzinfo=dt.UTC)) == set()


def _rows(assessed: list[AssessedLine]) -> list[tuple[Any, ...]]:
    return [(a.line, a.checks, a.readiness, a.year_to_date) for a in assessed]


MIXED = BASE + [
    consent("2026-03-02"),
    consent("2026-03-05"),
    poc("2026-03-01", days=20, npi="1234567890"),
    poc("2026-03-15", days=90),
    procedure("2026-03-31", 10),
    rpm("2026-03-30", "2026-04-10"),
    spend("2400", on="2026-02-01", event_id="sp-1"),
    spend("2450", on="2026-03-01", event_id="sp-2"),
    spend("0", on="2026-07-01", event_id="sp-3"),  # after as-of
]


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(len(MIXED))), dupes=st.lists(st.integers(0, len(MIXED) - 1)))
def test_arrival_order_and_duplicates_change_nothing(order: list[int], dupes: list[int]) -> None:
    expected = _rows(run(MIXED))
    shuffled = [MIXED[i] for i in order] + [MIXED[i] for i in dupes]
    assert _rows(run(shuffled)) == expected


def test_the_mixed_history_as_expected() -> None:
    lines = by_cpt(run(MIXED))
    assert lines[SETUP].checks == ("CERTIFIER_NPI_INVALID", "CONSENT_AFTER_DOS", "RPM_OVERLAP")
    assert lines[DEVICE].checks == ("KX_REQUIRED", "RPM_OVERLAP")
    assert lines[DEVICE].year_to_date == Decimal("2512.60")


# --- the project's own fixtures: nothing blocked by the upgrade --------------------------------


def _fixture_events(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_the_billing_example_with_no_fact_stream_is_never_blocked() -> None:
    events = _fixture_events(FIXTURES / "examples" / "billing-example.jsonl")
    assessed = run(events, as_of=dt.datetime(2027, 2, 1, tzinfo=dt.UTC))
    assert len(assessed) == 7
    for a in assessed:
        assert a.readiness == "warn", a
        assert "ICD10_NOT_BILLABLE" not in a.checks
        assert set(a.checks) <= {
            "CONSENT_UNKNOWN",
            "POC_UNKNOWN",
            "PROCEDURE_UNKNOWN",
            "RPM_UNKNOWN",
            "SPEND_UNKNOWN",
        }


def test_every_code_of_the_simulator_and_the_fixtures_is_billable() -> None:
    from rtm.simulate import REGIONS
    from schemas.codes import icd10_cm_billable

    codes = {c for dx, _ in REGIONS.values() for c in dx}
    for path in (FIXTURES / "examples").glob("*.jsonl"):
        for ev in _fixture_events(path):
            codes |= set(ev.get("billing", {}).get("diagnosis_codes", []))
    assert len(codes) > 10
    assert {c for c in codes if not icd10_cm_billable(c)} == set()


def test_a_simulated_cohort_with_no_fact_stream_is_never_blocked() -> None:
    from rtm.simulate import simulate

    events = [e for e in simulate(25, 120, seed=11) if "org_id" not in e]
    assessed = run(events, as_of=dt.datetime(2027, 3, 1, tzinfo=dt.UTC))
    assert len(assessed) > 50
    assert {a.readiness for a in assessed} == {"warn"}
