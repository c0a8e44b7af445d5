"""Claim exports for billing staff: CSV, X12 837P-shaped service lines, FHIR R4 Claim.

All renderers are pure: lines in, text out. The export time (X12 envelope dates, FHIR
``created``) is an argument, never the clock.

Conventions in the output:
- CSV (``render_csv``): exactly the columns, order and sort of billing-rules.md. With a
  ``config`` the conventions are written first as ``#`` comment lines; without one the
  output is the bare CSV (what ``rtm billing evaluate`` prints, matching the shared
  example). For X12 and FHIR the conventions go to a sidecar file (``write_sidecar``).
- X12 (``billing.claims837.render_draft_837p``, the one writer ``billing.x12``): one 2000A
  billing-provider HL per billing NPI, one 2000B subscriber HL per patient and payer, one
  CLM per patient and episode (CLM05-3 = 7 replacement when it carries amended lines), one
  LX/SV1/DTP*472 per line. This is the *draft* look of the free preview: parties are
  placeholders and charges 0.00, so it is always a test interchange (ISA15 = T). What is
  submitted is ``billing.claims837.render_837p``: billing profile, demographics, fee
  schedule, control numbers from the database.
- FHIR: a ``collection`` Bundle of R4 Claims, one per patient, date of service and status
  (``fhir_claims``: fm-status codes only, ``Claim.related`` for amendments, no extensions);
  identifiers (patient id, NPI, member id) are references by identifier, since the
  system keeps no Patient/Practitioner resources (no PHI).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any, TextIO

from billing.claims837 import render_draft_837p
from billing.config import DEFAULT_CONFIG, BillingConfig
from billing.rules import ClaimLine
from billing.x12 import short_id

CSV_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "episode_id",
    "cpt",
    "modifiers",
    "units",
    "date_of_service",
    "period_start",
    "period_end",
    "data_days",
    "minutes",
    "rendering_npi",
    "billing_npi",
    "payer",
    "member_id",
    "diagnosis_codes",
    "place_of_service",
    "status",
)


def sort_lines(lines: Iterable[ClaimLine]) -> list[ClaimLine]:
    return sorted(lines, key=ClaimLine.sort_key)


def csv_row(line: ClaimLine) -> list[str]:
    return [
        line.patient_id,
        line.episode_id,
        line.cpt,
        "+".join(line.modifiers),
        str(line.units),
        line.date_of_service.isoformat(),
        line.period_start.isoformat(),
        line.period_end.isoformat(),
        "" if line.data_days is None else str(line.data_days),
        "" if line.minutes is None else str(line.minutes),
        line.rendering_npi,
        line.billing_npi,
        line.payer,
        line.member_id,
        "+".join(line.diagnosis_codes),
        line.place_of_service,
        line.status,
    ]


def write_csv(lines: Iterable[ClaimLine], out: TextIO, config: BillingConfig | None = None) -> None:
    """Write the claims CSV (LF line ends). With ``config``, a ``#`` comment block of the
    conventions in force comes first; without, the bare CSV of billing-rules.md."""
    if config is not None:
        out.write(config.header_text())
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in sort_lines(lines):
        writer.writerow(csv_row(line))


def render_csv(lines: Iterable[ClaimLine], config: BillingConfig | None = None) -> str:
    buf = io.StringIO()
    write_csv(lines, buf, config)
    return buf.getvalue()


def sidecar_path(export_path: Path) -> Path:
    """``claims.x12`` -> ``claims.x12.conventions.txt``."""
    return export_path.with_name(export_path.name + ".conventions.txt")


def write_sidecar(export_path: Path, config: BillingConfig) -> Path:
    """Write the conventions in force next to an export; returns the sidecar's path."""
    path = sidecar_path(export_path)
    path.write_text(config.header_text(), encoding="utf-8")
    return path


# --- FHIR R4 Claim --------------------------------------------------------------------------

CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"
HCPCS_MODIFIER_SYSTEM = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
POS_SYSTEM = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
# Identifier systems (plain URIs naming this system's own identifiers; no extensions).
PATIENT_ID_SYSTEM = "urn:rtm:patient-id"
MEMBER_ID_SYSTEM = "urn:rtm:member-id"
# What may be billed once: patient | code group | episode (or "" for a month) | start.
# Each Claim lists the groups it bills; an amended group's Claim names the prior Claim of
# that group in Claim.related (relationship "prior").
BILLING_GROUP_SYSTEM = "urn:rtm:billing-group"
RELATED_CLAIM_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship"
# Claim.status is bound (required) to http://hl7.org/fhir/ValueSet/fm-status.
FHIR_STATUS: dict[str, str] = {
    "new": "active",
    "amended": "active",
    "preview": "draft",
    "void": "cancelled",
}


def billing_group_id(line: ClaimLine) -> str:
    patient, group, scope, start = line.key
    return f"{patient}|{group}|{scope}|{start.isoformat()}"


def fhir_claims(lines: Iterable[ClaimLine], created: dt.datetime) -> list[dict[str, Any]]:
    """R4 Claim resources (as JSON-ready dicts): one per patient, date of service and
    status. ``status`` from the bound value set (fm-status): ``active`` for new and amended
    lines, ``draft`` for a preview of an open period, ``cancelled`` for a voided group.
    ``identifier`` names the billing groups the Claim bills; a Claim of amended lines has
    ``related`` (relationship ``prior``) naming the same groups, i.e. the earlier Claims
    that carried them. No extensions."""
    out: list[dict[str, Any]] = []
    ordered = sorted(
        lines,
        key=lambda ln: (
            ln.patient_id,
            ln.date_of_service,
            FHIR_STATUS[ln.status],
            ln.status == "amended",
            ln.sort_key(),
        ),
    )
    for (patient_id, dos, status, amended), grp in groupby(
        ordered,
        key=lambda ln: (
            ln.patient_id,
            ln.date_of_service,
            FHIR_STATUS[ln.status],
            ln.status == "amended",
        ),
    ):
        claim_lines = list(grp)
        first = claim_lines[0]
        dx = list(first.diagnosis_codes)
        groups = sorted({billing_group_id(ln) for ln in claim_lines})
        claim: dict[str, Any] = {
            "resourceType": "Claim",
            "id": short_id(
                patient_id, dos.isoformat(), status, str(amended), *groups, length=32
            ).lower(),
            "identifier": [{"system": BILLING_GROUP_SYSTEM, "value": g} for g in groups],
            "status": status,
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                        "code": "professional",
                    }
                ]
            },
            "use": "claim",
            "patient": {"identifier": {"system": PATIENT_ID_SYSTEM, "value": patient_id}},
            "billablePeriod": {
                "start": min(ln.period_start for ln in claim_lines).isoformat(),
                "end": max(ln.period_end for ln in claim_lines).isoformat(),
            },
            "created": created.isoformat(),
            "provider": {"identifier": {"system": NPI_SYSTEM, "value": first.billing_npi}},
            "priority": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/processpriority",
                        "code": "normal",
                    }
                ]
            },
            "careTeam": [
                {
                    "sequence": 1,
                    "provider": {
                        "identifier": {"system": NPI_SYSTEM, "value": first.rendering_npi}
                    },
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/claimcareteamrole",
                                "code": "primary",
                            }
                        ]
                    },
                }
            ],
            "diagnosis": [
                {
                    "sequence": i,
                    "diagnosisCodeableConcept": {
                        "coding": [{"system": ICD10_SYSTEM, "code": code}]
                    },
                }
                for i, code in enumerate(dx, start=1)
            ],
            "insurance": [
                {
                    "sequence": 1,
                    "focal": True,
                    "coverage": {
                        "identifier": {"system": MEMBER_ID_SYSTEM, "value": first.member_id},
                        "display": first.payer,
                    },
                }
            ],
            "item": [_fhir_item(n, ln, len(dx)) for n, ln in enumerate(claim_lines, start=1)],
        }
        if amended:
            claim["related"] = [
                {
                    "claim": {"identifier": {"system": BILLING_GROUP_SYSTEM, "value": g}},
                    "relationship": {"coding": [{"system": RELATED_CLAIM_SYSTEM, "code": "prior"}]},
                }
                for g in groups
            ]
        out.append(claim)
    return out


def _fhir_item(sequence: int, ln: ClaimLine, n_dx: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "sequence": sequence,
        "careTeamSequence": [1],
        "diagnosisSequence": list(range(1, min(4, n_dx) + 1)),
        "productOrService": {"coding": [{"system": CPT_SYSTEM, "code": ln.cpt}]},
        "servicedDate": ln.date_of_service.isoformat(),
        "locationCodeableConcept": {
            "coding": [{"system": POS_SYSTEM, "code": ln.place_of_service}]
        },
        "quantity": {"value": ln.units},
    }
    if ln.modifiers:
        item["modifier"] = [
            {"coding": [{"system": HCPCS_MODIFIER_SYSTEM, "code": m}]} for m in ln.modifiers
        ]
    return item


def fhir_bundle(lines: Iterable[ClaimLine], created: dt.datetime) -> dict[str, Any]:
    """A ``collection`` Bundle of the Claims of ``fhir_claims``."""
    claims = fhir_claims(lines, created)
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": created.isoformat(),
        "entry": [
            {"fullUrl": f"urn:uuid:{_uuid_of(claim['id'])}", "resource": claim} for claim in claims
        ],
    }


def _uuid_of(hex32: str) -> str:
    h = hex32.ljust(32, "0")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def render_fhir(lines: Iterable[ClaimLine], created: dt.datetime) -> str:
    return json.dumps(fhir_bundle(lines, created), indent=2, sort_keys=False) + "\n"


FORMATS = ("csv", "x12", "fhir")


def render_export(
    lines: Sequence[ClaimLine], fmt: str, created: dt.datetime, config: BillingConfig | None = None
) -> str:
    """CSV (conventions as a ``#`` header block), the draft X12 837P or a FHIR R4 Claim
    bundle."""
    if fmt == "csv":
        return render_csv(lines, config or DEFAULT_CONFIG)
    if fmt == "x12":
        return render_draft_837p(list(lines), created)
    if fmt == "fhir":
        return render_fhir(lines, created)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
