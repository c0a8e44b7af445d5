"""Claim-readiness facts for a simulated cohort, opt-in (``rtm simulate --readiness-facts``,
``rtm demo``; docs/billing-readiness.md).

``add_readiness_facts(events, seed, end)`` passes the cohort's events through in arrival
order and, right after each ``episode.started``, adds the facts an EHR would send for it:
a written consent and a 90-day plan-of-care certification on the start date (and a
recertification every 90 days that falls before ``end``); for some patients a surgery long
before (another surgeon's NPI: the stream is sent, no global period), an RPM enrolment that
ended before the episode, and therapy spend reported elsewhere this year. A few episodes
carry one planted problem each (``PLANTED``, by the episode's arrival index k):

- ``k % 25 == 3``: no consent (``CONSENT_MISSING``);
- ``k % 25 == 7``: a 30-day plan of care, never recertified (``POC_EXPIRED``; therapy only);
- ``k % 25 == 11``: the header ICD-10-CM code ``M54.5`` on the episode (``ICD10_NOT_BILLABLE``);
- ``k % 25 == 15``: RPM enrolment over the first 30 days (``RPM_OVERLAP``);
- ``k % 25 == 19``: $2,460 of therapy elsewhere this year, so the patient's own lines cross
  the KX threshold ($2,480: ``KX_REQUIRED``; therapy only).

Off (the default), the cohort is exactly what it was: this module only adds events (and
changes the planted episodes' diagnosis codes) when asked. Deterministic per seed.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Iterator
from typing import Any

from schemas.codes import npi_check_digit
from schemas.events import validate_event

CYCLE = 25
PLANTED: dict[int, str] = {
    3: "CONSENT_MISSING",
    7: "POC_EXPIRED",
    11: "ICD10_NOT_BILLABLE",
    15: "RPM_OVERLAP",
    19: "KX_REQUIRED",
}
HEADER_CODE = "M54.5"  # billable only as M54.50/M54.51/M54.59 since 2021
KX_NEAR = 2460.00  # just under 2026's $2,480: the patient's own lines cross it
POC_DAYS = 90
THERAPY_BUCKET = {"PT": "pt_slp", "PTA": "pt_slp", "SLP": "pt_slp", "OT": "ot", "OTA": "ot"}


def planted_problem(k: int) -> str | None:
    """The problem planted in the k-th episode (0-based, arrival order), if any."""
    return PLANTED.get(k % CYCLE)


def _surgeon_npi(rng: random.Random) -> str:
    base = "2" + "".join(rng.choice("0123456789") for _ in range(8))
    return base + npi_check_digit(base)


def _fact(ep: dict[str, Any], etype: str, suffix: str, at: dt.datetime, **fields: Any) -> Any:
    return {
        "event_id": f"{ep['episode_id']}-{suffix}",
        "schema_version": 1,
        "type": etype,
        "patient_id": ep["patient_id"],
        "occurred_at": at.isoformat(),
        **fields,
    }


def episode_facts(
    ep: dict[str, Any], k: int, rng: random.Random, end: dt.date
) -> list[dict[str, Any]]:
    """The facts of one ``episode.started`` (its k-th in arrival order)."""
    problem = planted_problem(k)
    start = dt.datetime.fromisoformat(ep["occurred_at"])
    day = start.date()
    role = ep["clinician_role"]
    bucket = THERAPY_BUCKET.get(role)
    episode = {"episode_id": ep["episode_id"]}
    out: list[dict[str, Any]] = []
    if problem != "CONSENT_MISSING":
        out.append(
            _fact(
                ep, "consent.recorded", "consent", start, **episode, method="written", scope="rtm"
            )
        )
    if bucket is not None:
        npi = ep["billing"]["rendering_npi"]
        days = 30 if problem == "POC_EXPIRED" else POC_DAYS
        cert = start
        n = 1
        while True:
            out.append(
                _fact(
                    ep,
                    "plan_of_care.certified",
                    f"poc{n}",
                    cert,
                    **episode,
                    certifier_npi=npi,
                    duration_days=days,
                )  # fmt: skip
            )
            cert += dt.timedelta(days=days - 1)
            n += 1
            if problem == "POC_EXPIRED" or cert.date() >= end:
                break
    if problem == "RPM_OVERLAP":
        last = day + dt.timedelta(days=29)
        out.append(
            _fact(
                ep,
                "rpm.enrolled",
                "rpm",
                start,
                period_start=day.isoformat(),
                period_end=last.isoformat(),
            )  # fmt: skip
        )
    elif k % 7 == 2:  # RPM that ended before the episode: the stream is sent, no overlap
        out.append(
            _fact(
                ep,
                "rpm.enrolled",
                "rpm",
                start - dt.timedelta(days=40),
                period_start=(day - dt.timedelta(days=60)).isoformat(),
                period_end=(day - dt.timedelta(days=31)).isoformat(),
            )  # fmt: skip
        )
    if k % 10 == 5:  # post-surgical rehabilitation: another surgeon's procedure long before
        out.append(
            _fact(
                ep,
                "procedure.recorded",
                "procedure",
                start - dt.timedelta(days=120),
                surgeon_npi=_surgeon_npi(rng),
                global_days=90,
            )  # fmt: skip
        )
    if bucket is not None and (problem == "KX_REQUIRED" or k % 4 == 0):
        amount = KX_NEAR if problem == "KX_REQUIRED" else round(rng.uniform(100, 1500), 2)
        out.append(
            _fact(
                ep,
                "therapy_spend.reported",
                "spend",
                start,
                year=day.year,
                amount_allowed_ytd=amount,
                bucket=bucket,
            )  # fmt: skip
        )
    return out


def add_readiness_facts(
    events: Iterable[dict[str, Any]], seed: int, end: dt.date
) -> Iterator[dict[str, Any]]:
    """The cohort with its readiness facts (see the module); ``end``: the cohort's last
    date (no fact is dated after it)."""
    rng = random.Random(f"{seed}-readiness")
    k = 0
    for ev in events:
        if ev.get("type") != "episode.started" or isinstance(validate_event(ev), list):
            yield ev  # an invalid start (``invalid_ratio``) gets no facts
            continue
        if planted_problem(k) == "ICD10_NOT_BILLABLE":
            ev = {**ev, "billing": {**ev["billing"], "diagnosis_codes": [HEADER_CODE]}}
        yield ev
        yield from episode_facts(ev, k, rng, end)
        k += 1
