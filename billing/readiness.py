"""Claim readiness (docs/billing-readiness.md), pure: the gates over claim lines.

Each claim line that ``billing.rules`` produces gets ``checks``, the codes of the gates that
fired (sorted, ``+``-joined in the CSV), and ``readiness``: ``blocked`` if a blocking code
fired, else ``warn`` if any fired, else ``ready``. Gates read facts (the claim-readiness
events of the contract: consent, plans of care, procedures, RPM enrolment, therapy spend
elsewhere); they never add, drop or re-tier a line. The one change they make to a line is
``KX`` appended to its modifiers when the therapy threshold is reached.

Recomputable as of any date from the event log: ``ReadinessFacts`` keeps each fact once per
``event_id`` whatever the arrival order, and ``assess`` counts only the facts whose
``occurred_at`` is at or before ``as_of``, an argument (nothing here reads the clock).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import importlib.resources
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from billing.export import CSV_COLUMNS, csv_row
from billing.fees import FeeEntry, fee_for
from billing.rules import ClaimLine, episode_data_days
from billing.state import PatientBillingState
from schemas.codes import icd10_cm_billable, is_valid_npi
from schemas.events import (
    DEFAULT_ORG,
    ConsentRecorded,
    EpisodeStarted,
    Event,
    PlanOfCareCertified,
    ProcedureRecorded,
    ReadinessFact,
    RpmEnrolled,
    TherapySpendReported,
)

Readiness = Literal["blocked", "warn", "ready"]
Severity = Literal["blocked", "warn"]
Stream = Literal["consent", "poc", "procedures", "rpm", "spend"]
StreamMode = Literal["auto", "sent", "not_sent"]
Bucket = Literal["pt_slp", "ot"]

STREAMS: tuple[Stream, ...] = ("consent", "poc", "procedures", "rpm", "spend")
STREAM_OF_TYPE: dict[str, Stream] = {
    "consent.recorded": "consent",
    "plan_of_care.certified": "poc",
    "procedure.recorded": "procedures",
    "rpm.enrolled": "rpm",
    "therapy_spend.reported": "spend",
}
UNKNOWN_CODE: dict[Stream, str] = {
    "consent": "CONSENT_UNKNOWN",
    "poc": "POC_UNKNOWN",
    "procedures": "PROCEDURE_UNKNOWN",
    "rpm": "RPM_UNKNOWN",
    "spend": "SPEND_UNKNOWN",
}

CONSENT_MISSING = "CONSENT_MISSING"
CONSENT_AFTER_DOS = "CONSENT_AFTER_DOS"
POC_MISSING = "POC_MISSING"
POC_EXPIRED = "POC_EXPIRED"
POC_LATE = "POC_LATE"
CERTIFIER_NPI_INVALID = "CERTIFIER_NPI_INVALID"
GLOBAL_PERIOD = "GLOBAL_PERIOD"
RPM_OVERLAP = "RPM_OVERLAP"
ICD10_NOT_BILLABLE = "ICD10_NOT_BILLABLE"
KX_REQUIRED = "KX_REQUIRED"
MEDICAL_REVIEW_THRESHOLD = "MEDICAL_REVIEW_THRESHOLD"

SEVERITY: dict[str, Severity] = {
    CONSENT_MISSING: "blocked",
    CONSENT_AFTER_DOS: "blocked",
    POC_MISSING: "blocked",
    POC_EXPIRED: "blocked",
    POC_LATE: "warn",
    CERTIFIER_NPI_INVALID: "blocked",
    GLOBAL_PERIOD: "blocked",
    RPM_OVERLAP: "blocked",
    ICD10_NOT_BILLABLE: "blocked",
    KX_REQUIRED: "warn",
    MEDICAL_REVIEW_THRESHOLD: "warn",
    **{code: "warn" for code in UNKNOWN_CODE.values()},
}

# Each code in words, as the dashboard shows it to billing staff.
CHECK_TEXT: dict[str, str] = {
    CONSENT_MISSING: "No consent on file for the episode",
    CONSENT_AFTER_DOS: "Consent recorded after the date of service",
    POC_MISSING: "No certified plan of care for the episode",
    POC_EXPIRED: "No plan of care covers the date of service",
    POC_LATE: "Plan of care certified more than 30 days after the first data day",
    CERTIFIER_NPI_INVALID: "The certifying NPI fails its check digit",
    GLOBAL_PERIOD: "Inside the billing surgeon's global period",
    RPM_OVERLAP: "RPM enrolment overlaps the period",
    ICD10_NOT_BILLABLE: "A diagnosis code is not billable (not an ICD-10-CM leaf)",
    KX_REQUIRED: "Therapy spend reached the KX threshold: KX added",
    MEDICAL_REVIEW_THRESHOLD: "Therapy spend above the $3,000 review threshold",
    "CONSENT_UNKNOWN": "Consent not sent by the organisation: not checked",
    "POC_UNKNOWN": "Plans of care not sent by the organisation: not checked",
    "PROCEDURE_UNKNOWN": "Procedures not sent by the organisation: global period not checked",
    "RPM_UNKNOWN": "RPM enrolments not sent by the organisation: overlap not checked",
    "SPEND_UNKNOWN": "Therapy spend elsewhere not sent: counted as $0",
}

FACT_MODELS = (
    ConsentRecorded,
    PlanOfCareCertified,
    ProcedureRecorded,
    RpmEnrolled,
    TherapySpendReported,
)

# Therapy line: has GP, GO or GN. GP and GN share Medicare's PT/SLP threshold; GO is OT's.
THERAPY_BUCKET: dict[str, Bucket] = {"GP": "pt_slp", "GN": "pt_slp", "GO": "ot"}
KX_MODIFIER = "KX"
# MBPM ch. 15 220.1.3 D: a certification more than 30 days after the first treatment is late.
POC_LATE_DAYS = 30
# A global period (procedure.recorded's global_days) as days before and after the date P.
GLOBAL_WINDOW: dict[int, tuple[int, int]] = {0: (0, 0), 10: (0, 10), 90: (1, 90)}
# The organisation of events and episodes that name none: one unnamed organisation (contract
# ids are never empty).
UNNAMED_ORG = ""


def org_key(org_id: str | None) -> str:
    return org_id or UNNAMED_ORG


# --- configuration ------------------------------------------------------------------------


class Thresholds(BaseModel):
    """The therapy thresholds of one calendar year (per bucket)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    year: int
    kx: Decimal
    review: Decimal


class ThresholdError(ValueError):
    pass


THRESHOLD_COLUMNS = ("version", "year", "kx_threshold", "review_threshold")


def parse_thresholds(text: str) -> tuple[Thresholds, ...]:
    """The rows of a thresholds file (``#`` lines are comments); raises ThresholdError
    naming the row."""
    body = "".join(ln for ln in io.StringIO(text) if not ln.lstrip().startswith("#"))
    reader = csv.DictReader(io.StringIO(body))
    if tuple(reader.fieldnames or ()) != THRESHOLD_COLUMNS:
        raise ThresholdError(f"header must be {','.join(THRESHOLD_COLUMNS)}")
    out: list[Thresholds] = []
    for n, row in enumerate(reader, start=2):
        try:
            kx, review = Decimal(row["kx_threshold"]), Decimal(row["review_threshold"])
            year = int(row["year"])
        except (InvalidOperation, ValueError, TypeError):
            raise ThresholdError(f"row {n}: year and amounts must be numbers") from None
        if not row["version"] or kx <= 0 or review <= 0:
            raise ThresholdError(f"row {n}: a version and positive amounts are required")
        out.append(Thresholds(version=row["version"], year=year, kx=kx, review=review))
    if not out:
        raise ThresholdError("no thresholds")
    return tuple(out)


@dataclass(frozen=True)
class ThresholdTable:
    """Thresholds per year, versioned: the highest version of a year wins; a year not
    configured uses the latest earlier one (convention), a year before the first configured
    one the first."""

    rows: tuple[Thresholds, ...]

    def for_year(self, year: int) -> Thresholds:
        by_year: dict[int, Thresholds] = {}
        for r in self.rows:
            best = by_year.get(r.year)
            if best is None or r.version > best.version:
                by_year[r.year] = r
        earlier = [y for y in by_year if y <= year]
        return by_year[max(earlier) if earlier else min(by_year)]


@functools.cache
def default_thresholds() -> ThresholdTable:
    """The project's thresholds file (``billing/therapy_thresholds.csv``, package data, read
    once like tzdata's zone list)."""
    text = importlib.resources.files("billing").joinpath("therapy_thresholds.csv").read_text()
    return ThresholdTable(parse_thresholds(text))


class ReadinessConfig(BaseModel):
    """Per organisation (``UNNAMED_ORG`` for none) and stream: ``auto`` (the default: sent
    once any counting event of the stream carries the organisation's ``org_id``), ``sent``
    or ``not_sent``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    streams: dict[str, dict[Stream, StreamMode]] = Field(default_factory=dict)

    def mode(self, org: str, stream: Stream) -> StreamMode:
        return self.streams.get(org, {}).get(stream, "auto")


DEFAULT_READINESS_CONFIG = ReadinessConfig()


# --- facts ----------------------------------------------------------------------------------


@dataclass
class ReadinessFacts:
    """The claim-readiness facts of an event log, once per ``event_id`` (the first kept, as
    the event store keeps it), and the organisation of each episode (its
    ``episode.started``'s ``org_id``; of several starts of one episode the earliest by
    ``(occurred_at, event_id)``, as the episode book folds them). A set, so any arrival order
    of the same events gives the same facts."""

    facts: dict[str, ReadinessFact] = field(default_factory=dict)
    episode_starts: dict[tuple[str, str], tuple[dt.datetime, str, str]] = field(
        default_factory=dict
    )

    def apply(self, event: Event) -> bool:
        """Fold one event; True if it changed the facts."""
        if isinstance(event, EpisodeStarted):
            key = (event.patient_id, event.episode_id)
            start = (event.occurred_at, event.event_id, org_key(event.org_id))
            known = self.episode_starts.get(key)
            if known is not None and known[:2] <= start[:2]:
                return False
            self.episode_starts[key] = start
            return True
        if isinstance(event, FACT_MODELS) and event.event_id not in self.facts:
            self.facts[event.event_id] = event
            return True
        return False

    def org_of(self, patient_id: str, episode_id: str) -> str:
        start = self.episode_starts.get((patient_id, episode_id))
        return start[2] if start is not None else UNNAMED_ORG


def fold_facts(events: Iterable[Event], facts: ReadinessFacts | None = None) -> ReadinessFacts:
    out = facts if facts is not None else ReadinessFacts()
    for event in events:
        out.apply(event)
    return out


@dataclass(frozen=True)
class _Cert:
    date: dt.date
    occurred_at: dt.datetime
    event_id: str
    days: int
    npi: str

    @property
    def last(self) -> dt.date:
        return self.date + dt.timedelta(days=self.days - 1)

    def order(self) -> tuple[dt.date, dt.datetime, str]:
        return (self.date, self.occurred_at, self.event_id)


@dataclass
class _FactIndex:
    """The facts that count as of one date, indexed for the gates."""

    consents: dict[tuple[str, str], list[dt.date]] = field(default_factory=dict)
    certs: dict[tuple[str, str], list[_Cert]] = field(default_factory=dict)
    procedures: dict[str, list[ProcedureRecorded]] = field(default_factory=dict)
    rpm: dict[str, list[RpmEnrolled]] = field(default_factory=dict)
    # (patient, year, bucket) -> the winning report (latest occurred_at, then event_id)
    spend: dict[tuple[str, int, str], TherapySpendReported] = field(default_factory=dict)
    sent: set[tuple[str, Stream]] = field(default_factory=set)


def _index(facts: ReadinessFacts, as_of: dt.datetime) -> _FactIndex:
    ix = _FactIndex()
    for f in facts.facts.values():
        if f.occurred_at > as_of:
            continue  # not yet a fact as of as_of
        ix.sent.add((org_key(f.org_id), STREAM_OF_TYPE[f.type]))
        if isinstance(f, ConsentRecorded):
            ix.consents.setdefault((f.patient_id, f.episode_id), []).append(f.local_date)
        elif isinstance(f, PlanOfCareCertified):
            ix.certs.setdefault((f.patient_id, f.episode_id), []).append(
                _Cert(f.local_date, f.occurred_at, f.event_id, f.duration_days, f.certifier_npi)
            )
        elif isinstance(f, ProcedureRecorded):
            ix.procedures.setdefault(f.patient_id, []).append(f)
        elif isinstance(f, RpmEnrolled):
            ix.rpm.setdefault(f.patient_id, []).append(f)
        else:
            key = (f.patient_id, f.year, f.bucket)
            best = ix.spend.get(key)
            if best is None or (f.occurred_at, f.event_id) > (best.occurred_at, best.event_id):
                ix.spend[key] = f
    return ix


# --- the gates ------------------------------------------------------------------------------


def therapy_bucket(line: ClaimLine) -> Bucket | None:
    """The bucket of a therapy line (one with GP, GO or GN); None for other lines."""
    for mod in line.modifiers:
        if mod in THERAPY_BUCKET:
            return THERAPY_BUCKET[mod]
    return None


def consent_gates(line: ClaimLine, consents: Sequence[dt.date]) -> set[str]:
    if not consents:
        return {CONSENT_MISSING}
    return {CONSENT_AFTER_DOS} if min(consents) > line.date_of_service else set()


def poc_gates(line: ClaimLine, certs: Sequence[_Cert], first_data_day: dt.date) -> set[str]:
    """POC_MISSING, POC_EXPIRED, POC_LATE and CERTIFIER_NPI_INVALID of a therapy line.

    A certification dated C for D days covers C..C+D-1; the first one also every earlier
    date. The covering one is the latest (by date, then occurred_at, then event_id); before
    the first, the first. Without a covering one the certifier is not judged (POC_EXPIRED
    blocks already)."""
    if not certs:
        return {POC_MISSING}
    dos = line.date_of_service
    first = min(certs, key=_Cert.order)
    out: set[str] = set()
    if dos < first.date:
        covering: _Cert | None = first
        if (first.date - first_data_day).days > POC_LATE_DAYS:
            out.add(POC_LATE)
    else:
        covering = max((c for c in certs if c.date <= dos <= c.last), key=_Cert.order, default=None)
    if covering is None:
        out.add(POC_EXPIRED)
    elif not is_valid_npi(covering.npi):
        out.add(CERTIFIER_NPI_INVALID)
    return out


def global_period_gates(line: ClaimLine, procedures: Sequence[ProcedureRecorded]) -> set[str]:
    dos = line.date_of_service
    for p in procedures:
        if p.surgeon_npi != line.billing_npi:
            continue
        before, after = GLOBAL_WINDOW[p.global_days]
        if (
            p.local_date - dt.timedelta(days=before)
            <= dos
            <= p.local_date + dt.timedelta(days=after)
        ):
            return {GLOBAL_PERIOD}
    return set()


def rpm_gates(line: ClaimLine, periods: Sequence[RpmEnrolled]) -> set[str]:
    for r in periods:
        if r.period_start <= line.period_end and line.period_start <= r.period_end:
            return {RPM_OVERLAP}
    return set()


def icd_gates(line: ClaimLine) -> set[str]:
    if all(icd10_cm_billable(code) for code in line.diagnosis_codes):
        return set()
    return {ICD10_NOT_BILLABLE}


def readiness_of(checks: Iterable[str]) -> Readiness:
    codes = list(checks)
    if any(SEVERITY[c] == "blocked" for c in codes):
        return "blocked"
    return "warn" if codes else "ready"


class AssessedLine(BaseModel):
    """A claim line with its readiness. ``line`` carries KX in its modifiers when
    KX_REQUIRED fired. ``price`` and ``year_to_date`` on therapy lines only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line: ClaimLine
    org: str
    checks: tuple[str, ...]
    readiness: Readiness
    price: Decimal | None = None
    year_to_date: Decimal | None = None

    @property
    def checks_text(self) -> str:
        return "+".join(self.checks)


class MissingFees(ValueError):
    """Therapy lines without a fee: their year-to-date cannot be computed."""

    def __init__(self, lines: Sequence[tuple[ClaimLine, str | None]]) -> None:
        self.lines = list(lines)
        super().__init__(
            "; ".join(
                f"no fee for therapy line {ln.patient_id} {ln.episode_id} {ln.cpt}"
                f" {ln.date_of_service.isoformat()} (locality {loc or 'none'})"
                for ln, loc in self.lines
            )
        )


LocalityOf = Callable[[str, ClaimLine], str | None]


def _first_data_days(states: Mapping[str, PatientBillingState]) -> dict[tuple[str, str], dt.date]:
    """(patient, episode) -> its first data day, else its start date."""
    out: dict[tuple[str, str], dt.date] = {}
    for pid, state in states.items():
        days = episode_data_days(state)
        for ep in state.book.episodes.values():
            mine = days.get(ep.episode_id)
            out[(pid, ep.episode_id)] = min(mine) if mine else ep.start_date
    return out


def assess(
    lines: Iterable[ClaimLine],
    states: Mapping[str, PatientBillingState],
    facts: ReadinessFacts,
    as_of: dt.datetime,
    fees: Sequence[FeeEntry],
    locality_of: LocalityOf,
    config: ReadinessConfig = DEFAULT_READINESS_CONFIG,
    thresholds: ThresholdTable | None = None,
    strict_fees: bool = True,
) -> list[AssessedLine]:
    """The readiness of ``lines`` (from ``billing.rules.compute_claims`` over ``states``) as
    of ``as_of`` (timezone-aware): facts that occurred after it do not count. Returned in
    export order (``ClaimLine.sort_key``), which is the order of the year-to-date sums.

    ``locality_of(org, line)`` names the fee-schedule locality of a line (None: unknown).
    Raises ``MissingFees`` naming every therapy line without a fee; with ``strict_fees``
    False (the submission path, where an X12 claim without a fee is left out anyway) such a
    line is assessed without a price: it adds nothing to the year-to-date and KX is not
    judged on it.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (e.g. 2027-03-01T00:00:00Z)")
    table = thresholds if thresholds is not None else default_thresholds()
    ix = _index(facts, as_of)
    first_days = _first_data_days(states)

    def sent(org: str, stream: Stream) -> bool:
        mode = config.mode(org, stream)
        return mode == "sent" or (mode == "auto" and (org, stream) in ix.sent)

    out: list[AssessedLine] = []
    missing: list[tuple[ClaimLine, str | None]] = []
    own: dict[tuple[str, int, Bucket], Decimal] = defaultdict(Decimal)
    for line in sorted(lines, key=ClaimLine.sort_key):
        org = facts.org_of(line.patient_id, line.episode_id)
        episode = (line.patient_id, line.episode_id)
        bucket = therapy_bucket(line)
        checks: set[str] = set()

        if sent(org, "consent"):
            checks |= consent_gates(line, ix.consents.get(episode, []))
        else:
            checks.add(UNKNOWN_CODE["consent"])
        if bucket is not None:  # POC gates skip physicians' lines: no therapy plan of care
            if sent(org, "poc"):
                first_day = first_days.get(episode, line.period_start)
                checks |= poc_gates(line, ix.certs.get(episode, []), first_day)
            else:
                checks.add(UNKNOWN_CODE["poc"])
        if sent(org, "procedures"):
            checks |= global_period_gates(line, ix.procedures.get(line.patient_id, []))
        else:
            checks.add(UNKNOWN_CODE["procedures"])
        if sent(org, "rpm"):
            checks |= rpm_gates(line, ix.rpm.get(line.patient_id, []))
        else:
            checks.add(UNKNOWN_CODE["rpm"])
        checks |= icd_gates(line)

        price: Decimal | None = None
        ytd: Decimal | None = None
        if bucket is not None:
            year = line.date_of_service.year
            locality = locality_of(org, line)
            fee = fee_for(fees, line.cpt, locality, line.date_of_service) if locality else None
            # Spend not sent: no external amount (0); the patient's own lines still count.
            external = Decimal(0)
            if sent(org, "spend"):
                report = ix.spend.get((line.patient_id, year, bucket))
                external = report.amount_allowed_ytd if report is not None else Decimal(0)
            else:
                checks.add(UNKNOWN_CODE["spend"])
            if fee is None:
                missing.append((line, locality))
            else:
                price = fee.amount * line.units
                own[(line.patient_id, year, bucket)] += price
                ytd = external + own[(line.patient_id, year, bucket)]
                limits = table.for_year(year)
                if ytd >= limits.kx:
                    checks.add(KX_REQUIRED)
                    if KX_MODIFIER not in line.modifiers:
                        line = line.model_copy(update={"modifiers": (*line.modifiers, "KX")})
                if ytd > limits.review:
                    checks.add(MEDICAL_REVIEW_THRESHOLD)
        ordered = tuple(sorted(checks))
        out.append(
            AssessedLine(
                line=line,
                org=org,
                checks=ordered,
                readiness=readiness_of(ordered),
                price=price,
                year_to_date=ytd,
            )
        )
    if missing and strict_fees:
        raise MissingFees(missing)
    return out


# --- CSV ------------------------------------------------------------------------------------

READINESS_COLUMNS: tuple[str, ...] = (*CSV_COLUMNS, "readiness", "checks")


def readiness_row(assessed: AssessedLine) -> list[str]:
    return [*csv_row(assessed.line), assessed.readiness, assessed.checks_text]


def write_readiness_csv(assessed: Iterable[AssessedLine], out: TextIO) -> None:
    """The claims CSV of ``rtm billing evaluate`` (KX in ``modifiers``), then
    ``readiness,checks``; rows in export order."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(READINESS_COLUMNS)
    for a in sorted(assessed, key=lambda a: a.line.sort_key()):
        writer.writerow(readiness_row(a))


# --- streamed ---------------------------------------------------------------------------------


def resolved_config(
    modes: Mapping[str, Mapping[Stream, StreamMode]],
    seen: Iterable[tuple[str, Stream]],
    orgs: Iterable[str],
) -> ReadinessConfig:
    """The configuration of ``orgs`` with ``auto`` resolved: ``sent`` once the organisation
    has sent the stream (``seen``: (organisation, stream)), else ``not_sent``. For a worker
    that assesses some patients' lines with the facts of those patients only, as of a time
    after every fact it holds: it then gives what ``assess`` gives over the whole log."""
    seen_set = set(seen)
    streams: dict[str, dict[Stream, StreamMode]] = {}
    for org in orgs:
        mine = modes.get(org, {})
        resolved: dict[Stream, StreamMode] = {}
        for s in STREAMS:
            mode = mine.get(s, "auto")
            if mode == "auto":
                mode = "sent" if (org, s) in seen_set else "not_sent"
            resolved[s] = mode
        streams[org] = resolved
    return ReadinessConfig(streams=streams)


def config_for(org: str, modes: Mapping[Stream, StreamMode]) -> ReadinessConfig:
    """One organisation's configuration (``modes``: as set; a stream not named is ``auto``).
    Events that name no organisation belong to the default one where the worker keys them
    and to ``UNNAMED_ORG`` where the rules read them: the default organisation's modes hold
    for both."""
    names = {org, UNNAMED_ORG} if org == DEFAULT_ORG else {org}
    return ReadinessConfig(streams={n: dict(modes) for n in names})


def streams_of(events: Iterable[Event]) -> set[tuple[str, Stream]]:
    """(organisation, stream) of the readiness facts among ``events``."""
    return {
        (org_key(e.org_id), STREAM_OF_TYPE[e.type]) for e in events if isinstance(e, FACT_MODELS)
    }
