"""`rtm fhir ...`: clinical data as FHIR R4.

`rtm fhir observations`: one patient's pain reports and exercise sessions as a FHIR R4
searchset Bundle (``alerts.fhir``), from TimescaleDB, the same Bundle the gateway's
``GET /fhir/Observation`` answers. Scoped to the organisation (``--org``: the patient must
be one of its patients, else "unknown patient", exit 1) and audited like the gateway's
reads (actor ``cli:<login>``).

Over a JSONL file, offline (``outcomes.fhir``): `rtm fhir assessments --events F [--patient
P]` (QuestionnaireResponses and the score Observations of valid forms) and `rtm fhir
encounters --events F [--patient P]` (visits), each a searchset Bundle; `rtm fhir
questionnaire [--instrument I]` (the registry's Questionnaires); `rtm fhir plan-definition
--pathway FILE.json` (a pathway version's PlanDefinition); `rtm fhir careplans|tasks --events
F --as-of TS [--patient P]` (each episode's CarePlan, or its Tasks, as of TS: the pathway
engine, as `rtm pathways evaluate`). Unreadable lines of a file, and episodes on an unknown
pathway version, are reported on stderr and skipped (exit 1; the Bundle is still written for
the others)."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson

from alerts.fhir import CLINICAL_TYPES, observation_bundle
from intake.evaluate import LineError, read_events
from outcomes.fhir import file_resources, plan_definition, questionnaire, searchset
from outcomes.instruments import INSTRUMENTS
from pathways.fhir import care_plans, tasks
from rtm.cli.options import settings_of
from rtm.cli.pathways import AS_OF, LICENSED, PATHWAY_FILES, episode_views
from rtm.files import write_private
from schemas.events import parse_event_json
from streams.access import Scope
from streams.clock import clock_for
from streams.db.access import audit, in_scope
from streams.db.events import clinical_payloads


def _date(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=name) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "unknown"


async def export_observations(
    dsn: str,
    *,
    org_id: str,
    patient_id: str,
    frm: dt.date | None,
    to: dt.date | None,
    actor: str,
    now: dt.datetime,
) -> dict[str, Any] | None:
    """The Bundle, or None for a patient outside the organisation (nothing audited)."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await in_scope(conn, Scope(org_id, None), patient_id):
            return None
        rows = await clinical_payloads(conn, org_id, patient_id, CLINICAL_TYPES, frm, to)
        await audit(
            conn,
            org_id=org_id,
            actor=actor,
            role="cli",
            action="read",
            resource="rtm fhir observations",
            patient_ids=[patient_id],
            detail={
                "count": len(rows),
                "from": frm.isoformat() if frm else None,
                "to": to.isoformat() if to else None,
            },
        )
    finally:
        await conn.close()
    return observation_bundle((parse_event_json(p) for p in rows), now)


@click.group()
def fhir() -> None:
    """Clinical data as FHIR R4."""


@fhir.command("observations")
@click.option("--patient", "patient_id", required=True, help="the (pseudonymous) patient id")
@click.option("--from", "frm", default=None, help="first patient-local date, YYYY-MM-DD")
@click.option("--to", "to", default=None, help="last patient-local date, YYYY-MM-DD")
@click.option("--org", "org_id", default="default", show_default=True, help="organisation")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="default stdout")
@click.pass_context
def observations(
    ctx: click.Context,
    patient_id: str,
    frm: str | None,
    to: str | None,
    org_id: str,
    out: Path | None,
) -> None:
    """Pain reports and exercise sessions of a patient as a FHIR R4 searchset Bundle."""
    date_from, date_to = _date(frm, "--from"), _date(to, "--to")
    if date_from and date_to and date_from > date_to:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    settings = settings_of(ctx)
    bundle = asyncio.run(
        export_observations(
            settings.db.dsn,
            org_id=org_id,
            patient_id=patient_id,
            frm=date_from,
            to=date_to,
            actor=f"cli:{_user()}",
            now=clock_for(settings).now(),
        )
    )
    if bundle is None:
        click.echo(f"unknown patient {patient_id} in organisation {org_id}", err=True)
        sys.exit(1)
    text = orjson.dumps(bundle, option=orjson.OPT_INDENT_2).decode() + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        write_private(out, text)
        click.echo(f"wrote {bundle['total']} observations to {out}", err=True)


def _emit(resource: dict[str, Any], out: Path | None, what: str) -> None:
    text = orjson.dumps(resource, option=orjson.OPT_INDENT_2).decode() + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        write_private(out, text)
        click.echo(f"wrote {what} to {out}", err=True)


_EVENTS = click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
_PATIENT = click.option("--patient", "patient_id", default=None, help="only this patient's")
_OUT = click.option("--out", type=click.Path(path_type=Path), default=None, help="default stdout")


def _file_bundle(
    ctx: click.Context, kind: str, events_path: Path, patient_id: str | None, out: Path | None
) -> None:
    errors: list[LineError] = []
    with events_path.open("rb") as fh:
        found = file_resources(read_events(fh, errors), kind, patient_id)
    for err in errors:
        click.echo(f"{events_path}:{err.line_no}: skipped: {err.message}", err=True)
    bundle = searchset(found, clock_for(settings_of(ctx)).now())
    _emit(bundle, out, f"{bundle['total']} resources")
    if errors:
        sys.exit(1)


@fhir.command("assessments")
@_EVENTS
@_PATIENT
@_OUT
@click.pass_context
def assessments(
    ctx: click.Context, events_path: Path, patient_id: str | None, out: Path | None
) -> None:
    """A file's assessment.completed as QuestionnaireResponses and, for valid forms, score
    Observations (a searchset Bundle)."""
    _file_bundle(ctx, "assessments", events_path, patient_id, out)


@fhir.command("encounters")
@_EVENTS
@_PATIENT
@_OUT
@click.pass_context
def encounters(
    ctx: click.Context, events_path: Path, patient_id: str | None, out: Path | None
) -> None:
    """A file's visit.completed as Encounters (class AMB in person, VR virtual)."""
    _file_bundle(ctx, "encounters", events_path, patient_id, out)


@fhir.command("questionnaire")
@click.option("--instrument", "instrument_id", default=None, help="one instrument (default all)")
@click.option("--base", default=None, help="FHIR base URL of the entries (default the gateway's)")
@_OUT
@click.pass_context
def questionnaires(
    ctx: click.Context, instrument_id: str | None, base: str | None, out: Path | None
) -> None:
    """The instrument registry's Questionnaires (a searchset Bundle), or one."""
    if instrument_id is None:
        settings = settings_of(ctx)
        base = base or f"http://{settings.gateway.host}:{settings.gateway.port}/fhir"
        found = [questionnaire(i) for i in sorted(INSTRUMENTS)]
        _emit(searchset(found, clock_for(settings).now(), base=base), out, "questionnaires")
        return
    if instrument_id not in INSTRUMENTS:
        known = ", ".join(sorted(INSTRUMENTS))
        raise click.BadParameter(
            f"unknown instrument {instrument_id!r} (known: {known})", param_hint="'--instrument'"
        )
    _emit(questionnaire(instrument_id), out, f"questionnaire {instrument_id}")


@fhir.command("plan-definition")
@click.option(
    "--pathway",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="a pathway version's document (JSON)",
)
@_OUT
def plan_definition_cmd(path: Path, out: Path | None) -> None:
    """A pathway version's PlanDefinition: an action per task, decisions as conditions."""
    try:
        resource = plan_definition(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise click.BadParameter(
            f"not a pathway document: {exc}", param_hint="'--pathway'"
        ) from None
    _emit(resource, out, f"plan definition {resource['id']}")


def _care_bundle(
    ctx: click.Context,
    kind: str,
    events_path: Path,
    as_of: str,
    patient_id: str | None,
    options: tuple[str, tuple[Path, ...]],
    out: Path | None,
) -> None:
    licensed, pathway_files = options
    eps, skipped = episode_views(events_path, as_of, licensed, pathway_files)
    chosen = [v for v in eps if patient_id is None or v.episode.patient_id == patient_id]
    found = care_plans(chosen) if kind == "careplans" else tasks(chosen)
    bundle = searchset(found, clock_for(settings_of(ctx)).now())
    _emit(bundle, out, f"{bundle['total']} resources")
    if skipped:
        sys.exit(1)


@fhir.command("careplans")
@_EVENTS
@AS_OF
@_PATIENT
@LICENSED
@PATHWAY_FILES
@_OUT
@click.pass_context
def careplans_cmd(
    ctx: click.Context,
    events_path: Path,
    as_of: str,
    patient_id: str | None,
    licensed: str,
    pathway_files: tuple[Path, ...],
    out: Path | None,
) -> None:
    """Each episode of a file on its pathway version as a CarePlan as of --as-of (a
    searchset Bundle, by episode id)."""
    options = (licensed, pathway_files)
    _care_bundle(ctx, "careplans", events_path, as_of, patient_id, options, out)


@fhir.command("tasks")
@_EVENTS
@AS_OF
@_PATIENT
@LICENSED
@PATHWAY_FILES
@_OUT
@click.pass_context
def tasks_cmd(
    ctx: click.Context,
    events_path: Path,
    as_of: str,
    patient_id: str | None,
    licensed: str,
    pathway_files: tuple[Path, ...],
    out: Path | None,
) -> None:
    """Each episode's pathway tasks as of --as-of as Tasks based on its CarePlan (a
    searchset Bundle, by episode id, then due date and kind)."""
    options = (licensed, pathway_files)
    _care_bundle(ctx, "tasks", events_path, as_of, patient_id, options, out)


COMMANDS: tuple[click.Command, ...] = (fhir,)
