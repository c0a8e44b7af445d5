"""Unit tests never depend on the caller's ``RTM_*`` environment: each one runs with those
variables removed (a developer's ``RTM_API_PORT`` or ``RTM_KAFKA_PORT`` must not change a
default a test asserts). Integration tests read the ports of the services they start from
the environment on purpose (tests/integration/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_rtm_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("RTM_")]:
        monkeypatch.delenv(name)
    yield
