"""The billing profile: what an 837P needs that the events do not carry (pure).

One profile per organisation and billing NPI, set by billing staff (``rtm billing profile
set``): submitter (ISA06/GS02/loop 1000A), receiver (ISA08/GS03/loop 1000B), billing
provider (2010AA), pay-to address (2010AB, when it differs), rendering providers' names by
NPI (2310B), the Medicare fee-schedule locality, and per payer (as the events name it) the
clearinghouse payer id (2010BB NM109) and claim filing indicator (SBR09).

Every field may be stored empty (a profile is filled in over time); ``missing_fields``
names the ones a production 837P needs and a submission refuses to go without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from schemas.codes import npi_problem

Text = Annotated[str, StringConstraints(max_length=60, pattern=r"^[^*:^~\x00]*$")]


def _npi(v: str) -> str:
    problem = npi_problem(v)
    if problem is not None:
        raise ValueError(problem)
    return v


Npi = Annotated[str, AfterValidator(_npi)]
OptState = Annotated[str, StringConstraints(pattern=r"^([A-Z]{2})?$")]
OptZip9 = Annotated[str, StringConstraints(pattern=r"^([0-9]{9})?$")]  # 5010: ZIP+4 required


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Address(_Frozen):
    line1: Text = ""
    line2: Text = ""
    city: Text = ""
    state: OptState = ""
    zip: OptZip9 = ""


class Payer(_Frozen):
    # 5-character clearinghouse payer id (e.g. the MAC's), upper case letters and digits
    payer_id: Annotated[str, StringConstraints(pattern=r"^([A-Z0-9]{5})?$")] = ""
    name: Text = ""
    # SBR09: MB = Medicare Part B, CI = commercial, MC = Medicaid, ...
    claim_filing: Literal["MB", "MC", "CI", "BL", "HM", "12", "16", "17", "ZZ"] = "CI"


class RenderingProvider(_Frozen):
    last_name: Text = ""
    first_name: Text = ""


class BillingProfile(_Frozen):
    org_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
    billing_npi: Npi
    submitter_name: Text = ""
    submitter_id: Annotated[str, StringConstraints(pattern=r"^([A-Z0-9]{2,15})?$")] = ""
    submitter_contact: Text = ""
    submitter_phone: Annotated[str, StringConstraints(pattern=r"^([0-9]{10})?$")] = ""
    submitter_email: Annotated[
        str, StringConstraints(max_length=80, pattern=r"^([^@*:^~\s]+@[^@*:^~\s]+)?$")
    ] = ""
    receiver_name: Text = ""
    receiver_id: Annotated[str, StringConstraints(pattern=r"^([A-Z0-9]{2,15})?$")] = ""
    provider_name: Text = ""
    provider_address: Address = Address()
    provider_tax_id: Annotated[str, StringConstraints(pattern=r"^([0-9]{9})?$")] = ""  # EIN
    provider_taxonomy: Annotated[str, StringConstraints(pattern=r"^([0-9A-Z]{9}X)?$")] = ""
    pay_to_address: Address | None = None
    locality: Annotated[str, StringConstraints(max_length=16, pattern=r"^[A-Za-z0-9-]*$")] = ""
    payers: dict[str, Payer] = Field(default_factory=dict)
    rendering_providers: dict[Npi, RenderingProvider] = Field(default_factory=dict)

    def payer(self, name: str) -> Payer | None:
        return self.payers.get(name) or self.payers.get(name.lower())


_REQUIRED = (
    "submitter_name",
    "submitter_id",
    "submitter_contact",
    "submitter_phone",
    "receiver_name",
    "receiver_id",
    "provider_name",
    "provider_tax_id",
    "provider_taxonomy",
    "locality",
)
_ADDRESS = ("line1", "city", "state", "zip")


def missing_fields(
    profile: BillingProfile | None,
    payers: Iterable[str] = (),
    rendering_npis: Iterable[str] = (),
    billing_npi: str = "",
) -> list[str]:
    """The fields a production 837P of ``payers`` and ``rendering_npis`` needs and the
    profile lacks, named as in the profile file (e.g. ``payers.medicare.payer_id``)."""
    if profile is None:
        return [f"profile (no billing profile for billing NPI {billing_npi})"]
    out = [name for name in _REQUIRED if not getattr(profile, name)]
    out += [f"provider_address.{a}" for a in _ADDRESS if not getattr(profile.provider_address, a)]
    if profile.pay_to_address is not None:
        out += [f"pay_to_address.{a}" for a in _ADDRESS if not getattr(profile.pay_to_address, a)]
    for name in sorted(set(payers)):
        payer = profile.payer(name)
        if payer is None or not payer.payer_id:
            out.append(f"payers.{name}.payer_id")
        if payer is None or not payer.name:
            out.append(f"payers.{name}.name")
    for npi in sorted(set(rendering_npis) - {profile.billing_npi}):
        rp = profile.rendering_providers.get(npi)
        if rp is None or not rp.last_name:
            out.append(f"rendering_providers.{npi}.last_name")
    return out
