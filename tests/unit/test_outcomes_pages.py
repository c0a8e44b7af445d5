"""The manager's pages and the patient page's pathway panel, pure parts (issue 19 item 5):

- the CSV export carries the same numbers as ``rtm outcomes report``'s objects (the
  NDJSON export), a null rate an empty cell;
- the patient panel is computed from that patient's events only and agrees with ``rtm
  pathways evaluate`` (tasks, decisions) and ``rtm outcomes episodes`` (baseline, change);
- the diff's rows as the page lists them name each changed decision and task."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pathways.engine import EpisodeView
from pathways.model import builtin
from pathways.offline import diff, episode_rows, evaluate_rows, views
from pathways.outcomes import OutcomeRow, outcome_row, report
from schemas.events import EVENT_ADAPTER
from streams.http.pages.outcomes import CSV_COLUMNS, diff_view, export_text
from streams.services.outcomes import REPORT_BY, Context, OutcomeReport, patient_panels
from tests.unit.pathway_events import as_of, generated_cohort

AS_OF = as_of(60)
COHORT = generated_cohort(seed=19, n=8)
EVENTS = [EVENT_ADAPTER.validate_python(e) for e in COHORT]
ORG = EVENTS[0].patient_key[0]


def rows(eps: list[EpisodeView]) -> list[OutcomeRow]:
    return [outcome_row(v) for v in eps]


def the_report() -> OutcomeReport:
    eps, missing = views(EVENTS, AS_OF, builtin())
    assert missing == []
    return OutcomeReport(AS_OF, {by: report(rows(eps), by) for by in REPORT_BY}, [])


def test_the_csv_export_has_the_ndjson_rows_numbers() -> None:
    r = the_report()
    rows = list(csv.DictReader(io.StringIO(export_text(r, "csv"))))
    objects = [json.loads(line) for line in export_text(r, "ndjson").splitlines()]
    assert len(rows) == len(objects) == sum(len(r.groups[by]) for by in REPORT_BY)
    assert list(rows[0]) == list(CSV_COLUMNS)
    for row, obj in zip(rows, objects, strict=True):
        assert (row["by"], row["group"]) == (obj["by"], obj["group"])
        assert int(row["episodes"]) == obj["episodes"]
        assert int(row["with_scores"]) == obj["with_scores"]
        rate = obj["mcid_rate"]
        assert row["mcid_rate"] == ("" if rate is None else str(rate))
        assert int(row["mcid_reached"]) == obj["mcid_reached_n"]
        assert [int(row["resolved_within_3_visits"]), int(row["ended_with_scores"])] == obj[
            "resolved_within_3_visits_n"
        ]
        for i in (1, 2, 3):
            t = obj["mcid_rate_by_adherence_tertile"][i - 1]
            assert row[f"tertile{i}_mcid_rate"] == ("" if t is None else str(t))
            n, d = obj["mcid_by_adherence_tertile_n"][i - 1]
            assert (int(row[f"tertile{i}_mcid_reached"]), int(row[f"tertile{i}_with_scores"])) == (
                n,
                d,
            )


def test_a_rate_without_a_denominator_is_an_empty_cell() -> None:
    lone = [e for e in COHORT if e["patient_id"] == "p0" and e["type"] == "episode.started"]
    eps, _ = views([EVENT_ADAPTER.validate_python(e) for e in lone], AS_OF, builtin())
    r = OutcomeReport(AS_OF, {by: report(rows(eps), by) for by in REPORT_BY}, [])
    (row,) = [x for x in csv.DictReader(io.StringIO(export_text(r, "csv"))) if x["by"] == "pathway"]
    assert (row["with_scores"], row["mcid_rate"], row["median_days_to_discharge"]) == ("0", "", "")


def payloads(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e | {"org_id": ORG}) for e in events]


def test_the_patient_panel_is_that_patients_and_agrees_with_the_offline_commands() -> None:
    ctx = Context(builtin(), frozenset(), AS_OF)
    # every patient's events in the input: the panel takes only p3's
    panels, missing = patient_panels(ORG, "p3", payloads(COHORT), ctx)
    assert missing == []
    (panel,) = panels
    mine = [e for e in EVENTS if e.patient_id == "p3"]
    eps, _ = views(mine, AS_OF, builtin())
    (evaluated,) = evaluate_rows(eps)
    (outcome,) = episode_rows(eps)
    assert panel["episode_id"] == evaluated["episode_id"] == "e3"
    assert panel["tasks"] == evaluated["tasks"] and panel["decisions"] == evaluated["decisions"]
    assert panel["open_tasks"] == [t for t in panel["tasks"] if t["status"] in ("open", "overdue")]
    assert (panel["baseline"], panel["change"]) == (outcome["baseline"], outcome["change"])
    # the baseline plus the MCID (PSFS: higher is better, MCID 2) is the band's far edge
    assert panel["target"] == panel["baseline"] + 2
    forms = [e for e in COHORT if e["patient_id"] == "p3" and e["type"] == "assessment.completed"]
    assert [s["date"] for s in panel["scores"]] == sorted(e["occurred_at"][:10] for e in forms)
    assert panel["scores"][0]["timepoint"] == "baseline" and panel["scores"][0]["change"] == 0


def test_the_patient_panel_names_the_stage() -> None:
    ctx = Context(builtin(), frozenset(), AS_OF)
    stages = {}
    for i in range(8):
        (panel,) = patient_panels(ORG, f"p{i}", payloads(COHORT), ctx)[0]
        stages[i] = panel["stage"]
        decisions = [d["decision"] for d in panel["decisions"]]
        if "end" in decisions:
            assert stages[i].startswith("ended: ")
        elif decisions and decisions[-1] == "step_up":
            assert stages[i].startswith("stepped up on ")
    assert any(s.startswith("ended") for s in stages.values())


def test_the_diff_as_listed_names_each_changed_decision_and_task() -> None:
    v1 = builtin()["msk-default@1"]
    v2 = v1.model_copy(
        update={"version": 2, "step_up": v1.step_up.model_copy(update={"pain_at_least": 6})}
    )
    rows = diff(EVENTS, AS_OF, v1, v2)
    view = diff_view(rows)
    assert view["summary"]["episodes"] == 8 and view["episodes"]  # the cohort has pains of 6
    assert [e["episode_id"] for e in view["episodes"]] == [r["episode_id"] for r in rows[:-1]]
    for shown, row in zip(view["episodes"], rows[:-1], strict=True):
        n = sum(len(row["only_to"][p]) for p in ("tasks", "decisions"))
        assert len(shown["only_to"]) == n
        assert all(
            f"step up on {d['on']}" in " ".join(shown["only_to"])
            for d in row["only_to"]["decisions"]
        )
