"""Reading an 835 remittance (pure): the claims paid or denied, and their service lines.

Each CLP (claim payment) segment gives CLP01, the patient control number we sent as CLM01,
CLP02 its status, CLP03/CLP04 the charge and the payment, and CLP07, the payer's claim
control number, which replacements and voids of that claim must carry as REF*F8. Each SVC
after it is a service line: SVC01 the procedure (``HC:CPT:MOD...``), SVC02/SVC03 charge and
payment, the line's date from DTM*472 (else DTM*150, the period's start), its adjustments
from CAS (group code, then reason, amount, quantity up to six times) and its remark codes
(RARC) from LQ*HE. Delimiters are read from the ISA segment (element, component, segment).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation


@dataclass(frozen=True)
class Adjustment:
    group: str  # CAS01: CO, PR, OA, PI
    reason: str  # CARC: 4, 16, 50, B7, ...
    amount: Decimal

    @property
    def text(self) -> str:
        """``CO-50``, as the X12 reason codes are written."""
        return f"{self.group}-{self.reason}"


@dataclass
class ServicePayment:
    cpt: str  # SVC01-2
    charge: Decimal  # SVC02
    paid: Decimal  # SVC03
    date_of_service: dt.date | None = None  # DTM*472, else DTM*150
    adjustments: list[Adjustment] = field(default_factory=list)
    remarks: list[str] = field(default_factory=list)  # LQ*HE

    @property
    def denied(self) -> bool:
        """Nothing paid and a reason given: the payer denied the line."""
        return self.paid == 0 and bool(self.adjustments)


@dataclass
class ClaimPayment:
    claim_id: str  # CLP01
    status: str  # CLP02 (1 processed as primary, 4 denied, 22 reversal, ...)
    payer_claim_number: str  # CLP07
    charge: Decimal = Decimal(0)  # CLP03
    paid: Decimal = Decimal(0)  # CLP04
    services: list[ServicePayment] = field(default_factory=list)

    @property
    def denied(self) -> bool:
        """CLP02 4 (denied), or nothing paid on a claim that is not a reversal."""
        return self.status == "4" or (self.paid == 0 and self.status != "22")


def _amount(text: str, seg: str) -> Decimal:
    try:
        return Decimal(text or "0")
    except InvalidOperation:
        raise ValueError(f"{seg}: {text!r} is not an amount") from None


def _date(text: str, seg: str) -> dt.date:
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{seg}: {text!r} is not a date CCYYMMDD") from None


def _clp(seg: list[str], raw: str) -> ClaimPayment:
    if len(seg) < 8 or not seg[1] or not seg[7]:
        raise ValueError(f"CLP without CLP01/CLP07: {raw!r}")
    return ClaimPayment(seg[1], seg[2], seg[7], _amount(seg[3], raw), _amount(seg[4], raw))


def _svc(seg: list[str], component: str, raw: str) -> ServicePayment:
    parts = seg[1].split(component) if len(seg) > 3 else []
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"SVC without a procedure code and payment: {raw!r}")
    return ServicePayment(parts[1], _amount(seg[2], raw), _amount(seg[3], raw))


def _cas(seg: list[str], raw: str) -> list[Adjustment]:
    if len(seg) < 4:
        raise ValueError(f"CAS without a group and a reason: {raw!r}")
    triples = seg[2:]
    return [
        Adjustment(seg[1], triples[i], _amount(triples[i + 1] if i + 1 < len(triples) else "", raw))
        for i in range(0, len(triples), 3)
        if triples[i]
    ]


def parse_835(text: str) -> list[ClaimPayment]:
    """The claims of an 835 with their service lines; ValueError (naming the segment) if
    the text is not an X12 interchange or a segment this reads is malformed."""
    body = text.lstrip()
    if not body.startswith("ISA") or len(body) < 106:
        raise ValueError("not an X12 interchange (no ISA segment)")
    element, component, terminator = body[3], body[104], body[105]
    out: list[ClaimPayment] = []
    service: ServicePayment | None = None
    for chunk in body.split(terminator):
        raw = chunk.strip()
        seg = raw.split(element)
        if seg[0] == "CLP":
            out.append(_clp(seg, raw))
            service = None
        elif seg[0] == "SVC" and out:
            service = _svc(seg, component, raw)
            out[-1].services.append(service)
        elif service is None:
            continue  # claim-level segments: CAS, DTM, NM1 ... of the claim itself
        elif seg[0] == "DTM" and len(seg) > 2 and seg[1] in ("472", "150"):
            if seg[1] == "472" or service.date_of_service is None:
                service.date_of_service = _date(seg[2], raw)
        elif seg[0] == "CAS":
            service.adjustments.extend(_cas(seg, raw))
        elif seg[0] == "LQ" and len(seg) > 2 and seg[1] == "HE":
            service.remarks.append(seg[2])
        elif seg[0] in ("SE", "LX", "PLB"):
            service = None
    return out
