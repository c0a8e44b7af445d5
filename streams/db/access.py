"""Organisations, users, sessions, machine keys, care teams, patient scope, audit log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from schemas.events import PatientKey
from streams.access import Principal, Scope

# --- organisations, users, keys, teams ----------------------------------------------------------


async def add_org(conn: asyncpg.Connection, org_id: str, name: str, timezone: str = "UTC") -> bool:
    status = await conn.execute(
        "INSERT INTO orgs (org_id, name, timezone) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        org_id,
        name,
        timezone,
    )
    return bool(status.endswith(" 1"))


async def list_orgs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await conn.fetch("SELECT org_id, name, timezone, created_at FROM orgs ORDER BY org_id")
    )


async def set_org_timezone(conn: asyncpg.Connection, org_id: str, timezone: str) -> bool:
    status = await conn.execute("UPDATE orgs SET timezone = $2 WHERE org_id = $1", org_id, timezone)
    return bool(status.endswith(" 1"))


async def org_timezone(conn: asyncpg.Connection, org_id: str) -> str:
    """The clinic's time zone (an IANA name; UTC when never set) the dashboard shows times in."""
    zone = await conn.fetchval("SELECT timezone FROM orgs WHERE org_id = $1", org_id)
    return str(zone) if zone is not None else "UTC"


async def org_exists(conn: asyncpg.Connection, org_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM orgs WHERE org_id = $1)", org_id))


async def add_user(
    conn: asyncpg.Connection,
    org_id: str,
    username: str,
    role: str,
    password_hash: str,
    clinician_id: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO users (org_id, username, role, clinician_id, password_hash)"
        " VALUES ($1, $2, $3, $4, $5)",
        org_id,
        username,
        role,
        clinician_id,
        password_hash,
    )


async def set_password(conn: asyncpg.Connection, username: str, password_hash: str) -> bool:
    status = await conn.execute(
        "UPDATE users SET password_hash = $2, disabled = false WHERE username = $1",
        username,
        password_hash,
    )
    return bool(status.endswith(" 1"))


async def list_users(conn: asyncpg.Connection, org_id: str | None) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT username, org_id, role, clinician_id, disabled, created_at FROM users"
            " WHERE $1::text IS NULL OR org_id = $1 ORDER BY org_id, username",
            org_id,
        )
    )


async def disable_user(conn: asyncpg.Connection, username: str) -> str | None:
    """Disable and sign out; returns the user's organisation (None: no such user)."""
    org: str | None = await conn.fetchval(
        "UPDATE users SET disabled = true WHERE username = $1 RETURNING org_id", username
    )
    if org is not None:
        await conn.execute(
            "DELETE FROM sessions WHERE user_id = (SELECT user_id FROM users WHERE username = $1)",
            username,
        )
    return org


async def add_key(
    conn: asyncpg.Connection,
    key_id: str,
    org_id: str,
    scopes: Sequence[str],
    label: str,
    salt: bytes,
    key_hash: bytes,
) -> None:
    await conn.execute(
        "INSERT INTO api_keys (key_id, org_id, scopes, label, salt, key_hash)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        key_id,
        org_id,
        list(scopes),
        label,
        salt,
        key_hash,
    )


async def key_record(conn: asyncpg.Connection, key_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT key_id, org_id, scopes, salt, key_hash FROM api_keys"
        " WHERE key_id = $1 AND NOT disabled",
        key_id,
    )
    return row


async def list_keys(conn: asyncpg.Connection, org_id: str | None) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT key_id, org_id, scopes, label, disabled, created_at FROM api_keys"
            " WHERE $1::text IS NULL OR org_id = $1 ORDER BY org_id, created_at",
            org_id,
        )
    )


async def delete_key(conn: asyncpg.Connection, key_id: str) -> None:
    await conn.execute("DELETE FROM api_keys WHERE key_id = $1", key_id)


async def disable_key(conn: asyncpg.Connection, key_id: str) -> str | None:
    org: str | None = await conn.fetchval(
        "UPDATE api_keys SET disabled = true WHERE key_id = $1 RETURNING org_id", key_id
    )
    return org


async def add_team_member(
    conn: asyncpg.Connection, org_id: str, team: str, clinician_id: str
) -> None:
    await conn.execute(
        "INSERT INTO care_team_members (org_id, team, clinician_id) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        org_id,
        team,
        clinician_id,
    )


async def remove_team_member(
    conn: asyncpg.Connection, org_id: str, team: str, clinician_id: str
) -> bool:
    status = await conn.execute(
        "DELETE FROM care_team_members WHERE org_id = $1 AND team = $2 AND clinician_id = $3",
        org_id,
        team,
        clinician_id,
    )
    return bool(status.endswith(" 1"))


async def team_clinicians(
    conn: asyncpg.Connection, org_id: str, clinician_id: str
) -> frozenset[str]:
    """The clinician's own id and every member of a care team they are on."""
    rows = await conn.fetch(
        "SELECT DISTINCT m.clinician_id FROM care_team_members m"
        " JOIN care_team_members me ON me.org_id = m.org_id AND me.team = m.team"
        " WHERE me.org_id = $1 AND me.clinician_id = $2",
        org_id,
        clinician_id,
    )
    return frozenset({clinician_id, *(r["clinician_id"] for r in rows)})


# --- sessions -------------------------------------------------------------------------------------


async def create_session(
    conn: asyncpg.Connection,
    token_hash: bytes,
    user_id: int,
    csrf: str,
    *,
    now: dt.datetime,
    ttl: dt.timedelta,
) -> None:
    await conn.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, last_seen, expires_at)"
        " VALUES ($1, $2, $3, $4::timestamptz, $4, $4::timestamptz + $5::interval)",
        token_hash,
        user_id,
        csrf,
        now,
        ttl,
    )


async def session_user(
    conn: asyncpg.Connection, token_hash: bytes, now: dt.datetime, idle: dt.timedelta
) -> asyncpg.Record | None:
    """The signed-in user of a live session: not past its lifetime, used within ``idle``."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT u.user_id, u.org_id, u.username, u.role, u.clinician_id, s.csrf_token,"
        " s.last_seen FROM sessions s JOIN users u USING (user_id)"
        " WHERE s.token_hash = $1 AND s.expires_at > $2"
        " AND s.last_seen > $2::timestamptz - $3::interval"
        " AND NOT u.disabled",
        token_hash,
        now,
        idle,
    )
    return row


async def touch_session(conn: asyncpg.Connection, token_hash: bytes, now: dt.datetime) -> None:
    """Slide the idle timeout (called at most once a minute per session)."""
    await conn.execute(
        "UPDATE sessions SET last_seen = $2 WHERE token_hash = $1 AND last_seen < $2",
        token_hash,
        now,
    )


async def trim_sessions(
    conn: asyncpg.Connection, user_id: int, *, keep: int, now: dt.datetime, idle: dt.timedelta
) -> int:
    """Before a new sign-in: delete the user's dead sessions (expired or idle) and end the
    least recently used live ones beyond ``keep``; returns how many live ones were ended."""
    await conn.execute(
        "DELETE FROM sessions WHERE user_id = $1"
        " AND (expires_at <= $2 OR last_seen <= $2::timestamptz - $3::interval)",
        user_id,
        now,
        idle,
    )
    status = await conn.execute(
        "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions"
        " WHERE user_id = $1 ORDER BY last_seen DESC, created_at DESC OFFSET $2)",
        user_id,
        keep,
    )
    return int(status.split()[-1])


async def end_user_sessions(conn: asyncpg.Connection, username: str) -> tuple[str, int] | None:
    """Sign a user out everywhere: (their organisation, sessions ended), or None."""
    org: str | None = await conn.fetchval("SELECT org_id FROM users WHERE username = $1", username)
    if org is None:
        return None
    status = await conn.execute(
        "DELETE FROM sessions WHERE user_id = (SELECT user_id FROM users WHERE username = $1)",
        username,
    )
    return org, int(status.split()[-1])


async def delete_session(conn: asyncpg.Connection, token_hash: bytes) -> None:
    await conn.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)


# --- tenancy and scope: a patient is (org_id, patient_id) ---------------------------------


async def record_patients(conn: asyncpg.Connection, keys: Iterable[PatientKey]) -> None:
    """Record (organisation, patient) pairs as known (in the ingest batch's transaction).
    A patient is (org_id, patient_id): the same patient_id sent by another organisation is
    another patient, so there is nothing to claim or refuse."""
    unique = sorted(set(keys))
    if unique:
        await conn.execute(
            "INSERT INTO patient_orgs (org_id, patient_id)"
            " SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            [o for o, _ in unique],
            [p for _, p in unique],
        )


async def record_patient_clinicians(
    conn: asyncpg.Connection, triples: Iterable[tuple[str, str, str]]
) -> None:
    """(organisation, patient, clinician) from episode.started: whom a clinician's scope
    covers."""
    unique = sorted(set(triples))
    if unique:
        await conn.execute(
            "INSERT INTO patient_clinicians (org_id, patient_id, clinician_id)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            [o for o, _, _ in unique],
            [p for _, p, _ in unique],
            [c for _, _, c in unique],
        )


def scope_sql(
    scope: Scope, patient_col: str, first_arg: int, org_col: str | None = None
) -> tuple[str, list[Any]]:
    """A WHERE fragment restricting rows to the scope, and its arguments: ``org_col`` (the
    row's organisation) is the scope's and ``patient_col`` one of its patients (for a
    clinician: of their care teams). Without ``org_col`` (a bare patient id), the patient
    must be known in the scope's organisation."""
    if org_col is None:
        sql = (
            f"EXISTS (SELECT 1 FROM patient_orgs po WHERE po.org_id = ${first_arg}"
            f" AND po.patient_id = {patient_col})"
        )
        org_ref = f"${first_arg}"
    else:
        sql = f"{org_col} = ${first_arg}"
        org_ref = org_col
    args: list[Any] = [scope.org_id]
    if scope.clinician_ids is not None:
        sql += (
            f" AND EXISTS (SELECT 1 FROM patient_clinicians pc"
            f" WHERE pc.org_id = {org_ref} AND pc.patient_id = {patient_col}"
            f" AND pc.clinician_id = ANY(${first_arg + 1}::text[]))"
        )
        args.append(sorted(scope.clinician_ids))
    return sql, args


async def patient_known(conn: asyncpg.Connection, org_id: str, patient_id: str) -> bool:
    """Whether the organisation has a patient with this id (ids are per organisation)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM patient_orgs WHERE org_id = $1 AND patient_id = $2)",
            org_id,
            patient_id,
        )
    )


async def in_scope(conn: asyncpg.Connection, scope: Scope, patient_id: str) -> bool:
    """Whether ``patient_id`` names a patient of the scope's organisation (and, for a
    clinician, of their care teams). Another organisation's patient with this id answers
    exactly as an unknown one does."""
    where, args = scope_sql(scope, "$1", 2)
    return bool(await conn.fetchval(f"SELECT {where}", patient_id, *args))


async def patients_in_scope(conn: asyncpg.Connection, scope: Scope) -> list[str]:
    """The scope's patients (of its one organisation), by id."""
    where, args = scope_sql(scope, "p.patient_id", 1, "p.org_id")
    rows = await conn.fetch(
        f"SELECT p.patient_id FROM patient_orgs p WHERE {where} ORDER BY 1", *args
    )
    return [r["patient_id"] for r in rows]


# --- audit ---------------------------------------------------------------------------------


async def audit(
    conn: asyncpg.Connection,
    *,
    org_id: str,
    actor: str,
    role: str,
    action: str,
    resource: str,
    patient_ids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (org_id, actor, role, action, resource, patient_ids, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
        org_id,
        actor,
        role,
        action,
        resource,
        sorted(set(patient_ids)),
        orjson.dumps(detail or {}).decode(),
    )


async def audit_principal(
    conn: asyncpg.Connection,
    who: Principal,
    action: str,
    resource: str,
    patient_ids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
) -> None:
    await audit(
        conn,
        org_id=who.org_id,
        actor=who.actor,
        role=who.role_text,
        action=action,
        resource=resource,
        patient_ids=patient_ids,
        detail=detail,
    )


async def denial_due(
    conn: asyncpg.Connection, subject: bytes, now: dt.datetime, window: dt.timedelta
) -> int | None:
    """Whether a 'denied' row for this actor, route and target is due: None within the
    window of the last one (the attempt is counted), else the attempts the window
    swallowed since that row (0 for the first)."""
    row = await conn.fetchrow(
        "INSERT INTO audit_denials AS d (subject, logged_at) VALUES ($1, $2)"
        " ON CONFLICT (subject) DO UPDATE SET"
        " carried = CASE WHEN d.logged_at <= $2::timestamptz - $3::interval THEN d.suppressed"
        "  ELSE d.carried END,"
        " suppressed = CASE WHEN d.logged_at <= $2::timestamptz - $3::interval THEN 0"
        "  ELSE d.suppressed + 1 END,"
        " logged_at = CASE WHEN d.logged_at <= $2::timestamptz - $3::interval THEN $2"
        "  ELSE d.logged_at END"
        " RETURNING logged_at = $2 AS due, carried",
        subject,
        now,
        window,
    )
    if row is None or not row["due"]:
        return None
    return int(row["carried"])  # 0 for a new subject


async def prune_denials(conn: asyncpg.Connection, before: dt.datetime) -> None:
    await conn.execute("DELETE FROM audit_denials WHERE logged_at < $1", before)


async def query_audit(
    conn: asyncpg.Connection,
    *,
    org_id: str | None,
    actor: str | None = None,
    patient_id: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first."""
    rows = await conn.fetch(
        "SELECT audit_id, at, org_id, actor, role, action, resource, patient_ids,"
        " detail::text AS detail FROM audit_log"
        " WHERE ($1::text IS NULL OR org_id = $1) AND ($2::text IS NULL OR actor = $2)"
        " AND ($3::text IS NULL OR patient_ids @> ARRAY[$3::text])"
        " AND ($4::text IS NULL OR action = $4) AND ($5::timestamptz IS NULL OR at >= $5)"
        " ORDER BY audit_id DESC LIMIT $6",
        org_id,
        actor,
        patient_id,
        action,
        since,
        limit,
    )
    return [
        {
            "audit_id": r["audit_id"],
            "at": r["at"].isoformat(),
            "org_id": r["org_id"],
            "actor": r["actor"],
            "role": r["role"],
            "action": r["action"],
            "resource": r["resource"],
            "patient_ids": list(r["patient_ids"]),
            "detail": orjson.loads(r["detail"]),
        }
        for r in rows
    ]


_AUDIT_COLUMNS = (
    "SELECT audit_id, at, actor, role, action, resource, patient_ids FROM audit_log"
    " WHERE org_id = $1 AND ($2::text = '' OR starts_with(actor, $2::text))"
    " AND ($3::text = '' OR EXISTS (SELECT 1 FROM unnest(patient_ids) AS p(id)"
    " WHERE starts_with(p.id, $3::text)))"
    " AND ($4::text = '' OR starts_with(action, $4::text))"
    " AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)"
)
_AUDIT_OLDER = (
    _AUDIT_COLUMNS + " AND ($7::bigint IS NULL OR audit_id < $7) ORDER BY audit_id DESC LIMIT $8"
)
_AUDIT_NEWER = _AUDIT_COLUMNS + " AND audit_id > $7 ORDER BY audit_id ASC LIMIT $8"


async def audit_page(
    conn: asyncpg.Connection,
    org_id: str,
    *,
    actor: str = "",
    patient: str = "",
    action: str = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    size: int = 50,
    before: int | None = None,
    after: int | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the organisation's audit log, newest first, bounded in SQL: rows whose
    actor, action and one of whose patients start with the given prefixes ("": any), with
    ``since <= at < until``. Paged by ``audit_id``: the ``size`` rows older than ``before``
    (default: the newest), or, with ``after``, the ``size`` rows just newer than it.
    Returns the rows and whether more lie beyond them in that direction."""
    newer = after is not None
    rows = await conn.fetch(
        _AUDIT_NEWER if newer else _AUDIT_OLDER,
        org_id,
        actor,
        patient,
        action,
        since,
        until,
        after if newer else before,
        size + 1,
    )
    more = len(rows) > size
    page = list(rows[:size])
    if newer:
        page.reverse()
    return [
        {
            "audit_id": r["audit_id"],
            "at": r["at"].isoformat(),
            "actor": r["actor"],
            "role": r["role"],
            "action": r["action"],
            "resource": r["resource"],
            "patient_ids": list(r["patient_ids"]),
        }
        for r in page
    ], more
