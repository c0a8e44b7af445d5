"""Home exercise programs on the patient page (issue 17 item 3): each open episode's program
in force (its exercises with dosage, and the template version it was assigned from or
"patient's own copy") and its history (every ``program.updated`` by date), and the two forms
``POST /ui/patients/{id}/exercises/{assign|copy}``:

- ``assign``: the organisation template version chosen (the form names the version the
  clinician saw: assigning pins it) becomes the episode's program: a ``program.updated``
  with the template's exercises, sessions per week and ``template`` {id, version};
- ``copy``: the dosage (sets, reps, hold seconds) and sessions per week changed for this
  patient only: a ``program.updated`` with the changed exercises and no ``template`` (the
  patient's own copy; the template and its other patients are untouched).

Both in the signed-in clinician's name, in scope, CSRF-checked, audited, through the
gateway's event path (``post_event``), as the pause and resume forms."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from typing import Any, Literal

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from alerts.evaluate import fold
from schemas.episodes import Episode
from schemas.events import EpisodeStarted, Program, ProgramUpdated, parse_event_json
from streams.access import Principal
from streams.db.access import audit_principal, in_scope
from streams.db.events import patient_payloads
from streams.db.program_templates import ProgramTemplate, get_template
from streams.http.auth import form_fields
from streams.http.deps import GatewayDep, PrincipalDep
from streams.http.pages.common import (
    ID_RE,
    PageError,
    clinician_form,
    episode_event,
    page_router,
    post_event,
)

OWN_COPY = "patient's own copy"

router = page_router()


def _entry(event: EpisodeStarted | ProgramUpdated, arrival: int) -> dict[str, Any]:
    program = event.program
    exercises = [e.model_dump() for e in program.exercises or ()]
    if program.exercises is None:  # an older producer: ids without dosage
        exercises = [
            {"exercise_id": i, "name": None, "sets": None, "reps": None, "hold_s": None}
            for i in program.exercise_ids
        ]
    t = program.template
    return {
        "event_id": event.event_id,
        "episode_id": event.episode_id,
        "date": event.local_date,
        "arrival": arrival,
        "sessions_per_week": program.sessions_per_week,
        "exercises": exercises,
        "template_id": t.id if t else None,
        "template_version": t.version if t else None,
        "started": isinstance(event, EpisodeStarted),
    }


def program_histories(payloads: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Each episode's programs, in force order: by patient-local date, then arrival (the
    order in which ``schemas.episodes`` takes them, so the page's program in force is the
    one adherence counts). The episode's start carries its first program."""
    out: dict[str, list[dict[str, Any]]] = {}
    for n, payload in enumerate(payloads):
        if '"program' not in payload:  # only episode.started and program.* carry one
            continue
        event = parse_event_json(payload)
        if isinstance(event, (EpisodeStarted, ProgramUpdated)):
            out.setdefault(event.episode_id, []).append(_entry(event, n))
    for history in out.values():
        # the start first on its date, then the updates by date and arrival
        history.sort(key=lambda e: (e["date"], not e["started"], e["arrival"]))
        templated = False
        for e in history:
            if e["template_id"] is not None:
                templated = True
                e["source"] = f"template {e['template_id']} version {e['template_version']}"
            elif e["started"] and not templated:
                e["source"] = "the episode's initial program"
            else:
                e["source"] = OWN_COPY if templated else "own program (no template)"
            e["date"] = e["date"].isoformat()
    return out


def _event(ep: Episode, program: dict[str, Any], after: str, now: dt.datetime) -> dict[str, Any]:
    """The ``program.updated`` of a form, dated now in the episode's time zone. Its
    event_id is derived from the program it replaces and the new one, so a second click
    of the same form is the same event: a duplicate."""
    body = orjson.dumps(program, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(f"{ep.episode_id}|{after}|{body}".encode()).hexdigest()[:40]
    return episode_event(ep, "program.updated", f"ui-program-{digest}", now, program=program)


def template_program(t: ProgramTemplate) -> dict[str, Any]:
    """The program a template version prescribes, pinned to that version."""
    return {
        "sessions_per_week": t.sessions_per_week,
        "exercise_ids": [e.exercise_id for e in t.exercises],
        "exercises": [e.model_dump(exclude_none=True) for e in t.exercises],
        "template": {"id": t.template_id, "version": t.version},
    }


def _int_field(fields: dict[str, str], name: str, label: str, problems: list[str]) -> int | None:
    raw = fields.get(name, "").strip()
    if not re.fullmatch(r"-?[0-9]{1,7}", raw):
        problems.append(f"{label}: a whole number is required")
        return None
    return int(raw)


def copy_program(current: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The patient's own copy of ``current`` with the form's dosage and sessions per week;
    a PageError 422 names each bad field (the contract's bounds)."""
    problems: list[str] = []
    spw = _int_field(fields, "sessions_per_week", "sessions per week", problems)
    exercises: list[dict[str, Any]] = []
    for i, ex in enumerate(current["exercises"]):
        changed = {"exercise_id": ex["exercise_id"]} | (
            {"name": ex["name"]} if ex.get("name") else {}
        )
        for f in ("sets", "reps", "hold_s"):
            changed[f] = _int_field(fields, f"{f}-{i}", f"{ex['exercise_id']} {f}", problems)
        exercises.append(changed)
    if problems:
        raise PageError(422, "Refused", "; ".join(problems))
    program = {
        "sessions_per_week": spw,
        "exercise_ids": [e["exercise_id"] for e in exercises],
        "exercises": exercises,
    }
    try:
        Program.model_validate(program)
    except ValidationError as exc:
        names = [e["exercise_id"] for e in exercises]
        problems = [_field_error(e, names) for e in exc.errors()]
        raise PageError(422, "Refused", "; ".join(problems)) from None
    return program


def _field_error(error: Any, names: list[str]) -> str:
    loc = list(error["loc"])
    if len(loc) >= 3 and loc[0] == "exercises" and isinstance(loc[1], int):
        return f"{names[loc[1]]} {loc[2]}: {error['msg']}"
    return f"{' '.join(str(p) for p in loc).replace('_', ' ')}: {error['msg']}"


def _dosage(program: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(e["exercise_id"], e["sets"], e["reps"], e["hold_s"]) for e in program["exercises"]]


async def _episode_and_history(
    who: Principal, gateway: Any, patient_id: str, episode_id: str, action: str
) -> tuple[Episode, list[dict[str, Any]]]:
    store = gateway.store
    async with store.acquire() as conn:
        if not await in_scope(conn, who.scope(), patient_id):
            raise PageError(404, "Unknown patient", f"No patient {patient_id} in your care.")
        payloads = await patient_payloads(conn, who.org_id, patient_id)
        resource = f"POST /ui/patients/{patient_id}/exercises/{action}"
        verb = "assign_program" if action == "assign" else "change_program"
        await audit_principal(conn, who, verb, resource, [patient_id])
    states, _ = await asyncio.to_thread(fold, (parse_event_json(p) for p in payloads))
    state = states.get((who.org_id, patient_id))
    ep = None if state is None else state.book.episodes.get(episode_id)
    if ep is None or ep.end_date is not None:
        raise PageError(404, "Unknown episode", f"No open episode {episode_id} of this patient.")
    return ep, program_histories(payloads).get(episode_id, [])


@router.post("/patients/{patient_id}/exercises/{action}", response_class=HTMLResponse)
async def exercises_form(
    request: Request,
    patient_id: str,
    action: Literal["assign", "copy"],
    who: PrincipalDep,
    gateway: GatewayDep,
) -> Response:
    """Assign a template version to one of the patient's open episodes, or change this
    patient's copy of its program; then back to the patient page once the worker has
    stored the ``program.updated`` (or after a few seconds)."""
    clinician_form(who, patient_id, "manage_program", "Only a clinician changes a program.")
    fields = form_fields(await request.body())
    ep, history = await _episode_and_history(
        who, gateway, patient_id, fields.get("episode_id", ""), action
    )
    current = history[-1] if history else None
    after = current["event_id"] if current else ""
    if action == "assign":
        template_id, _, version = fields.get("template", "").partition("@")
        t = None
        if ID_RE.fullmatch(template_id) and version.isdigit() and len(version) < 8:
            async with gateway.store.acquire() as conn:
                t = await get_template(conn, who.org_id, template_id, int(version))
        if t is None:
            raise PageError(422, "Unknown template", "Choose one of your organisation's templates.")
        program = template_program(t)
    else:
        if current is None or not current["exercises"] or current["exercises"][0]["sets"] is None:
            raise PageError(409, "Nothing to change", "The program has no exercises with dosage.")
        program = copy_program(current, fields)
        same_week = program["sessions_per_week"] == current["sessions_per_week"]
        if same_week and _dosage(current) == _dosage(program):
            raise PageError(409, "Nothing changed", "The dosage is the program's own.")
    await post_event(gateway, who, _event(ep, program, after, gateway.clock.now()))
    return RedirectResponse(f"/ui/patients/{patient_id}", 303)
