"""Event contract v1 (see shared/design/events.md): the producer-facing models.

Models are frozen; domain code (alerts/, billing/, adherence) consumes them as values.
A timestamp keeps the producer's own UTC offset, so ``occurred_at.date()`` is the
patient-local date the rules count on.

Content the database or the rules cannot take is refused here, naming the field: strings
with NUL characters (PostgreSQL text and jsonb cannot hold them), timestamps that are not
RFC 3339 strings with an explicit offset (numbers and epoch strings, which pydantic's lax
mode would take, are refused), timestamps outside the years 2000-2100, and, through
``future_skew_error``, an ``occurred_at`` too far ahead of the time the event was received.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import re
import typing
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from schemas.codes import (
    ICD10_CM_PATTERN,
    PLACE_OF_SERVICE_CODES,
    icd10_cm_problem,
    icd10_cm_release,
    npi_problem,
)

SCHEMA_VERSION = 1
YEAR_MIN, YEAR_MAX = 2000, 2100  # inclusive, the year as written (in the event's own offset)

# Free text: anything but NUL. Ids and codes have their own patterns, which exclude NUL too.
NO_NUL = r"^[^\x00]*$"
NUL_MESSAGE = "must not contain NUL characters"
NAIVE_MESSAGE = "timestamp must carry an explicit UTC offset (e.g. Z or -05:00)"
_YEAR_MESSAGE = f"timestamp must be between {YEAR_MIN} and {YEAR_MAX}"
_RFC3339_HINT = "an RFC 3339 string with an explicit UTC offset (e.g. 2026-11-03T10:00:00-05:00)"
_RFC3339_BODY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
_RFC3339_OFFSET = r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
# What a timestamp must look like, the years 2000-2100 spelled out: checked by pydantic-core
# (Rust regex) before its datetime parser, whose lax mode would also take numbers, epoch
# strings, "2026-11-03 10:00Z" or "+0000". Also the pattern of the published JSON Schema.
TIMESTAMP_PATTERN = (
    "^(?:20[0-9]{2}|2100)" + _RFC3339_BODY.removeprefix("[0-9]{4}") + _RFC3339_OFFSET + "$"
)
TIMESTAMP_FIELDS = frozenset({"occurred_at", "recorded_at", "received_at"})
# Only to explain a refused timestamp (the error path).
_is_rfc3339 = re.compile(_RFC3339_BODY + _RFC3339_OFFSET).fullmatch
_is_naive = re.compile(_RFC3339_BODY).fullmatch
_is_epoch = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*").fullmatch


def _json_kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return f"a {type(v).__name__}"


def _sane_year(v: dt.datetime) -> dt.datetime:
    if not YEAR_MIN <= v.year <= YEAR_MAX:
        raise ValueError(_YEAR_MESSAGE)
    return v


def _timestamp_schema() -> core_schema.CoreSchema:
    """An RFC 3339 string with an offset, years 2000-2100, parsed to an aware datetime.

    The same on both paths: ``validate_json`` and ``validate_python`` on decoded JSON both
    see the JSON value (a str, or a number, ...). Python callers may also pass an aware
    ``datetime`` (year checked). All in pydantic-core but the rare datetime branch.
    """
    from_string = core_schema.chain_schema(
        [
            core_schema.str_schema(pattern=TIMESTAMP_PATTERN, strict=True),
            core_schema.datetime_schema(tz_constraint="aware"),
        ]
    )
    instance = core_schema.no_info_after_validator_function(
        _sane_year, core_schema.datetime_schema(strict=True, tz_constraint="aware")
    )
    return core_schema.json_or_python_schema(
        json_schema=from_string,
        python_schema=core_schema.union_schema(
            [from_string, instance],
            mode="left_to_right",
            custom_error_type="timestamp_invalid",
            custom_error_message="invalid timestamp",
        ),
    )


def timestamp_problem(v: object) -> str:
    """Why ``v`` is not a contract timestamp (for the error message naming the field)."""
    if isinstance(v, dt.datetime):
        if v.utcoffset() is None:
            return NAIVE_MESSAGE
        if not YEAR_MIN <= v.year <= YEAR_MAX:
            return _YEAR_MESSAGE
    elif not isinstance(v, str):
        return f"timestamp must be {_RFC3339_HINT}, not {_json_kind(v)}"
    elif "\x00" in v:
        return NUL_MESSAGE
    elif _is_rfc3339(v):
        if not YEAR_MIN <= int(v[:4]) <= YEAR_MAX:
            return _YEAR_MESSAGE
        try:  # the right shape: a calendar error (month 13, February 30, hour 25)
            _AWARE.validate_python(v)
        except ValidationError as exc:
            return str(exc.errors(include_url=False)[0]["msg"])
    elif _is_naive(v):
        return NAIVE_MESSAGE
    elif _is_epoch(v):
        return f"timestamp must be {_RFC3339_HINT}, not epoch seconds"
    return f"timestamp must be {_RFC3339_HINT}"


_AWARE: TypeAdapter[dt.datetime] = TypeAdapter(AwareDatetime)
Timestamp = Annotated[
    dt.datetime,
    GetPydanticSchema(lambda _tp, _handler: _timestamp_schema()),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}),
]


def _integral(v: object) -> object:
    """JSON has one number type: 6.0 is the number 6, as JSON Schema's ``integer`` says,
    so an integral float is taken as that integer (6.5, true and "6" are still refused)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# An integer of the contract: a JSON number without a fractional part (6 or 6.0), never a
# boolean or a string. Placed after the bounds (Annotated[StrictInt, Field(...), INTEGRAL])
# so the published schema keeps minimum/maximum.
INTEGRAL = BeforeValidator(_integral)
JsonInt = Annotated[StrictInt, INTEGRAL]

Id128 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Id64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


def _npi(v: str) -> str:
    problem = npi_problem(v)
    if problem is not None:
        raise ValueError(problem)
    return v


def _place_of_service(v: str) -> str:
    if v not in PLACE_OF_SERVICE_CODES:
        raise ValueError(f"{v!r} is not a CMS place-of-service code")
    return v


# 10 digits with a valid check digit (Luhn over 80840 + the NPI).
# The check digit is no JSON Schema keyword: the published schema names it as the format
# "npi" (a validator that asserts formats can register it; see the description).
Npi = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{10}$"),
    AfterValidator(_npi),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]{10}$",
            "format": "npi",
            "description": "an NPI: 10 digits, the last a Luhn check digit over 80840 and"
            " the first 9 (format 'npi')",
        }
    ),
]


def _icd10_cm(v: str) -> str:
    problem = icd10_cm_problem(v)
    if problem is not None:
        raise ValueError(problem)
    return v


# An ICD-10-CM code of the tabular (schemas.codes): the format, then existence. A code that
# exists but is no billable leaf (the header M54.5) is accepted here and caught by the
# claim-readiness gate ICD10_NOT_BILLABLE; one that does not exist at all (M54.9X9) is
# refused. Existence is no JSON Schema keyword: the published schema names it as the format
# "icd-10-cm" (see the description), as it does the NPI check digit.
Icd10 = Annotated[
    str,
    StringConstraints(pattern=ICD10_CM_PATTERN),
    AfterValidator(_icd10_cm),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": ICD10_CM_PATTERN,
            "format": "icd-10-cm",
            "description": "an ICD-10-CM code of the tabular (format 'icd-10-cm'), with its dot"
            " after the category, e.g. M54.50",
        }
    ),
]
PlaceOfService = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{2}$"),
    AfterValidator(_place_of_service),
    WithJsonSchema(
        {"type": "string", "pattern": r"^[0-9]{2}$", "enum": sorted(PLACE_OF_SERVICE_CODES)}
    ),
]

ClinicianRole = Literal["PT", "PTA", "OT", "OTA", "SLP", "MD", "DO", "NP", "PA"]
RedFlag = Literal[
    "saddle_anesthesia",
    "bladder_dysfunction",
    "bowel_incontinence",
    "bilateral_leg_symptoms",
    "progressive_weakness",
    "fever",
    "unexplained_weight_loss",
    "constant_night_pain",
    "major_trauma",
]
# Intake screening (intake.submitted) asks one more: a history of cancer, a serious-pathology
# flag of the intake only (it is history, not a symptom to report during an episode).
IntakeRedFlag = Literal[RedFlag, "cancer_history"]
BodyRegion = Literal[
    "low_back",
    "neck",
    "thoracic",
    "shoulder",
    "elbow_wrist_hand",
    "hip",
    "knee",
    "ankle_foot",
    "other",
]
ReferralSource = Literal["self", "primary_care", "specialist", "employer", "payer", "other"]
ContactChannel = Literal["phone", "video", "message", "in_person"]


# The IANA zones of the pinned tzdata package (not the host's zoneinfo, which differs
# between machines and has entries such as "localtime" or "right/..."): the gateway and
# the published schema (an enum) take the same names, and each loads with ZoneInfo.
TIME_ZONES: frozenset[str] = frozenset(
    importlib.resources.files("tzdata").joinpath("zones").read_text().split()
)


def _iana_zone(v: str) -> str:
    if v not in TIME_ZONES:
        raise ValueError(f"unknown IANA time zone {v!r}")
    return v


TimeZone = Annotated[
    str,
    AfterValidator(_iana_zone),
    WithJsonSchema({"type": "string", "enum": sorted(TIME_ZONES)}),
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Frozen):
    kind: Literal["app", "device", "ehr", "clinician_portal"]
    id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]


class Exercise(_Frozen):
    """One exercise of a home exercise program with its dosage (issue 17): sets, repetitions
    per set, seconds each repetition is held (0: not a hold)."""

    exercise_id: Id64
    name: Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=NO_NUL)] | None = (
        None
    )
    sets: Annotated[StrictInt, Field(ge=1, le=20), INTEGRAL]
    reps: Annotated[StrictInt, Field(ge=1, le=200), INTEGRAL]
    hold_s: Annotated[StrictInt, Field(ge=0, le=600), INTEGRAL] = 0


class TemplateRef(_Frozen):
    """The organisation template (and its immutable version) a program was assigned from."""

    id: Id64
    version: Annotated[StrictInt, Field(ge=1, le=1_000_000), INTEGRAL]


class Program(_Frozen):
    sessions_per_week: Annotated[StrictInt, Field(ge=0, le=28), INTEGRAL]
    exercise_ids: list[Id64] = Field(default_factory=list)
    # The exercises with their dosage (optional: older producers send exercise_ids only).
    exercises: Annotated[list[Exercise], Field(max_length=50)] | None = None
    # Set when the program is a template's version as assigned; absent for a program of
    # the patient's own (a per-patient change: the patient's copy).
    template: TemplateRef | None = None

    @field_validator("exercises")
    @classmethod
    def _distinct_exercises(cls, v: list[Exercise] | None) -> list[Exercise] | None:
        ids = [e.exercise_id for e in v or ()]
        if len(set(ids)) != len(ids):
            raise ValueError("each exercise_id may appear only once in a program")
        return v


class BillingInfo(_Frozen):
    rendering_npi: Npi
    billing_npi: Npi
    payer: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
    member_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,32}$")]
    diagnosis_codes: Annotated[list[Icd10], Field(min_length=1, max_length=12)]
    place_of_service: PlaceOfService


class _Envelope(_Frozen):
    event_id: Id128
    schema_version: Annotated[JsonInt, WithJsonSchema({"type": "integer", "const": SCHEMA_VERSION})]
    patient_id: Id64
    occurred_at: Timestamp
    source: Source | None = None
    recorded_at: Timestamp | None = None
    # Set by the gateway; producers may omit it.
    received_at: Timestamp | None = None
    # Set by the gateway to the organisation of the key that posted the event (a value
    # sent by the producer is replaced). Written straight to Kafka without one: DEFAULT_ORG.
    org_id: Id64 | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"unsupported schema_version {v}; this system understands {SCHEMA_VERSION}"
            )
        return v

    @property
    def local_date(self) -> dt.date:
        """The patient-local date: the calendar date of occurred_at in its own offset."""
        return self.occurred_at.date()

    @functools.cached_property
    def patient_key(self) -> PatientKey:
        """Who the event is about: (organisation, patient_id). A patient id means a patient
        only within an organisation; an event without a stamp belongs to DEFAULT_ORG.

        Kept once made (the worker asks it of each event about twenty times a batch); a
        copy with changes makes it again (``model_copy``), so a copy the gateway stamps
        with the key's organisation never carries the unstamped event's."""
        return (self.org_id or DEFAULT_ORG, self.patient_id)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("patient_key", None)
        return copied


# The body region of an episode (the pathway's primary instrument depends on it;
# docs/pathways-and-outcomes.md). Absent means "other".
EpisodeBodyRegion = Literal[
    "low_back",
    "neck",
    "shoulder",
    "elbow",
    "wrist_hand",
    "hip",
    "knee",
    "ankle_foot",
    "other",
]
# Why an episode ended (NZ ACC Integrated Care Pathways' termination codes in the docs); an
# absent or unlisted episode.ended reason counts as "other" (outcomes).
EXIT_REASONS: tuple[str, ...] = (
    "goals_met",
    "discharged",
    "dropped_out",
    "referred",
    "transferred",
    "not_eligible",
    "other",
)


class PathwayRef(_Frozen):
    """A care pathway version, e.g. ``{"id": "msk-default", "version": 1}``."""

    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    version: Annotated[StrictInt, Field(ge=1, le=100000), INTEGRAL]


class EpisodeStarted(_Envelope):
    type: Literal["episode.started"]
    episode_id: Id64
    clinician_id: Id64
    clinician_role: ClinicianRole
    timezone: TimeZone
    program: Program
    billing: BillingInfo
    setup_education_completed: StrictBool = False
    # The intake this episode answers (intake.submitted): its start is also a first contact.
    intake_id: Id64 | None = None
    # The pathway's inputs (issue 19): absent body_region means "other", absent pathway the
    # organisation's default (msk-default@1).
    body_region: EpisodeBodyRegion | None = None
    pathway: PathwayRef | None = None


class ProgramUpdated(_Envelope):
    type: Literal["program.updated"]
    episode_id: Id64
    program: Program


class _SelfReported(_Envelope):
    """What a patient app may post (key scope ``producer``): the patient's own reports. A
    base class so the producer's types are read off the contract, not listed."""


class _PatientData(_SelfReported):
    """What the patient sends about themself: a data day for RTM (98977), the alert rules'
    input. A base class so the set of such types is read off the contract, not listed."""


class ExerciseCompleted(_PatientData):
    type: Literal["exercise.completed"]
    episode_id: Id64 | None = None
    exercise_id: Id64
    session_id: Id128 | None = None
    sets: Annotated[StrictInt, Field(ge=0, le=50), INTEGRAL] | None = None
    reps: Annotated[StrictInt, Field(ge=0, le=1000), INTEGRAL] | None = None
    duration_s: Annotated[StrictInt, Field(ge=0, le=14400), INTEGRAL] | None = None


class PainReported(_PatientData):
    type: Literal["pain.reported"]
    episode_id: Id64 | None = None
    score: Annotated[StrictInt, Field(ge=0, le=10), INTEGRAL]
    context: Literal["rest", "activity", "exercise"] | None = None


class SymptomReported(_PatientData):
    type: Literal["symptom.reported"]
    episode_id: Id64 | None = None
    red_flags: list[RedFlag] = Field(default_factory=list)
    fall: StrictBool = False


class ClinicianTimeLogged(_Envelope):
    type: Literal["clinician.time_logged"]
    episode_id: Id64 | None = None
    clinician_id: Id64
    clinician_role: ClinicianRole
    minutes: Annotated[StrictInt, Field(ge=1, le=240), INTEGRAL]
    activity: Literal["review", "call", "video", "message", "program_edit"]
    interactive: StrictBool
    # a correction: the event_id of the patient's earlier time log this one replaces (the
    # month counts this log instead of that one; the gateway refuses an unknown entry or
    # another patient's, naming the field)
    supersedes: Id64 | None = None


class EpisodeEnded(_Envelope):
    type: Literal["episode.ended"]
    episode_id: Id64
    reason: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)] | None = None


# --- paused programs (issues 17 and 19; docs/alert-rules.md, Paused programs) ---------------


class ProgramPaused(_Envelope):
    """A clinician pauses the episode's program from its patient-local date (e.g. after a
    red flag). A fall (``symptom.reported`` with ``fall: true``) pauses it too, by itself."""

    type: Literal["program.paused"]
    episode_id: Id64
    clinician_id: Id64
    reason: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)] | None = None


class ProgramResumed(_Envelope):
    """A clinician resumes a paused program from its patient-local date."""

    type: Literal["program.resumed"]
    episode_id: Id64
    clinician_id: Id64


# --- outcome measures and visits (issue 19; docs/pathways-and-outcomes.md) -------------------

InstrumentId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
ItemId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,32}$")]
# An item's answer: an integer (the instrument's range is checked when it is scored: an
# answer out of range makes the form invalid, it is not refused), or null for a missing item.
ItemAnswer = Annotated[StrictInt, Field(ge=-1000, le=1000), INTEGRAL] | None


class AssessmentCompleted(_SelfReported):
    """A patient-reported outcome measure (PROM) form: the instrument's item answers. Not
    patient data (no RTM data day, no inactivity reset). ``instrument`` is not an enum: an
    unknown one is kept and scored invalid (``unknown_instrument``)."""

    type: Literal["assessment.completed"]
    episode_id: Id64 | None = None
    instrument: InstrumentId
    answers: Annotated[dict[ItemId, ItemAnswer], Field(min_length=1, max_length=64)]


class VisitCompleted(_Envelope):
    """A therapy visit took place (in person or virtual)."""

    type: Literal["visit.completed"]
    episode_id: Id64
    mode: Literal["in_person", "virtual"]
    clinician_id: Id64 | None = None


# --- intake (issue 18): screening before any episode; see docs/intake-rules.md ----------------

SBST_ITEMS = 9


class SbstAnswers(_Frozen):
    """The Keele STarT Back Screening Tool's answers, by item id "1"-"9" (the project ships
    item ids and scoring only, never the item text: (c) Keele University). Items 1-8: 0
    disagree, 1 agree; item 9 (bothersomeness): 0 not at all .. 4 extremely."""

    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True)

    item1: Annotated[StrictInt, Field(alias="1", ge=0, le=1), INTEGRAL]
    item2: Annotated[StrictInt, Field(alias="2", ge=0, le=1), INTEGRAL]
    item3: Annotated[StrictInt, Field(alias="3", ge=0, le=1), INTEGRAL]
    item4: Annotated[StrictInt, Field(alias="4", ge=0, le=1), INTEGRAL]
    item5: Annotated[StrictInt, Field(alias="5", ge=0, le=1), INTEGRAL]
    item6: Annotated[StrictInt, Field(alias="6", ge=0, le=1), INTEGRAL]
    item7: Annotated[StrictInt, Field(alias="7", ge=0, le=1), INTEGRAL]
    item8: Annotated[StrictInt, Field(alias="8", ge=0, le=1), INTEGRAL]
    item9: Annotated[StrictInt, Field(alias="9", ge=0, le=4), INTEGRAL]

    @property
    def items(self) -> tuple[int, ...]:
        """The nine answers, item 1 first."""
        return tuple(getattr(self, f"item{i}") for i in range(1, SBST_ITEMS + 1))


class IntakeAnswers(_Frozen):
    # Numeric Pain Rating Scale now, 0-10 (as pain.reported's score)
    nprs: Annotated[StrictInt, Field(ge=0, le=10), INTEGRAL]
    # STarT Back, only for low_back (Keele does not recommend it for other regions)
    sbst: SbstAnswers | None = None


def _unique_flags(v: list[str]) -> list[str]:
    seen: set[str] = set()
    for flag in v:
        if flag in seen:
            raise ValueError(f"{flag!r} is listed twice; each red flag at most once")
        seen.add(flag)
    return v


IntakeRedFlags = Annotated[
    list[IntakeRedFlag],
    AfterValidator(_unique_flags),
    Field(json_schema_extra={"uniqueItems": True}),
]
SBST_REGION = "low_back"
SBST_REGION_MESSAGE = (
    f"the STarT Back tool is only for body_region {SBST_REGION!r}"
    " (Keele does not recommend it for other regions)"
)


class IntakeSubmitted(_SelfReported):
    """A screening: from a patient app's self-screen (``producer``) or a scheduling system's
    screening script (``integration``). Keyed by (patient_id, intake_id); a later version
    (a later occurred_at) amends it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        # the region rule in the published schema: without low_back, no (non-null) sbst
        json_schema_extra={
            "if": {
                "properties": {"body_region": {"not": {"const": SBST_REGION}}},
                "required": ["body_region"],
            },
            "then": {
                "properties": {"answers": {"properties": {"sbst": {"type": "null"}}}},
                "description": SBST_REGION_MESSAGE,
            },
        },
    )

    type: Literal["intake.submitted"]
    intake_id: Id64
    timezone: TimeZone
    body_region: BodyRegion
    referral_source: ReferralSource | None = None
    # the flags answered yes; may be empty
    red_flags: IntakeRedFlags
    answers: IntakeAnswers

    @model_validator(mode="after")
    def _sbst_only_for_low_back(self) -> IntakeSubmitted:
        if self.answers.sbst is not None and self.body_region != SBST_REGION:
            raise ValidationError.from_exception_data(
                "IntakeSubmitted",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("sbst_region", SBST_REGION_MESSAGE),
                        loc=("answers", "sbst"),
                        input=self.answers.sbst.model_dump(),
                    )
                ],
            )
        return self


class IntakeContacted(_Envelope):
    """The first contact with the patient about an intake (integration keys): a call, a
    video visit, a message or a visit. ``episode.started`` with ``intake_id`` counts too."""

    type: Literal["intake.contacted"]
    intake_id: Id64
    channel: ContactChannel
    clinician_id: Id64 | None = None


# --- claim-readiness facts (issue 20; docs/billing-readiness.md) ---------------------------
# What an EHR integration tells about a patient that billing cannot see in the RTM stream:
# consent, therapy plans of care, surgeries, RPM enrolment, therapy spend billed elsewhere.
# Each is a fact the claim-readiness gates (billing.readiness) read; none shapes episodes.

_ISO_DATE = re.compile(r"(?:20[0-9]{2}|2100)-[0-9]{2}-[0-9]{2}").fullmatch
DATE_PATTERN = "^(?:20[0-9]{2}|2100)-[0-9]{2}-[0-9]{2}$"
AMOUNT_MAX = Decimal(1_000_000_000)


def _iso_date(v: object) -> object:
    """A calendar date written YYYY-MM-DD (years 2000-2100), nothing else (no timestamps,
    numbers or other ISO 8601 spellings, which pydantic's lax date would take)."""
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        if not YEAR_MIN <= v.year <= YEAR_MAX:
            raise ValueError(f"date must be between {YEAR_MIN} and {YEAR_MAX}")
        return v
    if not isinstance(v, str) or not _ISO_DATE(v):
        if isinstance(v, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
            raise ValueError(f"date must be between {YEAR_MIN} and {YEAR_MAX}")
        kind = "another string" if isinstance(v, str) else _json_kind(v)
        raise ValueError(f"a date is a string YYYY-MM-DD, not {kind}")
    try:
        return dt.date.fromisoformat(v)
    except ValueError:
        raise ValueError(f"{v!r} is not a calendar date") from None


# A patient-local calendar date (the JSON Schema's "date" format, RFC 3339 full-date).
IsoDate = Annotated[
    dt.date,
    BeforeValidator(_iso_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]


def _amount(v: object) -> Decimal:
    """A JSON number >= 0 with at most 2 decimals, kept exact (Decimal of its shortest
    spelling); at most AMOUNT_MAX, so that it stays exact as a JSON number again."""
    if isinstance(v, Decimal):
        amount = v
    elif isinstance(v, bool) or not isinstance(v, (int, float)):
        kind = "a string" if isinstance(v, str) else _json_kind(v)
        raise ValueError(f"an amount is a JSON number, not {kind}")
    else:
        amount = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    if not amount.is_finite() or amount < 0 or amount > AMOUNT_MAX:
        raise ValueError(f"an amount is a number from 0 to {AMOUNT_MAX}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and amount != amount.quantize(Decimal("0.01")):
        raise ValueError("an amount has at most 2 decimals (dollars and cents)")
    return amount


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "maximum": int(AMOUNT_MAX),
            "format": "amount",
            "description": "US dollars: a number >= 0 with at most 2 decimals (format"
            " 'amount'; JSON Schema's multipleOf 0.01 is inexact on binary floats)",
        }
    ),
]
# The certifier's NPI: 10 digits. A wrong check digit is not refused (staff must see it, it
# must not vanish into the dead letters): the gate CERTIFIER_NPI_INVALID blocks the line.
CertifierNpi = Annotated[str, StringConstraints(pattern=r"^[0-9]{10}$")]
GLOBAL_DAYS = (0, 10, 90)


def _global_days(v: int) -> int:
    if v not in GLOBAL_DAYS:
        raise ValueError("must be 0, 10 or 90 (the CMS global surgery periods)")
    return v


class _ReadinessFact(_Envelope):
    """A fact the claim-readiness gates read. A base class so the set of such types is read
    off the contract, not listed."""


class ConsentRecorded(_ReadinessFact):
    """The patient's consent to RTM for one episode (its date: the local date)."""

    type: Literal["consent.recorded"]
    episode_id: Id64
    method: Literal["written", "verbal", "electronic"]
    scope: Literal["rtm"]


class PlanOfCareCertified(_ReadinessFact):
    """A therapy plan of care certified for one episode: covers its local date C through
    C + duration_days - 1 (Medicare: at most 90 days)."""

    type: Literal["plan_of_care.certified"]
    episode_id: Id64
    certifier_npi: CertifierNpi
    duration_days: Annotated[StrictInt, Field(ge=1, le=90), INTEGRAL]


class ProcedureRecorded(_ReadinessFact):
    """A surgery of the patient (its date: the local date) with its global period."""

    type: Literal["procedure.recorded"]
    surgeon_npi: Npi
    global_days: Annotated[
        StrictInt,
        INTEGRAL,
        AfterValidator(_global_days),
        WithJsonSchema({"type": "integer", "enum": list(GLOBAL_DAYS)}),
    ]


class RpmEnrolled(_ReadinessFact):
    """Remote physiologic monitoring of the patient from period_start to period_end
    (patient-local dates, inclusive)."""

    type: Literal["rpm.enrolled"]
    period_start: IsoDate
    period_end: IsoDate

    @field_validator("period_end")
    @classmethod
    def _not_before_start(cls, v: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("period_start")
        if isinstance(start, dt.date) and v < start:
            raise ValueError(f"must be on or after period_start ({start.isoformat()})")
        return v


class TherapySpendReported(_ReadinessFact):
    """What the patient's outpatient therapy of one bucket was allowed in ``year`` through
    other billers (not this system), year to date. The latest report wins."""

    type: Literal["therapy_spend.reported"]
    year: Annotated[StrictInt, Field(ge=YEAR_MIN, le=YEAR_MAX), INTEGRAL]
    amount_allowed_ytd: Amount
    bucket: Literal["pt_slp", "ot"]


# --- end of claim-readiness facts ------------------------------------------------------------


Event = Annotated[
    EpisodeStarted
    | ProgramUpdated
    | ExerciseCompleted
    | PainReported
    | SymptomReported
    | ClinicianTimeLogged
    | EpisodeEnded
    | ProgramPaused
    | ProgramResumed
    | AssessmentCompleted
    | VisitCompleted
    | IntakeSubmitted
    | IntakeContacted
    # claim-readiness facts (issue 20)
    | ConsentRecorded
    | PlanOfCareCertified
    | ProcedureRecorded
    | RpmEnrolled
    | TherapySpendReported,
    Field(discriminator="type"),
]
EVENT_MODELS: tuple[type[_Envelope], ...] = typing.get_args(typing.get_args(Event)[0])


def type_of(model: type[_Envelope]) -> str:
    """The ``type`` literal of one event model."""
    return str(typing.get_args(model.model_fields["type"].annotation)[0])


# The type sets every layer uses, read off the union above (one place to add a type).
EVENT_TYPES: tuple[str, ...] = tuple(type_of(m) for m in EVENT_MODELS)
PATIENT_DATA_TYPES: frozenset[str] = frozenset(
    type_of(m) for m in EVENT_MODELS if issubclass(m, _PatientData)
)
# What a patient app sends: its patient-data reports and its intake self-screens.
PRODUCER_TYPES: frozenset[str] = frozenset(
    type_of(m) for m in EVENT_MODELS if issubclass(m, _SelfReported)
)
# What an EHR or scheduling integration sends: episodes, programs, clinician time, intakes
# and their contacts, the claim-readiness facts (everything but patient data).
INTEGRATION_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - PATIENT_DATA_TYPES
# The claim-readiness facts (consent, plans of care, procedures, RPM, therapy spend).
READINESS_FACT_TYPES: frozenset[str] = frozenset(
    type_of(m) for m in EVENT_MODELS if issubclass(m, _ReadinessFact)
)
ReadinessFact = (
    ConsentRecorded | PlanOfCareCertified | ProcedureRecorded | RpmEnrolled | TherapySpendReported
)
# The organisation of events that name none (before tenancy, or written straight to Kafka).
DEFAULT_ORG = "default"
# A patient is (organisation, patient_id): the same patient_id in two organisations is two
# patients (their states, events, alerts, ledger and rollups never meet).
PatientKey = tuple[str, str]


def key_text(key: PatientKey) -> str:
    """``<org>/<patient_id>``: the text form of a patient key (the Kafka key of the
    patient's records). Unambiguous: ids never contain ``/``."""
    return f"{key[0]}/{key[1]}"


EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def is_patient_data(event: Event) -> bool:
    """True for the types that count as an RTM data day."""
    return event.type in PATIENT_DATA_TYPES


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)
    field: str
    message: str


def _loc(loc: tuple[int | str, ...]) -> str:
    # Drop the discriminator tag pydantic puts first (e.g. 'pain.reported').
    parts = [str(p) for p in loc]
    if parts and parts[0] in EVENT_TYPES:
        parts = parts[1:]
    return ".".join(parts) or "type"


# A timestamp's type or pattern errors, explained (calendar errors keep pydantic's words).
_RESHAPED = frozenset({"timestamp_invalid", "string_type", "string_pattern_mismatch"})


def errors_of(exc: ValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        field = _loc(err["loc"])
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":
            field, msg = "type", f"unknown event type; expected one of {', '.join(EVENT_TYPES)}"
        elif err["type"] == "union_tag_not_found":
            field, msg = "type", "missing event type"
        elif err["type"] == "timezone_aware":
            msg = NAIVE_MESSAGE
        elif err["loc"] and err["loc"][-1] in TIMESTAMP_FIELDS and err["type"] in _RESHAPED:
            msg = timestamp_problem(err["input"])
        elif isinstance(err.get("input"), str) and "\x00" in err["input"]:
            msg = NUL_MESSAGE  # rather than "should match pattern ..." for an id or a code
        msg = msg.removeprefix("Value error, ")
        out.append(FieldError(field=field, message=f"{field}: {msg}"))
    return out


def future_skew_error(event: Event, reference: dt.datetime, max_skew_s: float) -> FieldError | None:
    """The error for an ``occurred_at`` more than ``max_skew_s`` seconds after ``reference``.

    ``reference`` is when the event was received (the gateway's ``received_at``; the
    worker's for records written straight to Kafka). Exactly ``max_skew_s`` ahead is
    accepted. Pure: the caller reads the clock.
    """
    if reference.utcoffset() is None:
        raise ValueError("reference must be timezone-aware")
    ahead = (event.occurred_at - reference).total_seconds()
    if ahead <= max_skew_s:
        return None
    return FieldError(
        field="occurred_at",
        message=(
            f"occurred_at: more than {max_skew_s:g} s ahead of received_at"
            f" ({event.occurred_at.isoformat()} is {ahead:.0f} s after"
            f" {reference.isoformat()}); check the device clock"
        ),
    )


def validate_event(obj: Any) -> Event | list[FieldError]:
    """Validate one decoded JSON value; return the event or the errors naming each field."""
    if not isinstance(obj, dict):
        return [FieldError(field="", message="event must be a JSON object")]
    try:
        return EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        return errors_of(exc)


def parse_event_json(raw: bytes | str) -> Event:
    """Decode an event already validated upstream (Kafka payload, JSONL line)."""
    return EVENT_ADAPTER.validate_json(raw)


def dump_event(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def published_pattern(pattern: str) -> str:
    r"""A contract pattern as the published schema states it. The contract's regexes run in
    pydantic-core (Rust: ``$`` is the end of the text); Python's ``re``, which Python
    JSON Schema validators use, also lets ``$`` match before a final newline, so an id
    "p-1" followed by a newline would pass there. ``(?!\n)$`` means the end with no
    newline left in ECMA-262, in Python and in Rust alike."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "(?!\\n)$"
    return pattern


def _publish(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: published_pattern(v) if k == "pattern" and isinstance(v, str) else _publish(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_publish(v) for v in node]
    return node


def json_schema() -> dict[str, Any]:
    """The contract as JSON Schema 2020-12 (``rtm schema``, the OpenAPI request body). It
    accepts and refuses what ``validate_event`` does when formats are asserted: date-time
    (RFC 3339: calendar dates, e.g. no February 30) and npi (the check digit)."""
    schema: dict[str, Any] = _publish(EVENT_ADAPTER.json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "RTM event (contract v1)"
    schema["description"] = (
        "One event. Assert formats: date-time (RFC 3339), date (RFC 3339 full-date), npi"
        " (10 digits, the last a Luhn check digit over the prefix 80840 and the first 9"
        " digits), icd-10-cm (a code of the ICD-10-CM tabular, release "
        + icd10_cm_release()
        + ") and amount (a number with at most 2 decimals). One rule no keyword states:"
        " rpm.enrolled's period_end is on or after its period_start."
    )
    return schema
