"""What the dashboard's browser tests share: a clinic provisioned straight in the database
(organisation, users with one password, a producer+integration key), a read of the
database, and signing in through the sign-in page (Playwright driving Debian's chromium)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import asyncpg
from playwright import sync_api as playwright_sync

from streams.access import hash_password, new_key
from streams.db import access as db
from streams.settings import Settings

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a long demo password"


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (a module fixture's browser)."""
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


async def provision(
    settings: Settings,
    org: str,
    name: str,
    users: Sequence[tuple[str, str, str | None]],
    label: str,
    timezone: str = "UTC",
) -> str:
    """Add organisation ``org`` (the clinic's ``timezone``) with ``users`` ((username,
    role, clinician_id)) sharing PASSWORD, and a producer+integration key; returns the key."""
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        await db.add_org(conn, org, name, timezone)
        pw = hash_password(PASSWORD)
        for username, role, clinician_id in users:
            await db.add_user(conn, org, username, role, pw, clinician_id)
        key, key_id, salt, digest = new_key()
        await db.add_key(conn, key_id, org, ["producer", "integration"], label, salt, digest)
        return key
    finally:
        await conn.close()


async def fetch(settings: Settings, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(settings.db.dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def sign_in(browser: Any, base_url: str, username: str, timeout_ms: int = 20_000) -> Any:
    """A new browser context signed in through the sign-in page; its page."""
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    page.goto("/ui/sign-in")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert not page.url.endswith("/ui/sign-in"), page.inner_text("main")[:300]
    return page
