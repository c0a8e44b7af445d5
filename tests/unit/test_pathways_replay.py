"""The pathway commands over a generated cohort (issue 19, Done when):

- a property test: ``rtm pathways evaluate``, ``rtm outcomes episodes`` and ``rtm outcomes
  report`` print the same lines for any arrival order and any duplication of the same events;
- ``rtm pathways diff`` with the planted change (step-up at pain >= 6 instead of 7) lists
  exactly the episodes whose decisions change, the expected set worked out here from the raw
  pain and form events, not by the engine."""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.adherence import adherence_series, prescribed_on
from pathways.engine import PatientFacts
from pathways.model import builtin
from pathways.offline import collect, episode_rows, evaluate_rows, render, report_rows, views
from pathways.outcomes import GROUP_BY
from rtm.cli import main
from schemas.events import EVENT_ADAPTER
from tests.unit.pathway_events import DAY0, as_of, generated_cohort

AS_OF = as_of(60)
COHORT = generated_cohort(seed=19, n=8)
EVENTS = [EVENT_ADAPTER.validate_python(e) for e in COHORT]


def outputs(events: list[Any]) -> list[str]:
    """Every line the three commands print (the report by each grouping)."""
    eps, missing = views(events, AS_OF, builtin())
    assert missing == []
    rows = evaluate_rows(eps) + episode_rows(eps)
    for by in GROUP_BY:
        rows += report_rows(eps, by)
    return [render(r) for r in rows]


EXPECTED = outputs(EVENTS)


def test_the_cohort_exercises_the_rules() -> None:
    """The generated cohort has step-ups, pauses, discharge-ready decisions and ends (else
    the property below would prove little)."""
    kinds = {d["decision"] for line in EXPECTED[:8] for d in json.loads(line)["decisions"]}
    assert {"step_up", "pause", "discharge_ready", "end"} <= kinds


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(EVENTS), again=st.lists(st.sampled_from(EVENTS), max_size=20))
def test_any_arrival_order_and_duplication_gives_the_same_output(
    order: list[Any], again: list[Any]
) -> None:
    assert outputs(order + again) == EXPECTED
    assert outputs(again + order) == EXPECTED


# --- the planted change ------------------------------------------------------------------------


def day_of(obj: dict[str, Any]) -> int:
    return (dt.datetime.fromisoformat(obj["occurred_at"]).date() - DAY0).days


def step_up_on(events: list[dict[str, Any]], episode: str, at_least: int) -> int | None:
    """The step-up day worked from the raw events: a baseline form on day 1, the week-4
    form on day 26 below the MCID (PSFS mean up by less than 2), and the first pain >= the
    threshold on days 21-28: on the later of day 26 and that pain's day."""
    forms = {
        day_of(e): e["answers"]["a1"]
        for e in events
        if e["type"] == "assessment.completed" and e["event_id"].startswith(f"{episode}-")
    }
    if forms[26] - forms[1] >= 2:
        return None
    pains = sorted(
        (e["occurred_at"], e["event_id"], day_of(e))
        for e in events
        if e["type"] == "pain.reported"
        and e["event_id"].startswith(f"{episode}-")
        and e["score"] >= at_least
        and 21 <= day_of(e) <= 28
    )
    return None if not pains else max(26, pains[0][2])


def test_diff_lists_exactly_the_episodes_a_step_up_at_pain_6_changes(tmp_path: Path) -> None:
    events = generated_cohort(seed=7, n=60)
    episodes = sorted({e["episode_id"] for e in events if e["type"] == "episode.started"})
    expected = [ep for ep in episodes if step_up_on(events, ep, 6) != step_up_on(events, ep, 7)]
    assert 3 <= len(expected) < len(episodes)  # the cohort plants some changes, not all
    f = tmp_path / "cohort.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in events))
    v2 = builtin()["msk-default@1"].model_dump(mode="json")
    v2["version"] = 2
    v2["step_up"]["pain_at_least"] = 6
    v2["discharge_ready"]["adherence_at_least"] = 0.5
    draft = tmp_path / "v2.json"
    draft.write_text(json.dumps(v2))
    res = CliRunner().invoke(
        main,
        [
            "pathways",
            "diff",
            "--events",
            str(f),
            "--as-of",
            AS_OF.isoformat(),
            "--from",
            "msk-default@1",
            "--to",
            str(draft),
        ],
    )
    assert res.exit_code == 0, res.stderr
    *changed, counts = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(c["episode_id"] for c in changed) == expected
    for c in changed:
        assert (c["from"], c["to"]) == ("msk-default@1", "msk-default@2")
        new = [d for d in c["only_to"]["decisions"] if d["decision"] == "step_up"]
        old = [d for d in c["only_from"]["decisions"] if d["decision"] == "step_up"]
        assert [d["reason"] for d in new] == ["no_mcid_pain_6"]
        assert all(d["reason"] == "no_mcid_pain_7" for d in old)
        want = step_up_on(events, c["episode_id"], 6)
        assert new[0]["on"] == (DAY0 + dt.timedelta(days=want or 0)).isoformat()
    step_ups = counts["decisions"]["step_up"]
    assert step_ups["from"] == sum(1 for ep in episodes if step_up_on(events, ep, 7) is not None)
    assert step_ups["to"] == sum(1 for ep in episodes if step_up_on(events, ep, 6) is not None)
    assert (counts["episodes"], counts["changed"]) == (len(episodes), len(expected))


def test_the_sliding_adherence_series_equals_each_day_s_own_window() -> None:
    """alerts.adherence.adherence_series (the outcome rows' adherence) gives, for every day,
    min(1, sessions / prescription) summed over that day's own 7-day window, pauses included."""
    states = collect(EVENTS)
    checked = 0
    for state in states.values():
        facts = PatientFacts.of(state.events.values())
        for ep in facts.book.episodes.values():
            first, last = (
                ep.start_date - dt.timedelta(days=3),
                ep.start_date + dt.timedelta(days=60),
            )
            series = adherence_series(facts.counts, facts.book, first, last)
            for day, value in series.items():
                window = [day - dt.timedelta(days=k) for k in range(7)]
                prescribed = sum((prescribed_on(facts.book, d) for d in window), Fraction(0))
                done = sum(facts.counts.get(d, 0) for d in window)
                assert value == (None if prescribed == 0 else min(Fraction(1), done / prescribed))
                checked += 1
    assert checked == 64 * len(states)


def test_the_commands_print_the_same_for_a_shuffled_file_with_resent_lines(tmp_path: Path) -> None:
    """The same through the command line: a file in another order, with lines sent twice."""
    shuffled = list(reversed(COHORT)) + COHORT[::3]
    printed = []
    for name, objs in (("in-order", COHORT), ("shuffled", shuffled)):
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps(e) + "\n" for e in objs))
        out = []
        for command in (
            ["pathways", "evaluate"],
            ["outcomes", "episodes"],
            ["outcomes", "report", "--by", "clinician"],
        ):
            res = CliRunner().invoke(
                main, [*command, "--events", str(f), "--as-of", AS_OF.isoformat()]
            )
            assert res.exit_code == 0, res.stderr
            out.append(res.stdout)
        printed.append(out)
    assert printed[0] == printed[1]
    assert printed[0][0].count("\n") == 8  # one line per episode
