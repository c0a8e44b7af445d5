"""Claims a clearinghouse takes: claim identity and lifecycle, and the X12 837P (pure).

Claim identity. A *claim* is what one submission sent for one billing NPI, patient, payer,
member id and episode; its id (CLM01, the patient control number) is fixed when it is first
submitted and never changes. A patient is (organisation, patient_id): the ids of claims and
of their lines (REF*6R) name the organisation too (DEFAULT_ORG's as they always were), so
one patient_id in two organisations never gives both the same ones. Each recorded line
carries its claim id, so the history says which claim holds which period/month
(``ClaimLine.key``).

Lifecycle (``plan_claims``), against what stands after earlier submissions:
- a group never submitted goes on a new claim, frequency 1 (original);
- a group whose billing content changed (98985 -> 98977 after a late data day) makes its
  claim a replacement, frequency 7: the *whole* corrected claim (its other, unchanged
  lines too), with ``REF*F8`` = the payer's claim control number;
- a group the rules no longer bill (withdrawn) leaves its claim: a replacement without it
  when other lines remain, else a void, frequency 8, repeating the voided lines, with
  ``REF*F8``. Recording a void marks the group ``void`` so it no longer stands.

``prepare_837p`` checks each claim against the billing profile, the demographics and the
fee schedule: a claim that lacks any of them (or a replacement/void without the payer's
claim control number) is a ``ClaimProblem`` naming the field, left out of the file and not
recorded, so it comes back on the next submission. ``envelope_problems`` names the profile
fields a file needs; a submission with any is refused. ``render_837p`` gives the
005010X222A1 interchange of ready claims; the control number (ISA13/GS06/ST02) and the time
are arguments. ``render_draft_837p`` is the free preview of claim lines: placeholder parties,
charges 0.00, always a test interchange (ISA15 = T). Both only fill in a
``billing.x12.Interchange``: ``billing.x12.write_837p`` is the one writer.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from typing import Literal

from billing import x12
from billing.amend import GroupKey, lines_to_export, withdrawn_lines
from billing.demographics import Demographics
from billing.fees import FeeEntry, fee_for
from billing.profile import Address, BillingProfile, missing_fields
from billing.rules import ClaimLine
from billing.x12 import Usage, short_id
from schemas.events import DEFAULT_ORG

Frequency = Literal["1", "7", "8"]
FREQUENCY_NAMES: dict[str, str] = {"1": "original", "7": "replacement", "8": "void"}


@dataclass(frozen=True)
class RecordedLine:
    """A line as recorded by a submission (oldest first); ``claim_id`` None for lines
    recorded before claims had ids (they get one derived from their export)."""

    submission_id: int
    claim_id: str | None
    line: ClaimLine


@dataclass(frozen=True)
class PlannedClaim:
    claim_id: str
    frequency: Frequency
    lines: tuple[ClaimLine, ...]  # what the CLM carries: the whole claim
    record: tuple[ClaimLine, ...]  # what submitting it adds to the history

    @property
    def first(self) -> ClaimLine:
        return self.lines[0]


def _claim_of(line: ClaimLine) -> tuple[str, str, str, str, str]:
    return (line.billing_npi, line.patient_id, line.payer, line.member_id, line.episode_id)


def legacy_claim_id(submission_id: int, line: ClaimLine) -> str:
    return "RTM" + short_id("export", str(submission_id), *_claim_of(line), length=17)


def standing_claims(history: Iterable[RecordedLine]) -> dict[GroupKey, tuple[str, list[ClaimLine]]]:
    """Per group (``ClaimLine.key``): the claim holding it and its standing lines. A later
    submission's lines of a group replace the earlier ones; a group last recorded as
    ``void`` no longer stands; previews are ignored."""
    standing: dict[GroupKey, tuple[str, list[ClaimLine]]] = {}
    ordered = sorted(history, key=lambda r: r.submission_id)
    for _, rows in groupby(ordered, key=lambda r: r.submission_id):
        groups: dict[GroupKey, tuple[str, list[ClaimLine]]] = {}
        for r in rows:
            if r.line.status == "preview":
                continue
            cid = r.claim_id or legacy_claim_id(r.submission_id, r.line)
            groups.setdefault(r.line.key, (cid, []))[1].append(r.line)
        for key, (cid, lines) in groups.items():
            if all(ln.status == "void" for ln in lines):
                standing.pop(key, None)
            else:
                standing[key] = (cid, lines)
    return standing


def _org_part(org_id: str) -> tuple[str, ...]:
    """What an id adds for the organisation: nothing for DEFAULT_ORG (its ids stay as they
    were before patients were scoped by organisation), the org id otherwise."""
    return () if org_id == DEFAULT_ORG else ("org", org_id)


def new_claim_id(lines: Sequence[ClaimLine], taken: set[str], org_id: str = DEFAULT_ORG) -> str:
    """A stable id for a new claim of ``org_id``: the same lines give the same id (a
    preview shows the id the submission will use); never one already ``taken``."""
    keys = sorted(repr(ln.key) for ln in lines)
    n = 0
    while True:
        cid = "RTM" + short_id(*_org_part(org_id), *_claim_of(lines[0]), *keys, str(n), length=17)
        if cid not in taken:
            return cid
        n += 1


def plan_claims(
    history: Sequence[RecordedLine],
    current: Sequence[ClaimLine],
    date_from: dt.date,
    date_to: dt.date,
    taken_ids: Iterable[str] = (),
    org_id: str = DEFAULT_ORG,
) -> list[PlannedClaim]:
    """The claims of the next submission of ``org_id``: replacements and voids of standing
    claims that changed, then new claims. ``current``: the claims the rules give now with a
    date of service in [date_from, date_to], over the patients of ``history`` (all of one
    organisation); withdrawn groups are looked for in that range only."""
    standing = standing_claims(history)
    flat = [ln for _, lines in standing.values() for ln in lines]
    pending = lines_to_export(flat, current)
    in_range = [ln for ln in flat if date_from <= ln.date_of_service <= date_to]
    withdrawn = {ln.key for ln in withdrawn_lines(in_range, current)}
    amended: dict[GroupKey, list[ClaimLine]] = defaultdict(list)
    for ln in pending:
        if ln.status == "amended":
            amended[ln.key].append(ln)
    affected = sorted({standing[k][0] for k in (*amended, *withdrawn)})
    out: list[PlannedClaim] = []
    for cid in affected:
        keys = sorted((k for k, (c, _) in standing.items() if c == cid), key=repr)
        now: list[ClaimLine] = []
        record: list[ClaimLine] = []
        for k in keys:
            if k in amended:
                now += amended[k]
                record += amended[k]
            elif k in withdrawn:
                record += [ln.model_copy(update={"status": "void"}) for ln in standing[k][1]]
            else:
                now += standing[k][1]
        if now:
            out.append(
                PlannedClaim(cid, "7", tuple(sorted(now, key=ClaimLine.sort_key)), tuple(record))
            )
        else:
            voided = [ln for k in keys for ln in standing[k][1]]
            out.append(
                PlannedClaim(cid, "8", tuple(sorted(voided, key=ClaimLine.sort_key)), tuple(record))
            )
    # every id ever used, voided claims' too: a claim id is never reused
    taken = set(taken_ids) | {
        r.claim_id or legacy_claim_id(r.submission_id, r.line) for r in history
    }
    fresh = sorted(
        (ln for ln in pending if ln.status in ("new", "preview")),
        key=lambda ln: (_claim_of(ln), ln.sort_key()),
    )
    for _, grp in groupby(fresh, key=_claim_of):
        lines = tuple(grp)
        cid = new_claim_id(lines, taken, org_id)
        taken.add(cid)
        out.append(PlannedClaim(cid, "1", lines, lines))
    return out


# --- checks against profile, demographics, fee schedule ---------------------------------------


@dataclass(frozen=True)
class ClaimProblem:
    claim_id: str
    patient_id: str
    field: str
    message: str

    def text(self) -> str:
        return f"claim {self.claim_id} (patient {self.patient_id}): {self.field}: {self.message}"


@dataclass(frozen=True)
class ReadyClaim:
    claim: PlannedClaim
    demographics: Demographics
    charges: tuple[Decimal, ...]  # SV102 per line: fee x units
    payer_claim_number: str = ""  # REF*F8 (replacements and voids)

    @property
    def total(self) -> Decimal:
        return sum(self.charges, Decimal(0))


def envelope_problems(
    claims: Sequence[PlannedClaim], profiles: Mapping[str, BillingProfile]
) -> list[str]:
    """Profile fields the file needs and lacks (``<billing NPI>: <field>``), and
    submitter/receiver ids that differ between the billing NPIs of one file."""
    out: list[str] = []
    by_npi: dict[str, list[PlannedClaim]] = defaultdict(list)
    for c in claims:
        by_npi[c.first.billing_npi].append(c)
    for npi, group in sorted(by_npi.items()):
        lines = [ln for c in group for ln in c.lines]
        for name in missing_fields(
            profiles.get(npi), {ln.payer for ln in lines}, {ln.rendering_npi for ln in lines}, npi
        ):
            out.append(f"billing NPI {npi}: {name}")
    used = [profiles[n] for n in sorted(by_npi) if n in profiles]
    for name in ("submitter_id", "receiver_id"):
        if len({getattr(p, name) for p in used}) > 1:
            out.append(
                f"{name}: differs between the profiles of billing NPIs "
                + ", ".join(p.billing_npi for p in used)
                + " (one file has one)"
            )
    return out


def prepare_837p(
    claims: Sequence[PlannedClaim],
    profiles: Mapping[str, BillingProfile],
    demographics: Mapping[str, Demographics],
    fees: Sequence[FeeEntry],
    payer_claim_numbers: Mapping[str, str],
) -> tuple[list[ReadyClaim], list[ClaimProblem]]:
    ready: list[ReadyClaim] = []
    problems: list[ClaimProblem] = []
    for c in claims:
        first = c.first
        mine: list[ClaimProblem] = []

        def problem(
            field: str,
            message: str,
            mine: list[ClaimProblem] = mine,
            c: PlannedClaim = c,
            first: ClaimLine = first,
        ) -> None:  # bound now: called within this iteration only
            mine.append(ClaimProblem(c.claim_id, first.patient_id, field, message))

        demo = demographics.get(first.patient_id)
        if demo is None:
            problem(
                "demographics",
                "no demographics loaded for this patient"
                " (rtm billing demographics load FILE.csv); not exported",
            )
        elif demo.member_id and demo.member_id != first.member_id:
            problem(
                "member_id", f"the demographics say {demo.member_id}, the episode {first.member_id}"
            )
        profile = profiles.get(first.billing_npi)
        charges: list[Decimal] = []
        for ln in c.lines:
            entry = (
                fee_for(fees, ln.cpt, profile.locality, ln.date_of_service)
                if profile is not None and profile.locality
                else None
            )
            if entry is None:
                problem(
                    "fee_schedule",
                    f"no fee for {ln.cpt} in locality"
                    f" {profile.locality if profile else '?'} on {ln.date_of_service}",
                )
            else:
                charges.append(entry.amount * ln.units)
        icn = payer_claim_numbers.get(c.claim_id, "")
        if c.frequency != "1" and not icn:
            problem(
                "payer_claim_number",
                f"a {FREQUENCY_NAMES[c.frequency]} needs the payer's"
                " claim control number (REF*F8): rtm billing claims set-icn or"
                " rtm billing remit load FILE.835",
            )
        if mine or demo is None:
            problems += mine
            continue
        ready.append(ReadyClaim(c, demo, tuple(charges), icn))
    return ready, problems


# --- the 837P: both files are billing.x12's one writer -----------------------------------------


def line_control_number(line: ClaimLine, org_id: str = DEFAULT_ORG) -> str:
    """REF*6R: stable per line (organisation, patient, episode, code, period) and unique in
    a claim."""
    return short_id(
        *_org_part(org_id),
        line.patient_id,
        line.episode_id,
        line.cpt,
        line.period_start.isoformat(),
        length=20,
    )


def _upper_address(a: Address) -> x12.Address:
    return x12.Address(a.line1.upper(), a.city.upper(), a.state, a.zip, a.line2.upper())


def render_837p(
    claims: Sequence[ReadyClaim],
    profiles: Mapping[str, BillingProfile],
    control_number: int,
    usage: Usage,
    created: dt.datetime,
) -> str:
    """An 837P 005010X222A1 interchange of ready claims. ``control_number`` (1..999999999,
    allocated by the database) is ISA13, GS06 and ST02; 0 marks a preview that is never
    sent (test usage only). ``usage`` is ISA15 (P production, T test)."""
    if not claims:
        raise ValueError("an 837P needs at least one claim")
    if not (1 <= control_number <= 999_999_999 or (control_number == 0 and usage == "T")):
        raise ValueError("control number must be 1..999999999 (0: a test preview only)")
    problems = envelope_problems([c.claim for c in claims], profiles)
    if problems:
        raise ValueError("billing profile incomplete: " + "; ".join(problems))
    head = profiles[sorted({c.claim.first.billing_npi for c in claims})[0]]
    ordered = sorted(claims, key=lambda c: (_claim_of(c.claim.first)[:4], c.claim.claim_id))
    providers: list[x12.BillingProvider] = []
    for npi, by_provider in groupby(ordered, key=lambda c: c.claim.first.billing_npi):
        p = profiles[npi]
        subscribers = [
            _subscriber(list(by_sub), p)
            for _, by_sub in groupby(list(by_provider), key=lambda c: _claim_of(c.claim.first)[:4])
        ]
        providers.append(
            x12.BillingProvider(
                npi=npi,
                name=p.provider_name.upper(),
                address=_upper_address(p.provider_address),
                tax_id=p.provider_tax_id,
                subscribers=tuple(subscribers),
                taxonomy=p.provider_taxonomy,
                pay_to=(
                    _upper_address(p.pay_to_address)
                    if p.pay_to_address is not None and p.pay_to_address != p.provider_address
                    else None
                ),
            )
        )
    return x12.write_837p(
        x12.Interchange(
            sender_id=head.submitter_id,
            receiver_id=head.receiver_id,
            submitter_name=head.submitter_name.upper(),
            submitter_contact=head.submitter_contact.upper(),
            submitter_phone=head.submitter_phone,
            submitter_email=head.submitter_email,
            receiver_name=head.receiver_name.upper(),
            control_number=control_number,
            usage=usage,
            created=created,
            providers=tuple(providers),
        )
    )


def _subscriber(group: list[ReadyClaim], p: BillingProfile) -> x12.Subscriber:
    first = group[0].claim.first
    d = group[0].demographics
    info = p.payer(first.payer)
    assert info is not None  # envelope_problems checked it
    return x12.Subscriber(
        filing_code=info.claim_filing,
        last_name=d.last_name.upper(),
        first_name=d.first_name.upper(),
        middle_name=d.middle_name.upper(),
        member_id=first.member_id,
        address=x12.Address(d.address1.upper(), d.city.upper(), d.state, d.zip, d.address2.upper()),
        birth_date=d.birth_date,
        sex=d.sex,
        payer_name=info.name.upper(),
        payer_id=info.payer_id,
        claims=tuple(_ready_claim(r, p) for r in group),
    )


def _ready_claim(ready: ReadyClaim, profile: BillingProfile) -> x12.Claim:
    c = ready.claim
    first = c.first
    rendering = None
    if first.rendering_npi != first.billing_npi:
        rp = profile.rendering_providers[first.rendering_npi]
        rendering = x12.Rendering(first.rendering_npi, rp.last_name.upper(), rp.first_name.upper())
    return x12.Claim(
        claim_id=c.claim_id,
        place_of_service=first.place_of_service,
        frequency=c.frequency,
        patient_id=first.patient_id,
        diagnosis_codes=first.diagnosis_codes,
        payer_claim_number=ready.payer_claim_number if c.frequency != "1" else None,
        rendering=rendering,
        lines=tuple(
            _service_line(ln, amount, line_control_number(ln, profile.org_id))
            for ln, amount in zip(c.lines, ready.charges, strict=True)
        ),
    )


def _service_line(ln: ClaimLine, charge: Decimal, control_number: str) -> x12.ServiceLine:
    return x12.ServiceLine(
        cpt=ln.cpt,
        modifiers=ln.modifiers,
        charge=charge,
        units=ln.units,
        date_of_service=ln.date_of_service,
        control_number=control_number,
    )


# --- the draft: the same writer with placeholder parties, a test interchange ------------------


@dataclass(frozen=True)
class DraftParties:
    """Envelope and party data of a draft, which the events do not carry: placeholders,
    good for a test interchange only (a draft is always ISA15 = T)."""

    sender_id: str = "RTMSTREAM"
    receiver_id: str = "CLEARINGHOUSE"
    submitter_name: str = "RTM STREAM"
    submitter_contact: str = "BILLING OFFICE"
    submitter_phone: str = "5555550100"
    receiver_name: str = "CLEARINGHOUSE"
    billing_provider_name: str = "RTM BILLING PROVIDER"
    billing_provider_address: str = "1 MAIN ST"
    billing_provider_city: str = "ANYTOWN"
    billing_provider_state: str = "CO"
    billing_provider_zip: str = "800000000"
    billing_provider_tax_id: str = "000000000"
    control_number: int = 1  # ISA13/GS06; the caller increments it per interchange
    delimiters: x12.Delimiters = x12.Delimiters()


def render_draft_837p(
    lines: Sequence[ClaimLine],
    created: dt.datetime,
    parties: DraftParties = DraftParties(),
    charges: Mapping[str, Decimal] | None = None,
) -> str:
    """The free preview's 837P: one service line per claim line, one claim per patient and
    episode (CLM05-3 = 7 replacement when it carries amended lines), one billing-provider
    HL per billing NPI, one subscriber HL per patient and payer. Parties are placeholders
    (``parties``), the patient id stands for the name (the stream holds no PHI) and
    ``charges`` maps a CPT code to the charge per unit (default 0.00): always a test
    interchange (ISA15 = T). What is submitted is ``render_837p`` (rtm billing submit)."""
    charges = charges or {}
    ordered = sorted(lines, key=lambda ln: (*_claim_of(ln), ln.sort_key()))
    providers: list[x12.BillingProvider] = []
    for npi, by_provider in groupby(ordered, key=lambda ln: ln.billing_npi):
        subscribers = [
            _draft_subscriber(list(by_sub), charges, parties.delimiters)
            for _, by_sub in groupby(list(by_provider), key=lambda ln: _claim_of(ln)[1:4])
        ]
        providers.append(
            x12.BillingProvider(
                npi=npi,
                name=parties.billing_provider_name,
                address=x12.Address(
                    parties.billing_provider_address,
                    parties.billing_provider_city,
                    parties.billing_provider_state,
                    parties.billing_provider_zip,
                ),
                tax_id=parties.billing_provider_tax_id,
                subscribers=tuple(subscribers),
            )
        )
    return x12.write_837p(
        x12.Interchange(
            sender_id=parties.sender_id,
            receiver_id=parties.receiver_id,
            submitter_name=parties.submitter_name,
            submitter_contact=parties.submitter_contact,
            submitter_phone=parties.submitter_phone,
            receiver_name=parties.receiver_name,
            control_number=parties.control_number,
            usage="T",
            created=created,
            providers=tuple(providers),
            transaction_set_id="0001",
            delimiters=parties.delimiters,
        )
    )


def _draft_subscriber(
    lines: list[ClaimLine], charges: Mapping[str, Decimal], d: x12.Delimiters
) -> x12.Subscriber:
    first = lines[0]
    payer = first.payer.upper()
    return x12.Subscriber(
        # MB = Medicare Part B; any other payer is sent as CI (commercial).
        filing_code="MB" if first.payer.lower() == "medicare" else "CI",
        last_name=first.patient_id,  # pseudonymous patient id as the name: no PHI
        member_id=first.member_id,
        payer_name=payer,
        payer_id=d.clean(payer)[:80],
        claims=tuple(
            _draft_claim(sorted(grp, key=ClaimLine.sort_key), charges)
            for _, grp in groupby(lines, key=lambda ln: ln.episode_id)
        ),
    )


def _draft_claim(claim: list[ClaimLine], charges: Mapping[str, Decimal]) -> x12.Claim:
    first = claim[0]
    claim_id = "RTM" + short_id(
        first.patient_id,
        first.episode_id,
        *(ln.date_of_service.isoformat() for ln in claim),
        length=17,
    )
    return x12.Claim(
        claim_id=claim_id,
        place_of_service=first.place_of_service,
        frequency="7" if any(ln.status == "amended" for ln in claim) else "1",
        patient_id=first.patient_id,
        diagnosis_codes=first.diagnosis_codes,
        rendering=(
            x12.Rendering(first.rendering_npi, "RENDERING", "PROVIDER")
            if first.rendering_npi != first.billing_npi
            else None
        ),
        lines=tuple(
            _service_line(ln, charges.get(ln.cpt, Decimal(0)) * ln.units, line_control_number(ln))
            for ln in claim
        ),
    )
