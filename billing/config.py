"""Billing conventions: the choices CMS leaves open, as one frozen, documented object.

Every export states the conventions in force (``BillingConfig.header_lines()``), so a
billing office can see what was assumed. The CMS rules themselves (16 data days, 2 data
days, 10/20/20 minutes, the modifier table) are not configuration: they live in
``billing.rules`` with the text of design/billing-rules.md beside them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SetupDateOfService = Literal["episode_start", "second_data_day"]
DeviceDateOfService = Literal["period_end", "period_start"]
TreatmentDateOfService = Literal["month_end", "last_log_date"]


class BillingConfig(BaseModel):
    """Conventions in force for one evaluation or export. Defaults = billing-rules.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A period or month stays open this long after local midnight ending its last date,
    # so that phones syncing late still land in it before it is billed.
    grace_hours: int = Field(default=72, ge=0, le=24 * 60)
    # CQ/CO on treatment-management lines when the assistant's minutes are MORE than this
    # percentage of the month's minutes (CMS: "in part", de minimis 10%).
    assistant_share_threshold_pct: int = Field(default=10, ge=0, le=100)
    # Date of service per code family (billing-rules.md marks each one a convention).
    setup_date_of_service: SetupDateOfService = "episode_start"
    device_date_of_service: DeviceDateOfService = "period_end"
    treatment_date_of_service: TreatmentDateOfService = "month_end"

    def header_lines(self) -> list[str]:
        """The conventions as ``# ``-prefixed comment lines, for the top of an export."""
        return [
            "# rtm billing conventions (design/billing-rules.md; CMS CY2026 PFS)",
            (
                "# period_anchor=episode_started_local_date  # period k = start+30(k-1) .. +29,"
                " cut by episode.ended"
            ),
            "# data_day=patient-local date of occurred_at in its own UTC offset",
            "# month=calendar month of each time log's patient-local date",
            (
                f"# grace_hours={self.grace_hours}  # open until local midnight after the last"
                " date (episode timezone) + grace"
            ),
            (
                f"# assistant_share_threshold_pct={self.assistant_share_threshold_pct}"
                "  # CQ/CO on 98979/98980/98981 when assistant minutes > this share"
            ),
            f"# setup_date_of_service={self.setup_date_of_service}",
            f"# device_date_of_service={self.device_date_of_service}",
            f"# treatment_date_of_service={self.treatment_date_of_service}",
            (
                "# treatment_month_scope=patient  # minutes of all the patient's episodes in a"
                " month are summed; the line goes to the episode of the month's latest log"
            ),
            (
                "# amendment=a changed (patient, code group, period/month) is re-sent whole with"
                " status amended; data_days/minutes alone do not make a change"
            ),
            "# kx=not inferred (needs the annual therapy spend); add it in modifiers",
        ]

    def header_text(self) -> str:
        return "".join(line + "\n" for line in self.header_lines())


DEFAULT_CONFIG = BillingConfig()
