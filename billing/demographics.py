"""Patient demographics for claims, loaded by billing staff at the edge (pure parsing).

The stream is pseudonymous: names, birth dates and addresses never enter Kafka, logs or
metrics. The 837P needs them (2010BA NM1*IL, N3, N4, DMG), so billing staff load them from
their practice-management export, keyed by ``patient_id``
(``rtm billing demographics load FILE.csv``), into a table only the export reads.

CSV columns (header required, any order): ``patient_id,last_name,first_name,birth_date,
sex,address1,city,state,zip`` and optionally ``middle_name,address2,member_id``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9 .,'&/-]+$")
]
OptName = Annotated[str, StringConstraints(max_length=25, pattern=r"^[A-Za-z0-9 .,'&/-]*$")]

REQUIRED_COLUMNS = (
    "patient_id",
    "last_name",
    "first_name",
    "birth_date",
    "sex",
    "address1",
    "city",
    "state",
    "zip",
)
OPTIONAL_COLUMNS = ("middle_name", "address2", "member_id")


class Demographics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
    last_name: Name
    first_name: Name
    middle_name: OptName = ""
    birth_date: dt.date
    sex: Literal["M", "F", "U"]
    address1: Name
    address2: Annotated[
        str, StringConstraints(max_length=55, pattern=r"^[A-Za-z0-9 .,'&/#-]*$")
    ] = ""
    city: Name
    state: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    zip: Annotated[str, StringConstraints(pattern=r"^[0-9]{5}([0-9]{4})?$")]
    # optional: when given it must agree with the member id the episode carries
    member_id: Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9-]{1,32})?$")] = ""


def parse_demographics_csv(text: str) -> tuple[list[Demographics], list[str]]:
    """Rows and the errors (``line N (patient_id P): field: message``) of a demographics
    CSV. A bad row is skipped and reported; a missing required column fails the file."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return [], [f"header: missing column(s) {', '.join(missing)}"]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        return [], [f"header: unknown column(s) {', '.join(unknown)}"]
    rows: list[Demographics] = []
    errors: list[str] = []
    seen: set[str] = set()
    for n, raw in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"line {n} (patient_id {values.get('patient_id', '')})"
        try:
            row = Demographics.model_validate(values)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                field = ".".join(str(p) for p in err["loc"])
                errors.append(f"{where}: {field}: {err['msg']}")
            continue
        if row.patient_id in seen:
            errors.append(f"{where}: patient_id: appears twice in the file")
            continue
        seen.add(row.patient_id)
        rows.append(row)
    return rows, errors
