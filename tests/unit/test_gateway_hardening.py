"""Issue 16 (items 1, 2, 6): the gateway's request hardening, in process (fast).

The database is never reached here: every request below is answered before it (a fake
store that fails when acquired turns any slip into a 500, which the tests refuse). What
needs the real services is in tests/integration/test_hardening_requests.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry

from alerts.adherence import covered_days, daily_rows
from alerts.state import PatientState
from streams.access import Principal
from streams.http.app import create_app
from streams.http.auth import form_fields
from streams.http.deps import Deps
from streams.http.hardening import MAX_SPAN_DAYS, check_span, cross_site
from streams.http.pages.billing import month_range
from streams.http.pages.common import PageError
from streams.settings import Settings
from tests.unit.test_adherence import ex, fold, start
from tests.unit.test_gateway import FakeProducer

READER = Principal("key", "readerkey", "org-a", frozenset({"reader"}))
BILLING = Principal("user", "bill", "org-a", frozenset({"billing"}), csrf_token="csrf-1")
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


class NoDatabase:
    """The store: pings, but a request that reaches the database is a failure here."""

    async def known_event_ids(self, ids: list[str]) -> set[str]:
        return set()

    async def ping(self) -> bool:
        return True

    def acquire(self) -> Any:
        raise AssertionError("the database was reached")


def build(
    tmp_path: Path, who: Principal | None = None, **settings: Any
) -> tuple[FastAPI, CollectorRegistry]:
    async def authenticate(request: Any) -> Principal | None:
        return who

    registry = CollectorRegistry()
    app = create_app(
        Settings(state_dir=tmp_path, **settings),
        Deps(
            producer=FakeProducer(),
            store=NoDatabase(),  # type: ignore[arg-type]
            registry=registry,
            authenticate=authenticate,
        ),
    )
    return app, registry


def client(app: FastAPI, base_url: str = "http://gateway") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


def requests_total(registry: CollectorRegistry, route: str, status: str) -> float:
    value = registry.get_sample_value(
        "rtm_gateway_requests_total", {"route": route, "status": status}
    )
    return value or 0.0


# --- one 500, counted ----------------------------------------------------------------------


async def test_an_unhandled_error_is_a_clean_counted_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, registry = build(tmp_path)

    patient = "-".join(("p", "secret", "42"))  # in the message, not in the source line

    @app.get("/test-only/boom")
    async def boom() -> None:
        raise RuntimeError(f"patient {patient} broke it")

    before = requests_total(registry, "/test-only/boom", "500")
    with caplog.at_level(logging.ERROR, logger="rtm.gateway"):
        async with client(app) as c:
            resp = await c.get("/test-only/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": "internal error"}
    assert "p-secret" not in resp.text and "Traceback" not in resp.text
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value
    assert requests_total(registry, "/test-only/boom", "500") == before + 1
    # logged for the operator: the type and the route, never the message (patient data)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "/test-only/boom" in logged
    assert "p-secret" not in logged


async def test_an_unhandled_error_under_ui_is_a_page_with_the_navigation(tmp_path: Path) -> None:
    """Under /ui the one 500 is an HTML page (the signed-in user's navigation, no
    message or traceback), counted like the API's; the API's stays JSON."""
    who = Principal(kind="user", name="c1", org_id="o1", roles=frozenset({"clinician"}))
    app, registry = build(tmp_path, who)
    patient = "-".join(("p", "secret", "42"))

    @app.get("/ui/test-only/boom")
    async def boom() -> None:
        raise RuntimeError(f"patient {patient} broke it")

    async with client(app) as c:
        resp = await c.get("/ui/test-only/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("text/html")
    assert "Something went wrong" in resp.text and 'nav aria-label="Main"' in resp.text
    assert "p-secret" not in resp.text and "Traceback" not in resp.text
    assert requests_total(registry, "/ui/test-only/boom", "500") == 1


async def test_answered_requests_are_still_counted_by_route_and_status(tmp_path: Path) -> None:
    app, registry = build(tmp_path)
    async with client(app) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/v1/me")).status_code == 401
    assert requests_total(registry, "/healthz", "200") == 1
    assert requests_total(registry, "/v1/me", "401") == 1


# --- headers on every route -----------------------------------------------------------------


READS_NEEDING_THE_DATABASE = {
    ("get", "/v1/alerts"),
    ("get", "/v1/worklist"),
    ("get", "/v1/patients/{patient_id}/pain"),
    ("get", "/v1/patients/{patient_id}/billing"),
    ("get", "/v1/intakes"),
    ("get", "/fhir/PlanDefinition"),  # the organisation's published versions
    ("get", "/fhir/PlanDefinition/{plan_id}"),
}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if m.group(0).endswith("_id}") else "p-1", path)


@pytest.mark.parametrize("who", [None, READER], ids=["anonymous", "reader-key"])
async def test_every_route_answers_with_the_security_headers(
    tmp_path: Path, who: Principal | None
) -> None:
    """Every operation of the OpenAPI document (whatever it answers: 200, 303, 401, 403,
    404, 422) carries nosniff, no-referrer and no-store."""
    app, _ = build(tmp_path, who)
    paths = app.openapi()["paths"]
    seen = 0
    async with client(app) as c:
        for path, ops in paths.items():
            for method in ops:
                url = _concrete(path).replace("/v1/patients/1/", "/v1/patients/p-1/")
                if (method, path) == ("get", "/v1/patients/{patient_id}/adherence"):
                    url += "?to=9999-12-31"  # a 422, and no database
                if who is not None and (method, path) in READS_NEEDING_THE_DATABASE:
                    continue  # with the real database: the integration test
                resp = await c.request(method.upper(), url)
                assert resp.status_code != 500, (method, path, resp.text)
                for name, value in SECURITY_HEADERS.items():
                    assert resp.headers.get(name) == value, (method, path, resp.status_code)
                assert resp.headers.get("cache-control") == "no-store", (method, path)
                assert "strict-transport-security" not in resp.headers  # no TLS here
                seen += 1
    assert seen >= 10


async def test_static_assets_keep_their_caching_and_tls_adds_hsts(tmp_path: Path) -> None:
    app, _ = build(tmp_path, api_tls_certfile=tmp_path / "cert.pem")
    async with client(app, "https://gateway") as c:
        asset = await c.get("/ui/static/app.css")
        page = await c.get("/ui/sign-in")
    assert asset.status_code == 200 and asset.headers.get("cache-control") != "no-store"
    for resp in (asset, page):
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["strict-transport-security"].startswith("max-age=")
    assert page.headers["cache-control"] == "no-store"


# --- docs -------------------------------------------------------------------------------------


async def test_docs_ui_is_off_in_prod_and_never_loads_third_party_scripts(
    tmp_path: Path,
) -> None:
    prod, _ = build(tmp_path, env="prod")
    async with client(prod) as c:
        assert (await c.get("/docs")).status_code == 404
        assert (await c.get("/redoc")).status_code == 404
        assert (await c.get("/openapi.json")).status_code == 200
    dev, _ = build(tmp_path, env="dev")
    async with client(dev) as c:
        docs = await c.get("/docs")
        assert (await c.get("/redoc")).status_code == 404
        assert (await c.get("/ui/static/docs.js")).status_code == 200
    assert docs.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources)
    assert "script-src 'self'" in docs.headers["content-security-policy"]


# --- login CSRF -------------------------------------------------------------------------------


def _request(headers: dict[str, str]) -> Any:
    from starlette.requests import Request

    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "rtm.example", **headers}.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, True),
        ({"Sec-Fetch-Site": "cross-site", "Origin": "https://rtm.example"}, True),
        ({"Origin": "https://evil.example"}, True),
        ({"Origin": "null"}, True),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://rtm.example"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Sec-Fetch-Site": "none"}, False),  # a typed URL, a bookmark
        ({"Origin": "https://rtm.example"}, False),
        ({}, False),  # curl, the CLI, the tests: not a browser
    ],
)
def test_cross_site_reads_sec_fetch_site_then_origin(
    headers: dict[str, str], refused: bool
) -> None:
    assert cross_site(_request(headers)) is refused


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}],
    ids=["sec-fetch-site", "origin"],
)
async def test_a_cross_site_sign_in_is_refused_before_any_password_check(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    app, _ = build(tmp_path)
    async with client(app) as c:
        api = await c.post(
            "/v1/session", json={"username": "billing", "password": "pw"}, headers=headers
        )
        page = await c.post(
            "/ui/sign-in", data={"username": "billing", "password": "pw"}, headers=headers
        )
    assert api.status_code == 403 and "cross-site" in api.text
    assert page.status_code == 403 and "set-cookie" not in page.headers


# --- bounded, NUL-free inputs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "loc"),
    [
        ("GET", "/v1/patients/p-1/adherence?to=9999-12-31", {}, 422, ["query", "to"]),
        ("GET", "/v1/patients/p-1/adherence?from=1900-01-01", {}, 422, ["query", "from"]),
        (
            "GET",
            "/v1/patients/p-1/adherence?from=2026-01-01&to=2027-06-01",
            {},
            422,
            ["query", "to"],
        ),
        ("GET", "/v1/patients/p-1/pain?to=2101-01-01", {}, 422, ["query", "to"]),
        ("GET", "/v1/patients/p%001/adherence", {}, 422, ["path"]),
        ("GET", "/v1/patients/bad%20id/pain", {}, 422, ["path", "patient_id"]),
        ("GET", "/v1/alerts?patient_id=p%00", {}, 422, ["query", "patient_id"]),
        ("GET", "/v1/alerts?clinician_id=c%00", {}, 422, ["query", "clinician_id"]),
        ("GET", "/v1/alerts?before=9999-01-01T00:00:00Z|x", {}, 422, ["query", "before"]),
        (
            "GET",
            "/v1/billing/claims?from=2026-01-01&to=2026-01-31&as_of=9999-12-31T23:59:59Z",
            {},
            422,
            ["query", "as_of"],
        ),
        (
            "GET",
            "/v1/billing/claims?from=2026-01-01&to=2026-01-31&record=true",
            {},
            422,
            ["query", "record"],
        ),
        (
            "GET",
            "/v1/billing/claims?from=2000-01-01&to=2026-01-31",
            {},
            422,
            ["query", "to"],
        ),
        (
            "GET",
            "/v1/patients/p-1/billing?as_of=9999-12-31T23:59:59Z",
            {},
            422,
            ["query", "as_of"],
        ),
        ("GET", "/fhir/Observation?patient=p-1&date=gt9999-12-31", {}, 422, None),
        ("GET", "/fhir/Observation?patient=p-1&date=ge1999-12-31", {}, 422, None),
        (
            "GET",
            "/fhir/Observation?patient=p-1&date=ge2026-01-01&date=le2027-06-01",
            {},
            422,
            None,
        ),
        ("GET", "/fhir/Observation?patient=p%00", {}, 422, ["query", "patient"]),
    ],
)
async def test_out_of_bounds_inputs_are_refused_before_the_database(
    tmp_path: Path,
    method: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
    loc: list[str] | None,
) -> None:
    app, _ = build(tmp_path, READER)
    async with client(app) as c:
        resp = await c.request(method, url, **kwargs)
    assert resp.status_code == status, resp.text
    if loc is not None:
        assert any(d["loc"][: len(loc)] == loc for d in resp.json()["detail"]), resp.text


@pytest.mark.parametrize(
    "url",
    ["/v1/billing/submissions/9223372036854775808/file", "/ui/billing/exports/9223372036854775808"],
)
async def test_integer_ids_beyond_int64_are_refused(tmp_path: Path, url: str) -> None:
    app, _ = build(tmp_path, BILLING)
    async with client(app) as c:
        resp = await c.get(url)
    assert resp.status_code == 422, resp.text


async def test_the_json_sign_in_refuses_nul_in_username_and_password(tmp_path: Path) -> None:
    app, _ = build(tmp_path)
    async with client(app) as c:
        for body in (
            {"username": "bil\x00ling", "password": "pw"},
            {"username": "b", "password": "p\x00"},
        ):
            resp = await c.post("/v1/session", json=body)
            assert resp.status_code == 422, resp.text


async def test_billing_submit_form_refuses_a_bad_month_before_anything_is_read(
    tmp_path: Path,
) -> None:
    app, _ = build(tmp_path, BILLING)
    async with client(app) as c:
        for month in ("2026-01\r\nX-Injected: 1", "2026-1", "9999-12", "２０２６-01", ""):
            resp = await c.post(
                "/ui/billing/submit", data={"month": month, "confirm": "x", "csrf_token": "csrf-1"}
            )
            assert resp.status_code == 422, (month, resp.text)
            assert "location" not in resp.headers
        fields = {f"f{i}": "x" for i in range(200)} | {"csrf_token": "csrf-1"}
        too_many = await c.post("/ui/billing/submit", data=fields)
        assert too_many.status_code == 413
        nul = await c.post(
            "/ui/billing/submit", data={"month": "2026-01\x00", "csrf_token": "csrf-1"}
        )
        assert nul.status_code == 422
        for month in ("2026-01\n", "2026-13"):
            resp = await c.get("/ui/billing/preview", params={"month": month, "format": "csv"})
            assert resp.status_code == 422, (month, resp.text)
            assert "content-disposition" not in resp.headers


async def test_a_submit_without_its_confirmation_reads_and_records_nothing(
    tmp_path: Path,
) -> None:
    """The form without the fingerprint of a reviewed plan goes to the confirmation step
    (the database is never reached: NoDatabase fails when acquired)."""
    app, _ = build(tmp_path, BILLING)
    async with client(app) as c:
        resp = await c.post("/ui/billing/submit", data={"month": "2026-10", "csrf_token": "csrf-1"})
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/ui/billing/submit?month=2026-10"


@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        ("/ui/billing?bogus=1", 422, "bogus"),
        ("/ui/billing?month=2026-13x", 422, "month"),
        ("/ui/billing/exports/9223372036854775808", 422, "export_id"),
        ("/ui/billing/preview?month=2026-10&format=pdf", 422, "format"),
        ("/ui/no-such-page", 404, "no page at this address"),
        ("/ui/audit", 403, "may not see this page"),
    ],
)
async def test_page_errors_are_html_pages_with_the_navigation(
    tmp_path: Path, url: str, status: int, says: str
) -> None:
    app, _ = build(tmp_path, BILLING)
    async with client(app) as c:
        resp = await c.get(url)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert says.lower() in resp.text.lower()
    assert '<nav aria-label="Main">' in resp.text and 'href="/ui/billing"' in resp.text
    assert "Sign out" in resp.text  # the signed-in user's header


async def test_the_json_api_keeps_json_errors(tmp_path: Path) -> None:
    app, _ = build(tmp_path, READER)
    async with client(app) as c:
        unknown = await c.get("/v1/billing/claims?from=2026-01-01&to=2026-01-31&bogus=1")
        missing = await c.get("/v1/no-such-route")
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "bogus"]
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


async def test_a_page_error_for_someone_not_signed_in_has_no_navigation(tmp_path: Path) -> None:
    app, _ = build(tmp_path)
    async with client(app) as c:
        resp = await c.get("/ui/no-such-page")
        page = await c.get("/ui/billing?bogus=1")
    assert resp.status_code == 404 and "<nav" not in resp.text
    assert page.status_code == 422 and "<nav" not in page.text


def test_month_range_rebuilds_the_month_from_the_parsed_date() -> None:
    assert month_range("2026-02", dt.date(2030, 1, 1)) == (
        "2026-02",
        dt.date(2026, 2, 1),
        dt.date(2026, 2, 28),
    )
    assert month_range(None, dt.date(2030, 5, 7))[0] == "2030-05"
    for bad in ("2026-02\r\n", "2026-13", "1999-12", "2026-02-01", "x"):
        with pytest.raises(PageError) as err:
            month_range(bad, dt.date(2030, 1, 1))
        assert err.value.status == 422


def test_form_fields_limits_the_number_of_fields_and_refuses_nul() -> None:
    assert form_fields(b"a=1&b=2") == {"a": "1", "b": "2"}
    with pytest.raises(HTTPException) as err:
        form_fields(b"&".join(b"f%d=x" % i for i in range(200)))
    assert err.value.status_code == 413
    with pytest.raises(HTTPException) as err:
        form_fields(b"note=a%00b")
    assert err.value.status_code == 422


def test_check_span_names_to_beyond_the_limit() -> None:
    day = dt.date(2026, 1, 1)
    check_span(day, day + dt.timedelta(days=MAX_SPAN_DAYS))
    check_span(None, day)
    with pytest.raises(HTTPException) as err:
        check_span(day, day + dt.timedelta(days=MAX_SPAN_DAYS + 1))
    assert err.value.status_code == 422
    assert err.value.detail[0]["loc"] == ["query", "to"]


# --- folds compute only the requested window --------------------------------------------------


def _long_open_episode() -> PatientState:
    return fold(
        [
            start("2000-01-03T09:00:00-06:00", spw=5),
            ex("2000-01-04T10:00:00-06:00", "e1", "s1"),
            ex("2100-12-30T10:00:00-06:00", "e2", "s2"),
        ]
    )


def test_adherence_rows_are_computed_only_inside_the_window() -> None:
    state = _long_open_episode()
    first, until = dt.date(2100, 12, 1), dt.date(2100, 12, 31)
    window = daily_rows("p-1", state.completions, state.book, until, first=first, until=until)
    assert [r.date for r in window] == [
        first + dt.timedelta(days=i) for i in range((until - first).days + 1)
    ]
    assert [r.completed for r in window if r.completed] == [1]
    # the same numbers as the full computation, filtered (a slice of 101 years' rows)
    full = {r.date: r for r in daily_rows("p-1", state.completions, state.book, until)}
    assert window == [full[r.date] for r in window]
    assert covered_days(state.book, until, first, until)[0] == first


def test_the_window_never_walks_past_its_end_even_with_a_far_last_day() -> None:
    state = _long_open_episode()
    rows = daily_rows(
        "p-1",
        state.completions,
        state.book,
        dt.date.max,  # would overflow if walked to the end
        first=dt.date(2026, 1, 1),
        until=dt.date(2026, 1, 10),
    )
    assert len(rows) == 10


# --- CLI files --------------------------------------------------------------------------------


def test_private_files_are_0600_even_over_an_existing_readable_file(tmp_path: Path) -> None:
    from rtm.files import open_private, write_private

    old = os.umask(0)
    try:
        path = tmp_path / "claims.csv"
        path.write_text("old")
        path.chmod(0o644)
        write_private(path, "patient,line\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == "patient,line\n"
        fresh = tmp_path / "cohort.jsonl"
        with open_private(fresh) as f:
            f.write(b"{}\n")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_rtm_simulate_writes_its_cohort_and_demographics_0600(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rtm.cli import main

    out, demo = tmp_path / "cohort.jsonl", tmp_path / "demo.csv"
    res = CliRunner().invoke(
        main,
        [
            "simulate",
            "--patients",
            "2",
            "--days",
            "3",
            "--out",
            str(out),
            "--demographics-out",
            str(demo),
        ],
    )
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(demo.stat().st_mode) == 0o600


async def test_pages_have_a_favicon(tmp_path: Path) -> None:
    """Issue 17: no favicon (every page load asked for /favicon.ico and got a 404)."""
    app, _ = build(tmp_path)
    async with client(app) as c:
        page = await c.get("/ui/sign-in")
        icon = await c.get("/ui/static/favicon.svg")
    assert '<link rel="icon" href="/ui/static/favicon.svg"' in page.text
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")
