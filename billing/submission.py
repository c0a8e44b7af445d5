"""What the next export or submission of an organisation is (pure): the decisions of
``streams.services.claims``, made on what it read, before it writes anything.

- ``preview_lines``: the lines a look at [date_from, date_to] shows: the claims the rules
  give as of ``as_of``, less what earlier recorded exports already billed unchanged,
  changed groups marked ``amended``, and the groups billed earlier that the rules no
  longer bill (``withdrawn``).
- ``plan_export``: the same lines, each with the claim id a submission would give it
  (``billing.claims837.plan_claims``), so that later replacements and voids find their
  claim; withdrawn groups are reported, not voided, on this path.
- ``plan_submission``: the claims of the next submission (new originals, whole-claim
  replacements, voids of withdrawn groups), for X12 checked against the billing profile
  (a missing field refuses the whole file: ``SubmissionRefused``), the demographics, the
  fee schedule and the payer's claim control numbers (a claim lacking one is left out and
  named in ``problems``). ``render_submission`` writes its file once the control number is
  known; ``submission_file_name`` names it.
- Readiness (docs/billing-readiness.md): a submission's lines are assessed as of its as-of
  (``billing.readiness.assess`` over every claim of the organisation, so the therapy
  year-to-date counts lines outside the range too); a blocked group is refused (``refused``:
  left out, not recorded, kept for the next run) unless an override holds every blocked
  code of each of its blocked lines; KX goes into the lines' modifiers where the gates say
  so; each recorded line keeps its readiness and checks (``SubmissionPlan.readiness``).
- ``plan_fingerprint``: a digest of what a submission would record (its claims and lines,
  format, usage and dates), so that a person who reviewed a plan submits that plan and no
  other (the dashboard's confirmation step).

The history is what the database recorded, oldest first (``RecordedLine``); ``taken`` are
the claim ids the organisation ever used for these patients (a claim id is never reused).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Literal

from billing.amend import GroupKey, lines_to_export, standing_lines, withdrawn_lines
from billing.claims837 import (
    ClaimProblem,
    PlannedClaim,
    ReadyClaim,
    RecordedLine,
    envelope_problems,
    plan_claims,
    prepare_837p,
    render_837p,
)
from billing.config import DEFAULT_CONFIG, BillingConfig
from billing.demographics import Demographics
from billing.export import render_csv, render_fhir
from billing.fees import FeeEntry
from billing.profile import BillingProfile
from billing.readiness import (
    SEVERITY,
    AssessedLine,
    ReadinessConfig,
    ReadinessFacts,
    assess,
)
from billing.rules import ClaimLine, compute_claims
from billing.state import PatientBillingState
from billing.x12 import Usage

Format = Literal["csv", "x12", "fhir"]
FORMATS: tuple[Format, ...] = ("csv", "x12", "fhir")
FILE_EXTENSIONS: dict[str, str] = {"x12": "x12", "csv": "csv", "fhir": "json"}


class SubmissionRefused(ValueError):
    """A submission that cannot go out at all (e.g. a required profile field is missing):
    nothing is recorded and no control number is used. ``problems`` names each field."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("submission refused: " + "; ".join(problems))
        self.problems = list(problems)


def check_submission_request(fmt: str, usage: str) -> None:
    """ValueError for a format or usage no submission has (before anything is read)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if usage not in ("P", "T"):
        raise ValueError("usage must be P or T")


def claims_in_range(
    states: Iterable[PatientBillingState],
    as_of: dt.datetime,
    date_from: dt.date,
    date_to: dt.date,
    config: BillingConfig = DEFAULT_CONFIG,
    include_open: bool = False,
) -> list[ClaimLine]:
    """The claims the rules give as of ``as_of`` with a date of service in the range."""
    return [
        ln
        for ln in compute_claims(states, as_of, config, include_open)
        if date_from <= ln.date_of_service <= date_to
    ]


def exports_of(history: Iterable[RecordedLine]) -> list[list[ClaimLine]]:
    """The recorded lines per export, oldest export first (for ``standing_lines``)."""
    ordered = sorted(history, key=lambda r: r.submission_id)
    return [[r.line for r in rows] for _, rows in groupby(ordered, key=lambda r: r.submission_id)]


# --- readiness: the gates on what a submission or export bills --------------------------------


LineId = tuple[str, str, str, dt.date]  # patient, episode, CPT, date of service


def line_id(line: ClaimLine) -> LineId:
    """A line as a person names it (``rtm billing override --line``)."""
    return (line.patient_id, line.episode_id, line.cpt, line.date_of_service)


def line_text(line: ClaimLine) -> str:
    """``PATIENT EPISODE CPT DOS``, as the CLI prints a refused line and reads ``--line``."""
    return f"{line.patient_id} {line.episode_id} {line.cpt} {line.date_of_service.isoformat()}"


@dataclass(frozen=True)
class Override:
    """A recorded override (``streams.services.claims.override``): it lets its line out
    while the line's blocked codes are all among ``codes``."""

    override_id: int
    line: LineId
    codes: frozenset[str]


@dataclass(frozen=True)
class ReadinessInputs:
    """What the gates need besides the ledger, as read for the organisation."""

    facts: ReadinessFacts = field(default_factory=ReadinessFacts)
    fees: Sequence[FeeEntry] = ()
    localities: Mapping[str, str] = field(default_factory=dict)  # billing NPI -> locality
    overrides: Sequence[Override] = ()
    config: ReadinessConfig = field(default_factory=ReadinessConfig)


@dataclass(frozen=True)
class LineReadiness:
    """The readiness a recorded line is stored with (``override_id``: what let it out)."""

    readiness: str
    checks: tuple[str, ...]
    override_id: int | None = None


def blocked_codes(a: AssessedLine) -> frozenset[str]:
    return frozenset(c for c in a.checks if SEVERITY[c] == "blocked")


def override_for(a: AssessedLine, overrides: Sequence[Override]) -> Override | None:
    """The latest override of a blocked line that holds all its current blocked codes."""
    codes = blocked_codes(a)
    fits = [o for o in overrides if o.line == line_id(a.line) and codes <= o.codes]
    return max(fits, key=lambda o: o.override_id, default=None)


@dataclass(frozen=True)
class Gated:
    lines: list[ClaimLine]  # what the plan bills (KX applied; refused groups as they stand)
    refused: list[AssessedLine]  # blocked lines without an override, left for the next run
    readiness: dict[LineId, LineReadiness]


def gate_lines(
    states: Mapping[str, PatientBillingState],
    standing: Sequence[ClaimLine],
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime,
    inputs: ReadinessInputs,
    config: BillingConfig = DEFAULT_CONFIG,
) -> Gated:
    """The claims in [date_from, date_to] as of ``as_of`` after the readiness gates. A
    group (``ClaimLine.key``) with a blocked line that no override lets out is refused
    whole (an add-on never goes without its base line); if it was billed before, its
    standing lines stay as they are (neither amended nor voided)."""
    every = compute_claims(states.values(), as_of, config, False)

    def locality_of(_org: str, line: ClaimLine) -> str | None:
        return inputs.localities.get(line.billing_npi) or None

    assessed = [
        a
        for a in assess(
            every,
            states,
            inputs.facts,
            as_of,
            inputs.fees,
            locality_of,
            inputs.config,
            strict_fees=False,
        )
        if date_from <= a.line.date_of_service <= date_to
    ]
    refused: list[AssessedLine] = []
    readiness: dict[LineId, LineReadiness] = {}
    for a in assessed:
        found = override_for(a, inputs.overrides) if a.readiness == "blocked" else None
        if a.readiness == "blocked" and found is None:
            refused.append(a)
        readiness[line_id(a.line)] = LineReadiness(
            a.readiness, a.checks, found.override_id if found else None
        )
    held: set[GroupKey] = {a.line.key for a in refused}
    lines = [a.line for a in assessed if a.line.key not in held]
    lines += [ln for ln in standing if ln.key in held]
    return Gated(sorted(lines, key=ClaimLine.sort_key), refused, readiness)


# --- a look, and a recorded export ---------------------------------------------------------------


@dataclass(frozen=True)
class ExportPlan:
    lines: list[ClaimLine]  # the lines of the export (a look's, or what gets recorded)
    withdrawn: list[ClaimLine]  # billed earlier, no longer billable (void them)
    claims: list[ClaimLine] = field(default_factory=list)  # what the rules give now
    claim_ids: list[str | None] = field(default_factory=list)  # per line, when recorded
    planned: list[PlannedClaim] = field(default_factory=list)  # the claims of those ids
    refused: list[AssessedLine] = field(default_factory=list)  # blocked, for the next run
    readiness: Mapping[LineId, LineReadiness] = field(default_factory=dict)


def preview_lines(
    states: Mapping[str, PatientBillingState],
    history: Sequence[RecordedLine],
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime,
    config: BillingConfig = DEFAULT_CONFIG,
    include_open: bool = False,
) -> ExportPlan:
    """The lines of a look at [date_from, date_to] (``states``: every patient of the
    organisation; ``history``: their recorded lines) and the withdrawn ones."""
    claims = claims_in_range(states.values(), as_of, date_from, date_to, config, include_open)
    standing = standing_lines(exports_of(history))
    in_range = [ln for ln in standing if date_from <= ln.date_of_service <= date_to]
    return ExportPlan(
        lines=lines_to_export(standing, claims),
        withdrawn=withdrawn_lines(in_range, claims),
        claims=claims,
    )


def plan_export(
    org_id: str,
    states: Mapping[str, PatientBillingState],
    history: Sequence[RecordedLine],
    taken: Collection[str],
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime,
    config: BillingConfig = DEFAULT_CONFIG,
    readiness: ReadinessInputs | None = None,
) -> ExportPlan:
    """The lines of a recorded export (closed periods/months only), each with the claim id
    a submission would give it, and the claims of those ids (to record). The readiness
    gates run as for a submission (``gate_lines``): blocked lines are refused
    (``ExportPlan.refused``), not recorded, kept for the next run."""
    standing = standing_lines(exports_of(history))
    gated = gate_lines(
        states, standing, date_from, date_to, as_of, readiness or ReadinessInputs(), config
    )
    in_range = [ln for ln in standing if date_from <= ln.date_of_service <= date_to]
    lines = lines_to_export(standing, gated.lines)
    planned = plan_claims(history, gated.lines, date_from, date_to, taken, org_id)
    claim_of = {ln.key: c for c in planned for ln in c.record if ln.status != "void"}
    return ExportPlan(
        lines=lines,
        withdrawn=withdrawn_lines(in_range, gated.lines),
        claims=gated.lines,
        claim_ids=[claim_of[ln.key].claim_id if ln.key in claim_of else None for ln in lines],
        planned=list({c.claim_id: c for c in claim_of.values()}.values()),
        refused=gated.refused,
        readiness=gated.readiness,
    )


# --- a submission --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parties:
    """What an X12 file needs besides the claims, as read for the organisation."""

    profiles: Mapping[str, BillingProfile]
    demographics: Mapping[str, Demographics]
    fees: Sequence[FeeEntry]
    payer_claim_numbers: Mapping[str, str]  # claim id -> the payer's claim control number


@dataclass(frozen=True)
class SubmissionPlan:
    fmt: Format
    claims: list[PlannedClaim]  # what goes out (for X12: the ready claims' claims)
    ready: list[ReadyClaim]  # X12 only: the claims with demographics and charges
    problems: list[ClaimProblem]  # claims left out, each naming its field
    withdrawn: list[ClaimLine]
    profiles: Mapping[str, BillingProfile] = field(default_factory=dict)
    refused: list[AssessedLine] = field(default_factory=list)  # blocked, for the next run
    readiness: Mapping[LineId, LineReadiness] = field(default_factory=dict)

    def readiness_of(self, line: ClaimLine) -> LineReadiness | None:
        """The readiness a recorded line is stored with (None: a void, or no gates ran)."""
        return None if line.status == "void" else self.readiness.get(line_id(line))

    @property
    def record(self) -> list[tuple[str, ClaimLine]]:
        """(claim id, line) of every line submitting adds to the history."""
        return [(c.claim_id, ln) for c in self.claims for ln in c.record]


def plan_submission(
    org_id: str,
    states: Mapping[str, PatientBillingState],
    history: Sequence[RecordedLine],
    taken: Collection[str],
    date_from: dt.date,
    date_to: dt.date,
    as_of: dt.datetime,
    fmt: Format,
    parties: Parties | None = None,
    config: BillingConfig = DEFAULT_CONFIG,
    readiness: ReadinessInputs | None = None,
) -> SubmissionPlan:
    """The organisation's next submission (closed periods/months with a date of service in
    [date_from, date_to]). X12 needs ``parties``: a claim lacking demographics, a fee or
    the payer's claim control number is left out (``problems``); a profile lacking a field
    the file needs refuses it all (``SubmissionRefused``). ``readiness``: the facts, fees,
    localities and overrides of the gates (None: none of them, every stream not sent)."""
    # one sequence of every recorded line, as submissions always folded it
    standing = standing_lines([[r.line for r in history]])
    gated = gate_lines(
        states, standing, date_from, date_to, as_of, readiness or ReadinessInputs(), config
    )
    current = gated.lines
    planned = plan_claims(history, current, date_from, date_to, taken, org_id)
    withdrawn = withdrawn_lines(
        [ln for ln in standing if date_from <= ln.date_of_service <= date_to], current
    )
    if fmt != "x12" or not planned:
        return SubmissionPlan(
            fmt, list(planned), [], [], withdrawn, {}, gated.refused, gated.readiness
        )
    if parties is None:
        raise ValueError("an X12 submission needs the billing profiles, demographics and fees")
    refused = envelope_problems(planned, parties.profiles)
    if refused:
        raise SubmissionRefused(refused)
    ready, problems = prepare_837p(
        planned,
        parties.profiles,
        parties.demographics,
        parties.fees,
        parties.payer_claim_numbers,
    )
    return SubmissionPlan(
        fmt,
        [r.claim for r in ready],
        ready,
        problems,
        withdrawn,
        parties.profiles,
        gated.refused,
        gated.readiness,
    )


def render_submission(
    plan: SubmissionPlan,
    control_number: int | None,
    usage: Usage,
    created: dt.datetime,
    config: BillingConfig = DEFAULT_CONFIG,
) -> str:
    """The file of a submission with claims: X12 (``control_number``: 0 for a dry run,
    usage T), CSV with the conventions, or a FHIR bundle."""
    if plan.fmt == "x12":
        if control_number is None:
            raise ValueError("an X12 submission needs a control number")
        return render_837p(plan.ready, plan.profiles, control_number, usage, created)
    lines = [ln for c in plan.claims for ln in c.record]
    if plan.fmt == "csv":
        return render_csv(lines, config)
    return render_fhir(lines, created)


def plan_fingerprint(
    plan: SubmissionPlan, date_from: dt.date, date_to: dt.date, usage: Usage
) -> str:
    """A digest of what submitting ``plan`` records: format, usage, dates, and each claim
    (id, frequency) with the lines it adds to the history. Two plans with the same
    fingerprint record the same rows."""
    h = hashlib.sha256(f"{plan.fmt}|{usage}|{date_from}|{date_to}".encode())
    for claim in plan.claims:
        h.update(f"\nclaim|{claim.claim_id}|{claim.frequency}".encode())
        for ln in claim.record:
            h.update(b"\n" + ln.model_dump_json().encode())
            r = plan.readiness_of(ln)
            if r is not None:
                h.update(f"|{r.readiness}|{'+'.join(r.checks)}|{r.override_id}".encode())
    return h.hexdigest()[:32]


def submission_file_name(org_id: str, submission_id: int, control: int | None, fmt: str) -> str:
    return (
        f"{org_id}-submission-{submission_id:06d}"
        + (f"-isa{control:09d}" if control else "")
        + f".{FILE_EXTENSIONS[fmt]}"
    )
