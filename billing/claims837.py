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
fields a file needs; a submission with any is refused. ``render_837p`` writes the
005010X222A1 interchange; the control number (ISA13/GS06/ST02) and the time are arguments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from typing import Literal

from billing.amend import GroupKey, lines_to_export, withdrawn_lines
from billing.demographics import Demographics
from billing.fees import FeeEntry, fee_for
from billing.profile import BillingProfile, missing_fields
from billing.rules import ClaimLine
from schemas.events import DEFAULT_ORG

Frequency = Literal["1", "7", "8"]
Usage = Literal["P", "T"]
FREQUENCY_NAMES: dict[str, str] = {"1": "original", "7": "replacement", "8": "void"}


def _short_id(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length].upper()


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
    return "RTM" + _short_id("export", str(submission_id), *_claim_of(line))


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
        cid = "RTM" + _short_id(*_org_part(org_id), *_claim_of(lines[0]), *keys, str(n))
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


# --- the 837P ---------------------------------------------------------------------------------

ELEMENT, COMPONENT, REPETITION, SEGMENT = "*", ":", "^", "~"


def _clean(value: str) -> str:
    for sep in (ELEMENT, COMPONENT, REPETITION, SEGMENT):
        value = value.replace(sep, "-")
    return value


def _up(value: str) -> str:
    """Names and addresses: cleaned and upper case (ids keep their case)."""
    return _clean(value).upper()


def _seg(*elements: str) -> str:
    return ELEMENT.join(elements).rstrip(ELEMENT) + SEGMENT


def line_control_number(line: ClaimLine, org_id: str = DEFAULT_ORG) -> str:
    """REF*6R: stable per line (organisation, patient, episode, code, period) and unique in
    a claim."""
    return _short_id(
        *_org_part(org_id),
        line.patient_id,
        line.episode_id,
        line.cpt,
        line.period_start.isoformat(),
        length=20,
    )


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


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
    head_profile = profiles[sorted({c.claim.first.billing_npi for c in claims})[0]]
    sender, receiver = head_profile.submitter_id, head_profile.receiver_id
    ctl9 = f"{control_number:09d}"
    head = [
        _seg(
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            "ZZ",
            sender.ljust(15),
            "ZZ",
            receiver.ljust(15),
            created.strftime("%y%m%d"),
            created.strftime("%H%M"),
            REPETITION,
            "00501",
            ctl9,
            "0",
            usage,
            COMPONENT,
        ),
        _seg(
            "GS",
            "HC",
            sender,
            receiver,
            created.strftime("%Y%m%d"),
            created.strftime("%H%M"),
            str(control_number),
            "X",
            "005010X222A1",
        ),
    ]
    per = ["PER", "IC", _up(head_profile.submitter_contact), "TE", head_profile.submitter_phone]
    if head_profile.submitter_email:
        per += ["EM", head_profile.submitter_email]
    body = [
        _seg("ST", "837", ctl9, "005010X222A1"),
        _seg("BHT", "0019", "00", ctl9, created.strftime("%Y%m%d"), created.strftime("%H%M"), "CH"),
        _seg("NM1", "41", "2", _up(head_profile.submitter_name), "", "", "", "", "46", sender),
        _seg(*per),
        _seg("NM1", "40", "2", _up(head_profile.receiver_name), "", "", "", "", "46", receiver),
    ]
    hl = 0
    ordered = sorted(claims, key=lambda c: (_claim_of(c.claim.first)[:4], c.claim.claim_id))
    for npi, by_provider in groupby(ordered, key=lambda c: c.claim.first.billing_npi):
        p = profiles[npi]
        hl += 1
        provider_hl = hl
        a = p.provider_address
        body += [
            _seg("HL", str(provider_hl), "", "20", "1"),
            _seg("PRV", "BI", "PXC", p.provider_taxonomy),
            _seg("NM1", "85", "2", _up(p.provider_name), "", "", "", "", "XX", npi),
            _seg("N3", _up(a.line1), *([_up(a.line2)] if a.line2 else [])),
            _seg("N4", _up(a.city), a.state, a.zip),
            _seg("REF", "EI", p.provider_tax_id),
        ]
        if p.pay_to_address is not None and p.pay_to_address != a:
            t = p.pay_to_address
            body += [
                _seg("NM1", "87", "2"),
                _seg("N3", _up(t.line1), *([_up(t.line2)] if t.line2 else [])),
                _seg("N4", _up(t.city), t.state, t.zip),
            ]
        for (_, _patient_id, payer, member_id), by_sub in groupby(
            list(by_provider), key=lambda c: _claim_of(c.claim.first)[:4]
        ):
            hl += 1
            group = list(by_sub)
            d = group[0].demographics
            info = p.payer(payer)
            assert info is not None  # envelope_problems checked it
            body += [
                _seg("HL", str(hl), str(provider_hl), "22", "0"),
                _seg("SBR", "P", "18", "", "", "", "", "", "", info.claim_filing),
                _seg(
                    "NM1",
                    "IL",
                    "1",
                    _up(d.last_name),
                    _up(d.first_name),
                    _up(d.middle_name),
                    "",
                    "",
                    "MI",
                    _clean(member_id),
                ),
                _seg("N3", _up(d.address1), *([_up(d.address2)] if d.address2 else [])),
                _seg("N4", _up(d.city), d.state, d.zip),
                _seg("DMG", "D8", d.birth_date.strftime("%Y%m%d"), d.sex),
                _seg("NM1", "PR", "2", _up(info.name), "", "", "", "", "PI", info.payer_id),
            ]
            for ready in group:
                body += _claim_segments(ready, p)
    body.append(_seg("SE", str(len(body) + 1), ctl9))
    tail = [_seg("GE", "1", str(control_number)), _seg("IEA", "1", ctl9)]
    return "\n".join(head + body + tail) + "\n"


def _claim_segments(ready: ReadyClaim, profile: BillingProfile) -> list[str]:
    c = ready.claim
    first = c.first
    dx = [d.replace(".", "") for d in first.diagnosis_codes[:12]]
    out = [
        _seg(
            "CLM",
            c.claim_id,
            _money(ready.total),
            "",
            "",
            COMPONENT.join((first.place_of_service, "B", c.frequency)),
            "Y",
            "A",
            "Y",
            "Y",
        )
    ]
    if c.frequency != "1":
        out.append(_seg("REF", "F8", _clean(ready.payer_claim_number)))
    out += [
        # medical record number: the pseudonymous patient id, to find the patient again
        _seg("REF", "EA", _clean(first.patient_id)[:50]),
        _seg(
            "HI", *(COMPONENT.join(("ABK" if i == 0 else "ABF", code)) for i, code in enumerate(dx))
        ),
    ]
    if first.rendering_npi != first.billing_npi:
        rp = profile.rendering_providers[first.rendering_npi]
        out.append(
            _seg(
                "NM1",
                "82",
                "1",
                _up(rp.last_name),
                _up(rp.first_name),
                "",
                "",
                "",
                "XX",
                first.rendering_npi,
            )
        )
    pointers = COMPONENT.join(str(i + 1) for i in range(min(4, len(dx))))
    for n, (ln, amount) in enumerate(zip(c.lines, ready.charges, strict=True), start=1):
        out += [
            _seg("LX", str(n)),
            _seg(
                "SV1",
                COMPONENT.join(("HC", ln.cpt, *ln.modifiers[:4])),
                _money(amount),
                "UN",
                str(ln.units),
                "",
                "",
                pointers,
            ),
            _seg("DTP", "472", "D8", ln.date_of_service.strftime("%Y%m%d")),
            _seg("REF", "6R", line_control_number(ln, profile.org_id)),
        ]
    return out
