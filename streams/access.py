"""Who may see and do what: principals, roles, key scopes, secrets (issue 9).

Two kinds of principal reach the gateway:
- a **user** (clinician, billing, admin, operator, scheduler, manager) signed in with a
  password (argon2id hash) and holding a session cookie (HTTP-only, Secure, SameSite=Lax; a
  per-session CSRF token must come back in ``X-CSRF-Token`` on every state-changing
  request);
- a **machine key** ``rtm_<key_id>_<secret>`` with scopes: ``producer`` (a patient app:
  posts patient-data events and intake self-screens only), ``integration`` (an EHR or a
  scheduling system: episodes, programs, clinician time, intakes and their contacts,
  claim-readiness facts), ``reader`` (reads the API within its organisation). Only
  ``sha256(salt||secret)`` is stored: the secret is 256 random bits, so a slow hash would
  add latency to every request without adding safety; passwords, which people choose, get
  argon2id.

Every principal belongs to one organisation. What it may read is a ``Scope``: the
organisation, and for a clinician the clinician ids whose patients they see (their own
and their care teams'). The permission table below is the one place that says which role
or scope may do what; routes ask it and never decide on their own.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from schemas.events import INTEGRATION_TYPES, PRODUCER_TYPES

# scheduler: the front desk (issue 18 item 5): the intake queue and first contacts only
# manager: the outcome report and the pathway-diff page (issue 19 item 5), no patient pages
Role = Literal["clinician", "billing", "admin", "operator", "scheduler", "manager"]
KeyScope = Literal["producer", "integration", "reader"]
ROLES: tuple[Role, ...] = ("clinician", "billing", "admin", "operator", "scheduler", "manager")
KEY_SCOPES: tuple[KeyScope, ...] = ("producer", "integration", "reader")

# What each permission needs: user roles, key scopes.
Permission = Literal[
    "post_patient_data",  # exercise, pain, symptom events; intake self-screens
    "post_integration",  # episodes, programs, clinician time; intakes, contacts; readiness facts
    "read_clinical",  # alerts, adherence, pain, worklist
    "read_intakes",  # the intake queue: the organisation's intakes (not scoped to a team)
    "contact_intake",  # record a first contact from the queue page (in the user's own name)
    "acknowledge",  # acknowledge an alert (in the principal's own name)
    "manage_program",  # pause or resume a patient's program (a clinician, in their own name)
    "log_time",  # log or correct treatment time on a patient (a clinician, in their own name)
    "manage_templates",  # add a version to the organisation's exercise-program templates
    "read_billing",  # billing progress, claim lines (a look: nothing recorded)
    "read_readiness",  # the month's claim lines with their readiness (for integrations too)
    "record_export",  # record an export: the lines are billed
    "read_audit",  # the audit log of the organisation
    "read_outcomes",  # the outcome report, its exports and the pathway-diff page (aggregates)
    "operate",  # metrics and health (no patient data)
]
PERMISSIONS: dict[Permission, tuple[frozenset[str], frozenset[str]]] = {
    "post_patient_data": (frozenset(), frozenset({"producer"})),
    "post_integration": (frozenset(), frozenset({"integration"})),
    "read_clinical": (frozenset({"clinician", "admin"}), frozenset({"reader"})),
    "read_intakes": (
        frozenset({"clinician", "admin", "scheduler"}),
        frozenset({"reader", "integration"}),
    ),
    "contact_intake": (frozenset({"clinician", "admin", "scheduler"}), frozenset()),
    "acknowledge": (frozenset({"clinician", "admin"}), frozenset()),
    "manage_program": (frozenset({"clinician"}), frozenset()),
    "log_time": (frozenset({"clinician"}), frozenset()),
    "manage_templates": (frozenset({"clinician", "admin"}), frozenset()),
    "read_billing": (frozenset({"billing", "admin"}), frozenset({"reader"})),
    "read_readiness": (frozenset({"billing", "admin"}), frozenset({"reader", "integration"})),
    "record_export": (frozenset({"billing", "admin"}), frozenset()),
    "read_audit": (frozenset({"admin"}), frozenset()),
    "read_outcomes": (frozenset({"manager", "admin"}), frozenset()),
    "operate": (frozenset({"operator", "admin"}), frozenset()),
}

ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
KEY_PATTERN = re.compile(r"^rtm_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
SESSION_COOKIE = "rtm_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "key"]
    name: str  # username or key_id
    org_id: str
    roles: frozenset[str]  # a user's role, or a key's scopes
    clinician_id: str | None = None  # a clinician user's own clinician id
    team_clinicians: frozenset[str] = frozenset()  # own id and care-team members' ids
    csrf_token: str | None = None  # sessions only

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def role_text(self) -> str:
        return ",".join(sorted(self.roles))

    def may(self, permission: Permission) -> bool:
        user_roles, key_scopes = PERMISSIONS[permission]
        allowed = user_roles if self.kind == "user" else key_scopes
        return bool(self.roles & allowed)

    def postable_types(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        if self.may("post_patient_data"):
            out |= PRODUCER_TYPES
        if self.may("post_integration"):
            out |= INTEGRATION_TYPES
        return out

    def scope(self) -> Scope:
        """What patient data this principal may read: a clinician sees the patients of
        their own and their care teams' episodes; everyone else their organisation."""
        if self.kind == "user" and self.roles == {"clinician"}:
            return Scope(self.org_id, self.team_clinicians or frozenset({self.clinician_id or ""}))
        return Scope(self.org_id, None)


@dataclass(frozen=True)
class Scope:
    org_id: str
    clinician_ids: frozenset[str] | None  # None: every patient of the organisation


# --- secrets ----------------------------------------------------------------------------------

_HASHER = PasswordHasher()  # argon2id, the library's current recommended parameters


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def new_key() -> tuple[str, str, bytes, bytes]:
    """A new machine key: (full key shown once, key_id, salt, hash to store)."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    return f"rtm_{key_id}_{secret}", key_id, salt, key_digest(salt, secret)


def key_digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    m = KEY_PATTERN.match(token)
    return (m.group(1), m.group(2)) if m else None


def key_matches(salt: bytes, stored: bytes, secret: str) -> bool:
    return hmac.compare_digest(key_digest(salt, secret), stored)


def new_session_token() -> tuple[str, bytes, str]:
    """(cookie value, its sha256 to store, CSRF token)."""
    token = secrets.token_urlsafe(32)
    return token, session_digest(token), secrets.token_urlsafe(24)


def session_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
