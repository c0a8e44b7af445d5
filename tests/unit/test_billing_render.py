"""What `rtm billing export` renders for a whole simulated cohort parses with a standard
X12 reader and validates as FHIR R4 Claims (the renderer tests use the small example)."""

from __future__ import annotations

import datetime as dt
import io

from billing.config import DEFAULT_CONFIG
from billing.export import render_export
from billing.rules import compute_claims
from billing.state import fold_events
from rtm.simulate import simulate
from schemas.events import validate_event

AS_OF = dt.datetime(2026, 12, 15, tzinfo=dt.UTC)


def _claims(include_open: bool = False):
    events = [
        e for e in (validate_event(o) for o in simulate(25, 90, seed=8)) if not isinstance(e, list)
    ]
    return compute_claims(fold_events(events).values(), AS_OF, include_open=include_open)


def test_cohort_x12_parses_with_pyx12() -> None:
    import pyx12.error_handler  # type: ignore[import-untyped]
    import pyx12.params  # type: ignore[import-untyped]
    import pyx12.x12context  # type: ignore[import-untyped]
    import pyx12.x12n_document  # type: ignore[import-untyped]

    lines = _claims()
    assert len(lines) > 50
    text = render_export(lines, "x12", AS_OF)
    assert pyx12.x12n_document.x12n_document(
        pyx12.params.params(), io.StringIO(text), io.StringIO(), None
    )
    reader = pyx12.x12context.X12ContextReader(
        pyx12.params.params(), pyx12.error_handler.err_handler(), io.StringIO(text)
    )
    sv1 = [
        (line.get_value("SV101") or "", line.get_value("DTP[472]03") or "")
        for node in reader.iter_segments("2300")
        for line in node.select("2400")
    ]
    want = [
        ("HC:" + ":".join((ln.cpt, *ln.modifiers)), ln.date_of_service.strftime("%Y%m%d"))
        for ln in lines
    ]
    assert sorted(sv1) == sorted(want)


def test_cohort_fhir_validates_as_r4_claims() -> None:
    import orjson
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.claim import Claim

    lines = _claims(include_open=True)
    bundle = Bundle.model_validate(orjson.loads(render_export(lines, "fhir", AS_OF)))
    claims = [Claim.model_validate(e.resource.model_dump()) for e in bundle.entry]
    assert len(claims) == len({(ln.patient_id, ln.date_of_service) for ln in lines})
    assert sum(len(c.item) for c in claims) == len(lines)


def test_csv_export_is_the_conventions_then_the_evaluate_csv() -> None:
    from billing.export import render_csv

    lines = _claims()
    assert render_export(lines, "csv", AS_OF) == DEFAULT_CONFIG.header_text() + render_csv(lines)
