"""Reading an 835 remittance (pure): the payer's claim control numbers.

Each CLP (claim payment) segment gives CLP01, the patient control number we sent as CLM01,
and CLP07, the payer's claim control number, which replacements and voids of that claim
must carry as REF*F8. Delimiters are read from the ISA segment.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimPayment:
    claim_id: str  # CLP01
    status: str  # CLP02 (1 processed as primary, 4 denied, 22 reversal, ...)
    payer_claim_number: str  # CLP07


def parse_835(text: str) -> list[ClaimPayment]:
    """The CLP segments of an 835; ValueError if the text is not an X12 interchange."""
    body = text.lstrip()
    if not body.startswith("ISA") or len(body) < 106:
        raise ValueError("not an X12 interchange (no ISA segment)")
    element, terminator = body[3], body[105]
    out: list[ClaimPayment] = []
    for raw in body.split(terminator):
        seg = raw.strip().split(element)
        if seg[0] == "CLP":
            if len(seg) < 8 or not seg[1] or not seg[7]:
                raise ValueError(f"CLP without CLP01/CLP07: {raw.strip()!r}")
            out.append(ClaimPayment(seg[1], seg[2], seg[7]))
    return out
