"""The one X12 837P writer (005010X222A1), pure: an ``Interchange`` in, the file's text out.

Both 837Ps of the system are this writer: the submission (``billing.claims837.render_837p``:
parties from the billing profile and demographics, charges from the fee schedule, control
numbers from the database) and the free preview (``billing.claims837.render_draft_837p``:
placeholder parties, charges 0.00, always a test interchange, ISA15 = T). They differ only
in what they put into the ``Interchange``; the envelope, the HL loops, the CLM and the
SV1/DTP/REF*6R service lines are written here, once.

Every value taken from data is cleaned of the delimiters (X12 has no escape mechanism, so a
delimiter inside a value must not reach the output); upper-casing names is the caller's
choice. Segments end with ``~`` and a newline, which X12 readers accept between segments.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

Usage = Literal["P", "T"]
IMPLEMENTATION = "005010X222A1"


def short_id(*parts: str, length: int = 20) -> str:
    """Deterministic ids (claim ids, REF*6R line numbers, FHIR ids): the same parts give
    the same id, so a re-export of the same lines yields the same identifiers."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length].upper()


def money(amount: Decimal) -> str:
    return f"{amount:.2f}"


@dataclass(frozen=True)
class Delimiters:
    element: str = "*"
    component: str = ":"
    repetition: str = "^"
    segment: str = "~"

    def clean(self, value: str) -> str:
        for sep in (self.element, self.component, self.repetition, self.segment):
            value = value.replace(sep, "-")
        return value

    def seg(self, *elements: str) -> str:
        return self.element.join(elements).rstrip(self.element) + self.segment


@dataclass(frozen=True)
class Address:
    line1: str
    city: str
    state: str
    zip: str
    line2: str = ""


@dataclass(frozen=True)
class ServiceLine:
    """LX / SV1 / DTP*472 / REF*6R."""

    cpt: str
    modifiers: tuple[str, ...]  # up to four are written
    charge: Decimal  # SV102: the line's charge (fee x units)
    units: int
    date_of_service: dt.date
    control_number: str  # REF*6R


@dataclass(frozen=True)
class Rendering:
    """NM1*82, when the rendering provider is not the billing provider."""

    npi: str
    last_name: str
    first_name: str


@dataclass(frozen=True)
class Claim:
    """CLM (its total is the sum of the lines' charges), REF*F8, REF*EA, HI, NM1*82."""

    claim_id: str
    place_of_service: str
    frequency: str  # CLM05-3: 1 original, 7 replacement, 8 void
    patient_id: str  # REF*EA: the pseudonymous patient id, to find the patient again
    diagnosis_codes: tuple[str, ...]  # ICD-10-CM as the events carry them (dots allowed)
    lines: tuple[ServiceLine, ...]
    payer_claim_number: str | None = None  # REF*F8 (replacements and voids)
    rendering: Rendering | None = None

    @property
    def total(self) -> Decimal:
        return sum((ln.charge for ln in self.lines), Decimal(0))


@dataclass(frozen=True)
class Subscriber:
    """HL 22 / SBR / NM1*IL (N3, N4, DMG when known) / NM1*PR, and its claims."""

    filing_code: str  # SBR09
    last_name: str
    member_id: str
    payer_name: str
    payer_id: str
    claims: tuple[Claim, ...]
    first_name: str = ""
    middle_name: str = ""
    address: Address | None = None
    birth_date: dt.date | None = None  # DMG with ``sex``
    sex: str = ""


@dataclass(frozen=True)
class BillingProvider:
    """HL 20 / PRV (when a taxonomy is given) / NM1*85 / N3 / N4 / REF*EI / pay-to."""

    npi: str
    name: str
    address: Address
    tax_id: str
    subscribers: tuple[Subscriber, ...]
    taxonomy: str = ""
    pay_to: Address | None = None


@dataclass(frozen=True)
class Interchange:
    """ISA/GS/ST ... SE/GE/IEA around loops 1000A/1000B and the billing providers."""

    sender_id: str  # ISA06, GS02, NM1*41 (submitter)
    receiver_id: str  # ISA08, GS03, NM1*40
    submitter_name: str
    submitter_contact: str
    submitter_phone: str
    receiver_name: str
    control_number: int  # ISA13, GS06 (and ST02 unless ``transaction_set_id``)
    usage: Usage  # ISA15
    created: dt.datetime  # ISA09/10, GS04/05, BHT04/05
    providers: tuple[BillingProvider, ...]
    submitter_email: str = ""
    transaction_set_id: str | None = None  # ST02/SE02; None: the 9-digit control number
    delimiters: Delimiters = Delimiters()


def write_837p(ix: Interchange) -> str:
    """The interchange's text."""
    d = ix.delimiters
    seg, clean = d.seg, d.clean
    ctl9 = f"{ix.control_number:09d}"
    st02 = ix.transaction_set_id or ctl9
    sender, receiver = clean(ix.sender_id), clean(ix.receiver_id)
    day, hhmm = ix.created.strftime("%Y%m%d"), ix.created.strftime("%H%M")
    head = [
        seg(
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            "ZZ",
            sender[:15].ljust(15),
            "ZZ",
            receiver[:15].ljust(15),
            ix.created.strftime("%y%m%d"),
            hhmm,
            d.repetition,
            "00501",
            ctl9,
            "0",
            ix.usage,
            d.component,
        ),
        seg("GS", "HC", sender, receiver, day, hhmm, str(ix.control_number), "X", IMPLEMENTATION),
    ]
    per = ["PER", "IC", clean(ix.submitter_contact), "TE", clean(ix.submitter_phone)]
    if ix.submitter_email:
        per += ["EM", clean(ix.submitter_email)]
    body = [
        seg("ST", "837", st02, IMPLEMENTATION),
        seg("BHT", "0019", "00", ctl9, day, hhmm, "CH"),
        seg("NM1", "41", "2", clean(ix.submitter_name), "", "", "", "", "46", sender),
        seg(*per),
        seg("NM1", "40", "2", clean(ix.receiver_name), "", "", "", "", "46", receiver),
    ]
    hl = 0
    for provider in ix.providers:
        hl += 1
        provider_hl = hl
        body += _provider_segments(provider, provider_hl, d)
        for sub in provider.subscribers:
            hl += 1
            body += _subscriber_segments(sub, hl, provider_hl, d)
            for claim in sub.claims:
                body += _claim_segments(claim, d)
    body.append(seg("SE", str(len(body) + 1), st02))
    tail = [seg("GE", "1", str(ix.control_number)), seg("IEA", "1", ctl9)]
    return "\n".join(head + body + tail) + "\n"


def _address_segments(a: Address, d: Delimiters) -> list[str]:
    line2 = [d.clean(a.line2)] if a.line2 else []
    return [
        d.seg("N3", d.clean(a.line1), *line2),
        d.seg("N4", d.clean(a.city), d.clean(a.state), d.clean(a.zip)),
    ]


def _provider_segments(p: BillingProvider, hl: int, d: Delimiters) -> list[str]:
    seg, clean = d.seg, d.clean
    out = [seg("HL", str(hl), "", "20", "1")]
    if p.taxonomy:
        out.append(seg("PRV", "BI", "PXC", clean(p.taxonomy)))
    out.append(seg("NM1", "85", "2", clean(p.name), "", "", "", "", "XX", clean(p.npi)))
    out += _address_segments(p.address, d)
    out.append(seg("REF", "EI", clean(p.tax_id)))
    if p.pay_to is not None:
        out.append(seg("NM1", "87", "2"))
        out += _address_segments(p.pay_to, d)
    return out


def _subscriber_segments(s: Subscriber, hl: int, parent: int, d: Delimiters) -> list[str]:
    seg, clean = d.seg, d.clean
    out = [
        seg("HL", str(hl), str(parent), "22", "0"),
        seg("SBR", "P", "18", "", "", "", "", "", "", clean(s.filing_code)),
        seg(
            "NM1",
            "IL",
            "1",
            clean(s.last_name),
            clean(s.first_name),
            clean(s.middle_name),
            "",
            "",
            "MI",
            clean(s.member_id),
        ),
    ]
    if s.address is not None:
        out += _address_segments(s.address, d)
    if s.birth_date is not None:
        out.append(seg("DMG", "D8", s.birth_date.strftime("%Y%m%d"), clean(s.sex)))
    out.append(seg("NM1", "PR", "2", clean(s.payer_name), "", "", "", "", "PI", clean(s.payer_id)))
    return out


def _claim_segments(c: Claim, d: Delimiters) -> list[str]:
    seg, clean, comp = d.seg, d.clean, d.component
    dx = [clean(code.replace(".", "")) for code in c.diagnosis_codes[:12]]
    out = [
        seg(
            "CLM",
            clean(c.claim_id),
            money(c.total),
            "",
            "",
            comp.join((clean(c.place_of_service), "B", c.frequency)),
            "Y",
            "A",
            "Y",
            "Y",
        )
    ]
    if c.payer_claim_number is not None:
        out.append(seg("REF", "F8", clean(c.payer_claim_number)))
    out += [
        seg("REF", "EA", clean(c.patient_id)[:50]),
        seg("HI", *(comp.join(("ABK" if i == 0 else "ABF", code)) for i, code in enumerate(dx))),
    ]
    if c.rendering is not None:
        r = c.rendering
        out.append(
            seg(
                "NM1",
                "82",
                "1",
                clean(r.last_name),
                clean(r.first_name),
                "",
                "",
                "",
                "XX",
                clean(r.npi),
            )
        )
    pointers = comp.join(str(i + 1) for i in range(min(4, len(dx))))
    for n, ln in enumerate(c.lines, start=1):
        out += [
            seg("LX", str(n)),
            seg(
                "SV1",
                comp.join(("HC", clean(ln.cpt), *(clean(m) for m in ln.modifiers[:4]))),
                money(ln.charge),
                "UN",
                str(ln.units),
                "",
                "",
                pointers,
            ),
            seg("DTP", "472", "D8", ln.date_of_service.strftime("%Y%m%d")),
            seg("REF", "6R", clean(ln.control_number)),
        ]
    return out
