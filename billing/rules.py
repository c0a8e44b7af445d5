"""RTM billing rules (design/billing-rules.md), pure: claims, progress, at-risk check.

Nothing here reads the clock: ``as_of`` (claims) or ``day`` (progress) is an argument.
Facts come from ``PatientBillingState``; episodes are resolved at computation time so the
result depends only on the set of events, never on their arrival order.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from billing.config import DEFAULT_CONFIG, BillingConfig
from billing.state import PatientBillingState, TimeLog
from schemas.episodes import Episode

# --- CMS rules (not conventions; see billing-rules.md "Codes") -------------------------
PERIOD_DAYS = 30
DEVICE_FULL_DAYS = 16  # 98977: 16-30 data days
DEVICE_MIN_DAYS = 2  # 98985: 2-15 data days; also 98975's period-1 threshold
TM_FIRST_MIN = 10  # 98979: 10-19 minutes
TM_FULL_MIN = 20  # 98980: >= 20 minutes
TM_ADDON_MIN = 20  # 98981: per full additional 20 minutes

CPT_SETUP = "98975"
CPT_DEVICE_FULL = "98977"
CPT_DEVICE_SHORT = "98985"
CPT_TM_FIRST10 = "98979"
CPT_TM_FIRST20 = "98980"
CPT_TM_ADDON = "98981"

THERAPY_MODIFIER: dict[str, str] = {"PT": "GP", "PTA": "GP", "OT": "GO", "OTA": "GO", "SLP": "GN"}
ASSISTANT_MODIFIER: dict[str, str] = {"PTA": "CQ", "OTA": "CO"}

# "void": recorded when a submitted group is voided (withdrawn); never computed by the rules
Status = Literal["new", "amended", "preview", "void"]
CodeGroup = Literal["setup", "device", "treatment"]
GROUP_OF: dict[str, CodeGroup] = {
    CPT_SETUP: "setup",
    CPT_DEVICE_FULL: "device",
    CPT_DEVICE_SHORT: "device",
    CPT_TM_FIRST10: "treatment",
    CPT_TM_FIRST20: "treatment",
    CPT_TM_ADDON: "treatment",
}


class ClaimLine(BaseModel):
    """One billable line: exactly the CSV row of billing-rules.md, typed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: str
    episode_id: str
    cpt: str
    modifiers: tuple[str, ...] = ()
    units: int = 1
    date_of_service: dt.date
    period_start: dt.date
    period_end: dt.date
    data_days: int | None = None
    minutes: int | None = None
    rendering_npi: str
    billing_npi: str
    payer: str
    member_id: str
    diagnosis_codes: tuple[str, ...]
    place_of_service: str
    status: Status = "new"

    @property
    def group(self) -> CodeGroup:
        return GROUP_OF[self.cpt]

    @property
    def key(self) -> tuple[str, CodeGroup, str, dt.date]:
        """What may be billed once: (patient, code group, scope, period/month start).

        Device supply and set-up are per episode; treatment management is per patient and
        calendar month (scope ""), so a month is never billed twice even if the episode
        it is attributed to changes when a late log arrives.
        """
        scope = "" if self.group == "treatment" else self.episode_id
        return (self.patient_id, self.group, scope, self.period_start)

    def sort_key(self) -> tuple[str, dt.date, str, str, dt.date]:
        # billing-rules.md: sorted by patient_id, date_of_service, cpt; the rest only
        # makes ties deterministic.
        return (self.patient_id, self.date_of_service, self.cpt, self.episode_id, self.period_start)


# --- time helpers ----------------------------------------------------------------------


def _require_aware(when: dt.datetime, name: str) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. 2027-03-01T00:00:00Z)")


def closes_at(last_date: dt.date, timezone: str, config: BillingConfig) -> dt.datetime:
    """When a period/month ending on ``last_date`` closes: the local midnight that ends
    it in ``timezone`` plus the grace window. zoneinfo resolves DST, so the grace is
    exact elapsed hours even across a clock change."""
    midnight = dt.datetime.combine(last_date + dt.timedelta(days=1), dt.time(0), ZoneInfo(timezone))
    return midnight + dt.timedelta(hours=config.grace_hours)


def is_closed(last_date: dt.date, timezone: str, as_of: dt.datetime, config: BillingConfig) -> bool:
    _require_aware(as_of, "as_of")
    # Compare in UTC: aware-datetime arithmetic in the same ZoneInfo would be wall-clock.
    return as_of.astimezone(dt.UTC) >= closes_at(last_date, timezone, config).astimezone(dt.UTC)


def month_bounds(day: dt.date) -> tuple[dt.date, dt.date]:
    last = calendar.monthrange(day.year, day.month)[1]
    return day.replace(day=1), day.replace(day=last)


@dataclass(frozen=True)
class Period:
    """A device-supply period of an episode: index 1.., inclusive dates."""

    episode: Episode
    index: int
    start: dt.date
    end: dt.date


def period_of(episode: Episode, day: dt.date) -> Period | None:
    """The period of ``episode`` containing ``day`` (None outside the episode)."""
    if not episode.covers(day):
        return None
    k = (day - episode.start_date).days // PERIOD_DAYS
    start = episode.start_date + dt.timedelta(days=PERIOD_DAYS * k)
    end = start + dt.timedelta(days=PERIOD_DAYS - 1)
    if episode.end_date is not None and episode.end_date < end:
        end = episode.end_date  # episode.ended cuts the last period short
    return Period(episode=episode, index=k + 1, start=start, end=end)


# --- facts resolved against the episode book --------------------------------------------


def episode_data_days(state: PatientBillingState) -> dict[str, set[dt.date]]:
    """episode_id -> its data days (dates within the episode, resolved per event)."""
    book = state.book
    out: dict[str, set[dt.date]] = defaultdict(set)
    for day, named in state.data_dates:
        ep = book.resolve(named, day)
        if ep is not None:
            out[ep.episode_id].add(day)
    return out


def _attributed_logs(state: PatientBillingState) -> list[tuple[TimeLog, Episode]]:
    # Logs outside every episode carry no billing identity (NPI, payer): not billable.
    book = state.book
    out = []
    for log in state.counted_time_logs():  # a corrected log counts once: the correction
        ep = book.resolve(log.episode_id, log.local_date)
        if ep is not None:
            out.append((log, ep))
    return out


@dataclass(frozen=True)
class MonthTotals:
    month_start: dt.date
    month_end: dt.date
    minutes: int
    interactive: bool
    minutes_by_role: dict[str, int]
    episode: Episode  # the episode of the month's latest log (convention)
    last_log_date: dt.date


def month_totals(state: PatientBillingState) -> dict[dt.date, MonthTotals]:
    """month start -> totals of the patient's time logs in that calendar month."""
    by_month: dict[dt.date, list[tuple[TimeLog, Episode]]] = defaultdict(list)
    for log, ep in _attributed_logs(state):
        by_month[log.local_date.replace(day=1)].append((log, ep))
    out: dict[dt.date, MonthTotals] = {}
    for start, items in by_month.items():
        roles: dict[str, int] = defaultdict(int)
        for log, _ in items:
            roles[log.clinician_role] += log.minutes
        latest_log, latest_ep = max(
            items, key=lambda it: (it[0].local_date, it[0].occurred_at, it[0].event_id)
        )
        out[start] = MonthTotals(
            month_start=start,
            month_end=month_bounds(start)[1],
            minutes=sum(log.minutes for log, _ in items),
            interactive=any(log.interactive for log, _ in items),
            minutes_by_role=dict(roles),
            episode=latest_ep,
            last_log_date=latest_log.local_date,
        )
    return out


# --- code rules ---------------------------------------------------------------------------


def device_code(data_days: int) -> str | None:
    """98977 for >= 16 data days, 98985 for 2-15, nothing below (never both)."""
    if data_days >= DEVICE_FULL_DAYS:
        return CPT_DEVICE_FULL
    if data_days >= DEVICE_MIN_DAYS:
        return CPT_DEVICE_SHORT
    return None


def treatment_codes(minutes: int, interactive: bool) -> list[tuple[str, int]]:
    """(cpt, units) for a month: 98979 for 10-19 min, else 98980 + 98981 per full extra
    20 min; nothing without an interactive communication. The 16-day rule does not apply."""
    if not interactive or minutes < TM_FIRST_MIN:
        return []
    if minutes < TM_FULL_MIN:
        return [(CPT_TM_FIRST10, 1)]
    out = [(CPT_TM_FIRST20, 1)]
    addon = (minutes - TM_FULL_MIN) // TM_ADDON_MIN
    if addon > 0:
        out.append((CPT_TM_ADDON, addon))
    return out


def _therapy(role: str) -> tuple[str, ...]:
    mod = THERAPY_MODIFIER.get(role)
    return (mod,) if mod else ()


def setup_modifiers(episode: Episode) -> tuple[str, ...]:
    assistant = ASSISTANT_MODIFIER.get(episode.clinician_role)
    return _therapy(episode.clinician_role) + ((assistant,) if assistant else ())


def treatment_modifiers(
    episode: Episode, minutes_by_role: dict[str, int], config: BillingConfig
) -> tuple[str, ...]:
    total = sum(minutes_by_role.values())
    assistants: list[str] = []
    for role, mod in ASSISTANT_MODIFIER.items():
        # integer form of "role minutes > threshold% of the month's minutes"
        if minutes_by_role.get(role, 0) * 100 > config.assistant_share_threshold_pct * total:
            assistants.append(mod)
    return _therapy(episode.clinician_role) + tuple(assistants)


def _line(
    episode: Episode,
    cpt: str,
    modifiers: tuple[str, ...],
    units: int,
    dos: dt.date,
    start: dt.date,
    end: dt.date,
    status: Status,
    data_days: int | None = None,
    minutes: int | None = None,
) -> ClaimLine:
    b = episode.billing
    return ClaimLine(
        patient_id=episode.patient_id,
        episode_id=episode.episode_id,
        cpt=cpt,
        modifiers=modifiers,
        units=units,
        date_of_service=dos,
        period_start=start,
        period_end=end,
        data_days=data_days,
        minutes=minutes,
        rendering_npi=b.rendering_npi,
        billing_npi=b.billing_npi,
        payer=b.payer,
        member_id=b.member_id,
        diagnosis_codes=tuple(b.diagnosis_codes),
        place_of_service=b.place_of_service,
        status=status,
    )


def patient_claims(
    state: PatientBillingState,
    as_of: dt.datetime,
    config: BillingConfig = DEFAULT_CONFIG,
    include_open: bool = False,
) -> list[ClaimLine]:
    """Claim lines of one patient as of ``as_of`` (see ``compute_claims``)."""
    _require_aware(as_of, "as_of")
    lines: list[ClaimLine] = []

    def status_of(last: dt.date, timezone: str) -> Status | None:
        if is_closed(last, timezone, as_of, config):
            return "new"
        return "preview" if include_open else None

    days_by_episode = episode_data_days(state)
    for episode in state.book.episodes.values():
        days = days_by_episode.get(episode.episode_id, set())
        by_period: dict[int, tuple[Period, set[dt.date]]] = {}
        for day in days:
            p = period_of(episode, day)
            assert p is not None  # episode_data_days only keeps covered dates
            by_period.setdefault(p.index, (p, set()))[1].add(day)

        for period, pdays in by_period.values():
            code = device_code(len(pdays))
            status = status_of(period.end, episode.timezone)
            if code is None or status is None:
                continue
            dos = period.end if config.device_date_of_service == "period_end" else period.start
            lines.append(
                _line(
                    episode,
                    code,
                    _therapy(episode.clinician_role),
                    1,
                    dos,
                    period.start,
                    period.end,
                    status,
                    data_days=len(pdays),
                )
            )

        # 98975: once per episode, when set-up education was done and period 1 reaches
        # 2 data days. It follows period 1's open/closed state (convention) because its
        # row reports period 1's data days.
        first = by_period.get(1)
        if episode.setup_education_completed and first and len(first[1]) >= DEVICE_MIN_DAYS:
            period, pdays = first
            status = status_of(period.end, episode.timezone)
            if status is not None:
                dos = (
                    episode.start_date
                    if config.setup_date_of_service == "episode_start"
                    else sorted(pdays)[DEVICE_MIN_DAYS - 1]
                )
                lines.append(
                    _line(
                        episode,
                        CPT_SETUP,
                        setup_modifiers(episode),
                        1,
                        dos,
                        period.start,
                        period.end,
                        status,
                        data_days=len(pdays),
                    )
                )

    for month in month_totals(state).values():
        codes = treatment_codes(month.minutes, month.interactive)
        if not codes:
            continue
        status = status_of(month.month_end, month.episode.timezone)
        if status is None:
            continue
        mods = treatment_modifiers(month.episode, month.minutes_by_role, config)
        dos = (
            month.month_end
            if config.treatment_date_of_service == "month_end"
            else month.last_log_date
        )
        for cpt, units in codes:
            lines.append(
                _line(
                    month.episode,
                    cpt,
                    mods,
                    units,
                    dos,
                    month.month_start,
                    month.month_end,
                    status,
                    minutes=month.minutes,
                )
            )
    return lines


def compute_claims(
    states: Iterable[PatientBillingState],
    as_of: dt.datetime,
    config: BillingConfig = DEFAULT_CONFIG,
    include_open: bool = False,
) -> list[ClaimLine]:
    """All claim lines of ``states`` as of ``as_of`` (timezone-aware), sorted for export.

    Closed periods/months give status ``new``; open ones are left out unless
    ``include_open``, then they give ``preview``. A period or month is open until local
    midnight after its last date in the episode's timezone plus ``config.grace_hours``.
    Lines are not yet compared with earlier exports: see ``billing.amend``.
    """
    _require_aware(as_of, "as_of")
    lines = [line for s in states for line in patient_claims(s, as_of, config, include_open)]
    return sorted(lines, key=ClaimLine.sort_key)


# --- progress (GET /v1/patients/{id}/billing) and alerts ----------------------------------


class PeriodProgress(BaseModel):
    model_config = ConfigDict(frozen=True)

    episode_id: str
    period_index: int
    period_start: dt.date
    period_end: dt.date
    data_days: int  # data days in the period up to and including the day asked about
    days_left: int  # dates that can still become data days (today if not yet one, and after)
    days_needed: int  # data days still missing for 98977 (0 when reached)
    earned: str | None  # the device code if the period closed with today's count
    on_track_for: str | None  # best device code still reachable
    summary: str  # "12 of 16 days, 9 days left"
    # the same in the codes a clinician and a biller act on: "98985 secured · 5/16 toward
    # 98977 · needs 11 in 16 days", "98977 met (22 data days)" (``progress_text``)
    codes: str


class MonthProgress(BaseModel):
    model_config = ConfigDict(frozen=True)

    month_start: dt.date
    month_end: dt.date
    minutes: int
    interactive: bool
    earned: tuple[str, ...]  # codes the month gives now, e.g. ("98980", "98981")
    minutes_to_next: int  # minutes until the next treatment-management threshold


class BillingProgress(BaseModel):
    model_config = ConfigDict(frozen=True)

    patient_id: str
    day: dt.date
    period: PeriodProgress | None  # None when no episode covers the day
    month: MonthProgress


def patient_local_date(state: PatientBillingState, now: dt.datetime) -> dt.date:
    """``now`` as a date in the timezone of the patient's latest-started episode (UTC if
    the patient has none), i.e. the "today" to pass to ``billing_progress``."""
    _require_aware(now, "now")
    eps = list(state.book.episodes.values())
    if not eps:
        return now.astimezone(dt.UTC).date()
    latest = max(eps, key=lambda e: (e.start_date, e.episode_id))
    return now.astimezone(ZoneInfo(latest.timezone)).date()


def _current_period(state: PatientBillingState, day: dt.date) -> tuple[Period, set[dt.date]] | None:
    episode = state.book.resolve(None, day)
    if episode is None:
        return None
    period = period_of(episode, day)
    assert period is not None
    all_days = episode_data_days(state).get(episode.episode_id, set())
    return period, {d for d in all_days if period.start <= d <= day}


def progress_text(data_days: int, days_left: int) -> str:
    """A period's progress in codes: what is secured, what is still reachable and what it
    needs (``data_days`` so far, ``days_left`` that can still become data days)."""
    n, left = data_days, days_left
    if n >= DEVICE_FULL_DAYS:
        return f"{CPT_DEVICE_FULL} met ({n} data days)"
    days = f"{left} day{'s' if left != 1 else ''}"
    parts = [f"{CPT_DEVICE_SHORT} secured"] if n >= DEVICE_MIN_DAYS else []
    if n + left >= DEVICE_FULL_DAYS:
        parts += [
            f"{n}/{DEVICE_FULL_DAYS} toward {CPT_DEVICE_FULL}",
            f"needs {DEVICE_FULL_DAYS - n} in {days}",
        ]
    elif n >= DEVICE_MIN_DAYS:
        parts.append(f"{CPT_DEVICE_FULL} out of reach ({n}/{DEVICE_FULL_DAYS}, {days} left)")
    elif n + left >= DEVICE_MIN_DAYS:
        parts.append(
            f"{CPT_DEVICE_FULL} out of reach; needs {DEVICE_MIN_DAYS - n} for"
            f" {CPT_DEVICE_SHORT} in {days}"
        )
    else:
        parts.append(f"no device code reachable ({n} data days, {days} left)")
    return " · ".join(parts)


def billing_progress(state: PatientBillingState, day: dt.date) -> BillingProgress:
    """Progress of the current device-supply period and calendar month on patient-local
    ``day`` (see ``patient_local_date``). Counts data up to and including ``day``."""
    period_progress: PeriodProgress | None = None
    current = _current_period(state, day)
    if current is not None:
        period, so_far = current
        n = len(so_far)
        left = (period.end - day).days + (0 if day in so_far else 1)
        reachable = n + left
        on_track = device_code(reachable)
        period_progress = PeriodProgress(
            episode_id=period.episode.episode_id,
            period_index=period.index,
            period_start=period.start,
            period_end=period.end,
            data_days=n,
            days_left=left,
            days_needed=max(0, DEVICE_FULL_DAYS - n),
            earned=device_code(n),
            on_track_for=on_track,
            summary=f"{n} of {DEVICE_FULL_DAYS} days, {left} day{'s' if left != 1 else ''} left",
            codes=progress_text(n, left),
        )

    start, end = month_bounds(day)
    totals = month_totals(state).get(start)
    minutes = totals.minutes if totals else 0
    interactive = totals.interactive if totals else False
    if minutes < TM_FIRST_MIN:
        to_next = TM_FIRST_MIN - minutes
    elif minutes < TM_FULL_MIN:
        to_next = TM_FULL_MIN - minutes
    else:
        to_next = TM_ADDON_MIN - (minutes - TM_FULL_MIN) % TM_ADDON_MIN
    month = MonthProgress(
        month_start=start,
        month_end=end,
        minutes=minutes,
        interactive=interactive,
        earned=tuple(c for c, _ in treatment_codes(minutes, interactive)),
        minutes_to_next=to_next,
    )
    return BillingProgress(
        patient_id=state.patient_id, day=day, period=period_progress, month=month
    )


def billing_at_risk(state: PatientBillingState, day: dt.date) -> bool:
    """True when the current period can no longer reach 98977's 16 data days.

    ``day`` is a patient-local date whose data is taken as final (the alert engine calls
    it for a day that has ended). With the period of the episode active on ``day``:
    at risk iff (data days from the period start through ``day``) + (dates of the period
    after ``day``) < 16. False when no episode covers ``day``. A period cut short by
    ``episode.ended`` is judged on the dates it has.
    """
    current = _current_period(state, day)
    if current is None:
        return False
    period, so_far = current
    return len(so_far) + (period.end - day).days < DEVICE_FULL_DAYS
