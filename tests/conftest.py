"""Shared test helpers: event builders with unique ids per test."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

# CI runs the same generated cases every time (derandomize): a property test there passes
# or fails by the code, not by the draw. Locally hypothesis explores new cases each run.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


class EventFactory:
    """Valid contract events for one test, ids prefixed so tests never collide."""

    def __init__(self) -> None:
        self.prefix = "t" + uuid.uuid4().hex[:10]
        self.n = 0

    def _next(self) -> str:
        self.n += 1
        return f"{self.prefix}-e{self.n}"

    def patient(self, i: int) -> str:
        return f"{self.prefix}-p{i}"

    def episode_started(
        self, patient: str, at: str = "2026-11-02T09:00:00-06:00", **over: Any
    ) -> dict[str, Any]:
        ev = {
            "event_id": self._next(),
            "schema_version": 1,
            "type": "episode.started",
            "patient_id": patient,
            "occurred_at": at,
            "episode_id": f"{patient}-ep1",
            "clinician_id": "c-01",
            "clinician_role": "PT",
            "timezone": "America/Chicago",
            "program": {"sessions_per_week": 5, "exercise_ids": ["bridge"]},
            "billing": {
                "rendering_npi": "1234567893",
                "billing_npi": "1234567893",
                "payer": "medicare",
                "member_id": "MBI1",
                "diagnosis_codes": ["M54.50"],
                "place_of_service": "11",
            },
            "setup_education_completed": True,
        }
        ev.update(over)
        return ev

    def pain(self, patient: str, score: int, at: str, **over: Any) -> dict[str, Any]:
        ev = {
            "event_id": self._next(),
            "schema_version": 1,
            "type": "pain.reported",
            "patient_id": patient,
            "occurred_at": at,
            "score": score,
        }
        ev.update(over)
        return ev

    def exercise(self, patient: str, at: str, **over: Any) -> dict[str, Any]:
        ev = {
            "event_id": self._next(),
            "schema_version": 1,
            "type": "exercise.completed",
            "patient_id": patient,
            "occurred_at": at,
            "exercise_id": "bridge",
        }
        ev.update(over)
        return ev

    def symptom(self, patient: str, at: str, **over: Any) -> dict[str, Any]:
        ev = {
            "event_id": self._next(),
            "schema_version": 1,
            "type": "symptom.reported",
            "patient_id": patient,
            "occurred_at": at,
        }
        ev.update(over)
        return ev

    def intake(self, patient: str, at: str, **over: Any) -> dict[str, Any]:
        """An ``intake.submitted`` (neck, no STarT Back; no red flags unless given)."""
        ev = {
            "event_id": self._next(),
            "schema_version": 1,
            "type": "intake.submitted",
            "patient_id": patient,
            "occurred_at": at,
            "intake_id": f"{patient}-in",
            "timezone": "America/Chicago",
            "body_region": "neck",
            "red_flags": [],
            "answers": {"nprs": 6},
        }
        ev.update(over)
        return ev

    def daily_exercises(self, patient: str, start: dt.date, days: int) -> list[dict[str, Any]]:
        return [
            self.exercise(patient, f"{start + dt.timedelta(days=d)}T18:00:00-06:00")
            for d in range(days)
        ]


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory()
