"""Event contract v1 (see shared/design/events.md): the producer-facing models.

Models are frozen; domain code (alerts/, billing/, adherence) consumes them as values.
A timestamp keeps the producer's own UTC offset, so ``occurred_at.date()`` is the
patient-local date the rules count on.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

SCHEMA_VERSION = 1

Id128 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Id64 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Npi = Annotated[str, StringConstraints(pattern=r"^[0-9]{10}$")]
Icd10 = Annotated[str, StringConstraints(pattern=r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")]

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
PATIENT_DATA_TYPES = frozenset({"exercise.completed", "pain.reported", "symptom.reported"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Frozen):
    kind: Literal["app", "device", "ehr", "clinician_portal"]
    id: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Program(_Frozen):
    sessions_per_week: Annotated[StrictInt, Field(ge=0, le=28)]
    exercise_ids: list[Id64] = Field(default_factory=list)


class BillingInfo(_Frozen):
    rendering_npi: Npi
    billing_npi: Npi
    payer: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    member_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,32}$")]
    diagnosis_codes: Annotated[list[Icd10], Field(min_length=1, max_length=12)]
    place_of_service: Annotated[str, StringConstraints(pattern=r"^[0-9]{2}$")]


class _Envelope(_Frozen):
    event_id: Id128
    schema_version: StrictInt
    patient_id: Id64
    occurred_at: AwareDatetime
    source: Source | None = None
    recorded_at: AwareDatetime | None = None
    # Set by the gateway; producers may omit it.
    received_at: AwareDatetime | None = None

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {v}; this system understands {SCHEMA_VERSION}")
        return v

    @property
    def local_date(self) -> dt.date:
        """The patient-local date: the calendar date of occurred_at in its own offset."""
        return self.occurred_at.date()


class EpisodeStarted(_Envelope):
    type: Literal["episode.started"]
    episode_id: Id64
    clinician_id: Id64
    clinician_role: ClinicianRole
    timezone: str
    program: Program
    billing: BillingInfo
    setup_education_completed: StrictBool = False

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


class ProgramUpdated(_Envelope):
    type: Literal["program.updated"]
    episode_id: Id64
    program: Program


class ExerciseCompleted(_Envelope):
    type: Literal["exercise.completed"]
    episode_id: Id64 | None = None
    exercise_id: Id64
    session_id: Id128 | None = None
    sets: Annotated[StrictInt, Field(ge=0, le=50)] | None = None
    reps: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    duration_s: Annotated[StrictInt, Field(ge=0, le=14400)] | None = None


class PainReported(_Envelope):
    type: Literal["pain.reported"]
    episode_id: Id64 | None = None
    score: Annotated[StrictInt, Field(ge=0, le=10)]
    context: Literal["rest", "activity", "exercise"] | None = None


class SymptomReported(_Envelope):
    type: Literal["symptom.reported"]
    episode_id: Id64 | None = None
    red_flags: list[RedFlag] = Field(default_factory=list)
    fall: StrictBool = False


class ClinicianTimeLogged(_Envelope):
    type: Literal["clinician.time_logged"]
    episode_id: Id64 | None = None
    clinician_id: Id64
    clinician_role: ClinicianRole
    minutes: Annotated[StrictInt, Field(ge=1, le=240)]
    activity: Literal["review", "call", "video", "message", "program_edit"]
    interactive: StrictBool


class EpisodeEnded(_Envelope):
    type: Literal["episode.ended"]
    episode_id: Id64
    reason: Annotated[str, StringConstraints(max_length=64)] | None = None


Event = Annotated[
    Union[
        EpisodeStarted,
        ProgramUpdated,
        ExerciseCompleted,
        PainReported,
        SymptomReported,
        ClinicianTimeLogged,
        EpisodeEnded,
    ],
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "episode.started",
    "program.updated",
    "exercise.completed",
    "pain.reported",
    "symptom.reported",
    "clinician.time_logged",
    "episode.ended",
)
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
            msg = "timestamp must carry an explicit UTC offset (e.g. Z or -05:00)"
        msg = msg.removeprefix("Value error, ")
        out.append(FieldError(field=field, message=f"{field}: {msg}"))
    return out


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


def json_schema() -> dict[str, Any]:
    schema = EVENT_ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "RTM event (contract v1)"
    return schema
