"""Alert contract and rule configuration (pure, frozen pydantic models).

An ``Alert`` is the full current snapshot of one alert; the engine reports every change as
an ``AlertChange`` carrying the new snapshot, so a consumer can simply upsert by ``id``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from fractions import Fraction
from typing import Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from intake.rules import DEFAULT_RULES, IntakeRules
from schemas.events import DEFAULT_ORG

AlertKind = Literal[
    "red_flag",
    "fall",
    "pain_high",
    "pain_increase",
    "inactivity",
    "adherence_low",
    "billing_at_risk",
    "intake_overdue",
    "task_overdue",
    "step_up",
]
Severity = Literal["critical", "high", "medium", "low"]
AlertStatus = Literal["open", "acknowledged", "resolved"]
ChangeKind = Literal["fired", "acknowledged", "resolved", "snoozed", "escalated"]
# The escalation ladder of an unacknowledged critical alert (issue 17): step 1 goes to the
# rest of the patient's care team, step 2 to the organisation-wide recipient ('*').
ESCALATION_STEPS: tuple[str, ...] = ("care team", "organisation")
# What a clinician did about an alert, required on acknowledgement (issue 17).
Disposition = Literal[
    "contacted_patient",
    "left_message",
    "referred_physician",
    "sent_to_ed",
    "program_changed",
    "no_action_needed",
]
DISPOSITIONS: tuple[Disposition, ...] = get_args(Disposition)
# A snooze is bounded: at most this long, whatever the configured choices.
SNOOZE_MAX = dt.timedelta(days=7)
# Kinds no clinician may snooze: a red flag waits for an acknowledgement, never for a clock.
UNSNOOZABLE_KINDS: frozenset[AlertKind] = frozenset({"red_flag"})

# Every kind, in the order pages list them.
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
# A status only rises (open -> acknowledged -> resolved): a snapshot of a lower rank never
# overwrites a higher one, whatever order the writes arrive in.
STATUS_RANK: dict[AlertStatus, int] = {"open": 0, "acknowledged": 1, "resolved": 2}
# Most urgent first: the webhook queue's order and the triage's.
SEVERITY_RANK: dict[Severity, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3}

SEVERITY: dict[AlertKind, Severity] = {
    "red_flag": "critical",
    "fall": "critical",
    "pain_high": "critical",
    "pain_increase": "high",
    "inactivity": "medium",
    "adherence_low": "medium",
    "billing_at_risk": "low",
    "intake_overdue": "high",  # critical for an urgent intake (alerts.rules)
    # the care pathway's (pathways.stream): a task past its due date, a step-up decision
    "task_overdue": "medium",
    "step_up": "high",
}
# Fired by an event (fired_at = the event's occurred_at) vs by the timer (fired_at = the
# local day boundary at which the condition became true).
EVENT_DRIVEN_KINDS: frozenset[AlertKind] = frozenset(
    {"red_flag", "fall", "pain_high", "pain_increase"}
)
TIME_DRIVEN_KINDS: frozenset[AlertKind] = frozenset(
    {"inactivity", "adherence_low", "billing_at_risk", "intake_overdue"}
)
# Raised by the care pathway (pathways.stream, after the rules): once per episode and task or
# decision, resolved when the task is done or cancelled.
PATHWAY_KINDS: frozenset[AlertKind] = frozenset({"task_overdue", "step_up"})
# Safety-critical: every report fires, no "one open per kind", no cool-down, and only a
# clinician's acknowledgement closes them.
ALWAYS_FIRE_KINDS: frozenset[AlertKind] = frozenset({"red_flag", "fall"})

# The recipient of alerts that belong to no episode (the clinic-wide webhook's key).
CLINIC_WIDE = "*"

# Fixed namespace so that alert ids are stable across processes, replays and versions.
_ALERT_NS = uuid.UUID("6f1d7c2e-3b7a-5e0c-9a51-2f4c8d0b7e11")


def alert_id(
    patient_id: str, kind: AlertKind, trigger: str, org_id: str | None = DEFAULT_ORG
) -> str:
    """Deterministic id: the same (organisation, patient, kind, trigger) always yields the
    same id, and two organisations' patients with one patient_id never share one.

    ``trigger`` is the triggering event_id (event-driven kinds), ``episode_id:date``
    (inactivity, adherence_low) or ``episode_id:period-k`` (billing_at_risk, once per
    30-day period), so a replay upserts the same row instead of firing again.
    ``org_id=None``: the id as it was before patients were scoped by organisation
    (``PatientState.legacy_ids``: states stored then keep their alerts' ids). Ids hold no
    ``|``, so the two forms cannot produce the same name.
    """
    name = f"{patient_id}|{kind}|{trigger}"
    return str(uuid.uuid5(_ALERT_NS, name if org_id is None else f"{org_id}|{name}"))


class Alert(BaseModel):
    """One alert as routed to the episode's clinician."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    patient_id: str
    # the patient's organisation: (org_id, patient_id) is the patient
    org_id: str = DEFAULT_ORG
    episode_id: str
    clinician_id: str
    kind: AlertKind
    severity: Severity
    # Triggering event(s); empty for time-driven kinds.
    event_ids: tuple[str, ...] = ()
    # What was measured and the bar it crossed (score, median baseline + 2, full days
    # without data, 7-day adherence ratio, data days so far + days left in the billing
    # period); None where the rule has no number.
    value: float | None = None
    threshold: float | None = None
    # Extra facts a clinician needs, e.g. the red flags reported.
    details: tuple[str, ...] = ()
    fired_at: AwareDatetime
    status: AlertStatus = "open"
    acknowledged_at: AwareDatetime | None = None
    acknowledged_by: str | None = None
    # what was done about it and the clinician's note, set with the acknowledgement
    disposition: Disposition | None = None
    ack_note: str | None = None
    # a snooze a clinician set: out of the worklist's tiers until ``snoozed_until`` (a
    # reader compares it with its clock; the rules never read one), with who, when and why
    snoozed_until: AwareDatetime | None = None
    snoozed_at: AwareDatetime | None = None
    snoozed_by: str | None = None
    snooze_reason: str | None = None
    resolved_at: AwareDatetime | None = None
    resolved_by_event_id: str | None = None
    # A red flag or fall that belongs to no episode after the grace period: for the
    # clinic-wide recipient (clinician_id '*', episode_id '').
    unrouted: bool = False
    # A red flag answered at intake: the intake it was screened in (intake-rules.md, Safety).
    intake_id: str | None = None
    # The escalation ladder's steps taken while it stayed unacknowledged: when each went
    # (index 0: to the care team, 1: to the organisation-wide recipient). Each is its
    # ``fired_at`` + the configured offset, so a replay or the offline evaluator agrees.
    escalations: tuple[AwareDatetime, ...] = ()

    @property
    def escalation_level(self) -> int:
        """How many steps of the ladder this alert has taken (0: none)."""
        return len(self.escalations)

    def acknowledged(
        self,
        at: dt.datetime,
        by: str,
        disposition: Disposition | None = None,
        note: str | None = None,
    ) -> Alert:
        """The alert once a clinician acknowledged it at ``at`` with a disposition and an
        optional note: the one acknowledgement transition (the API's and the rules'). An
        open (or snoozed) alert becomes ``acknowledged``; a resolved one keeps its status
        but records who, when and what (its kind's cool-down starts then). Already
        acknowledged: the alert itself, unchanged (the first one counts)."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at must be timezone-aware")
        if self.acknowledged_at is not None:
            return self
        status: AlertStatus = "acknowledged" if self.status == "open" else self.status
        return self.model_copy(
            update={
                "status": status,
                "acknowledged_at": at,
                "acknowledged_by": by,
                "disposition": disposition,
                "ack_note": note,
            }
        )

    def snooze_refusal(self, at: dt.datetime, until: dt.datetime) -> str | None:
        """Why this alert cannot be snoozed from ``at`` until ``until`` (None: it can)."""
        if self.kind in UNSNOOZABLE_KINDS:
            return f"a {self.kind.replace('_', ' ')} alert cannot be snoozed"
        if self.status != "open":
            return f"only an open alert can be snoozed (this one is {self.status})"
        if until <= at:
            return "a snooze must end after it starts"
        if until - at > SNOOZE_MAX:
            return "a snooze lasts at most 7 days"
        return None

    def snoozed(self, at: dt.datetime, by: str, until: dt.datetime, reason: str) -> Alert:
        """The alert snoozed by ``by`` at ``at`` until ``until`` for ``reason``: the one
        snooze transition (the service's and the rules'). A later snooze replaces an
        earlier one. Raises ValueError when ``snooze_refusal`` names a reason."""
        for t in (at, until):
            if t.tzinfo is None or t.utcoffset() is None:
                raise ValueError("snooze times must be timezone-aware")
        refusal = self.snooze_refusal(at, until)
        if refusal is not None:
            raise ValueError(refusal)
        return self.model_copy(
            update={
                "snoozed_until": until,
                "snoozed_at": at,
                "snoozed_by": by,
                "snooze_reason": reason,
            }
        )

    def is_snoozed(self, now: dt.datetime) -> bool:
        """Open and snoozed past ``now`` (a reader's clock): out of the triage tiers."""
        return self.status == "open" and self.snoozed_until is not None and now < self.snoozed_until


class AlertChange(BaseModel):
    """What happened to an alert and its snapshot afterwards (publish / upsert by id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    change: ChangeKind
    alert: Alert


class AlertConfig(BaseModel):
    """Per-organisation thresholds; defaults are those of design/alert-rules.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pain_high_threshold: int = Field(default=7, ge=0, le=10)
    pain_increase_delta: float = Field(default=2, gt=0)
    pain_baseline_days: int = Field(default=7, ge=1)
    pain_baseline_min_reports: int = Field(default=2, ge=1)
    # "3 full local days with no patient-data event": fires when today >= L + days + 1.
    inactivity_days: int = Field(default=3, ge=1)
    adherence_low_threshold: float = Field(default=0.5, gt=0, le=1)
    adherence_window_days: int = Field(default=7, ge=1)
    # adherence_low is evaluated from this day of the episode (day 1 = start date).
    adherence_from_episode_day: int = Field(default=8, ge=1)
    cooldown: dt.timedelta = dt.timedelta(hours=24)
    # How long a report whose episode is not known yet waits for it (from when it was
    # received) before a red flag or fall goes unrouted to the clinic-wide recipient.
    pending_grace: dt.timedelta = dt.timedelta(hours=24)
    # The intake rule set whose routing and service levels set an intake's due time
    # (intake_overdue); the worker's RTM_INTAKE_RULES_FILE, else the default set.
    intake_rules: IntakeRules = DEFAULT_RULES
    # Organisations' own rule sets (`rtm intake rules set`; the worker reads the newest of
    # each): they take precedence over ``intake_rules`` for their organisation's intakes.
    intake_rules_by_org: dict[str, IntakeRules] = Field(default_factory=dict)
    # The escalation ladder of a critical alert nobody acknowledged: after this long from
    # its firing to the rest of the patient's care team, then to the organisation-wide
    # recipient (the worker's RTM_ESCALATE_CARE_TEAM_AFTER_S / RTM_ESCALATE_ORG_AFTER_S).
    escalate_care_team_after: dt.timedelta = Field(
        default=dt.timedelta(minutes=15), gt=dt.timedelta(0)
    )
    escalate_org_after: dt.timedelta = Field(default=dt.timedelta(minutes=60), gt=dt.timedelta(0))

    @property
    def escalation_offsets(self) -> tuple[dt.timedelta, ...]:
        """The ladder's offsets from ``fired_at``, one per step of ``ESCALATION_STEPS``."""
        return (self.escalate_care_team_after, self.escalate_org_after)

    def intake_rules_for(self, org_id: str) -> IntakeRules:
        """The intake rule set of ``org_id``: its own, else the worker's."""
        return self.intake_rules_by_org.get(org_id, self.intake_rules)

    @property
    def adherence_low_fraction(self) -> Fraction:
        # Exact comparison: 0.5 must not be subject to float rounding of e.g. 3.5/7.
        return Fraction(str(self.adherence_low_threshold))


DEFAULT_CONFIG = AlertConfig()
