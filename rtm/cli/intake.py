"""`rtm intake`: the intake rules offline (issue 18; docs/intake-rules.md).

``rtm intake evaluate --events FILE.jsonl --as-of TS [--rules RULES.json]`` prints one JSON
object per intake (``intake.evaluate``, the same engine the worker will run). Invalid lines
are reported on stderr (line number and the field-naming messages) and skipped; exit code 0
if every line was valid, 1 if some were skipped (the output is still complete for the valid
ones), 2 for a bad argument. The rule set's version goes to stderr, so stdout stays the
documented format.

The organisation's stored rule set (``rtm intake rules show --org O`` / ``rules set --org O
--file F``) needs the database and comes with the worker part.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError

from intake.evaluate import evaluate, render
from intake.rules import DEFAULT_RULES, load_rules
from rtm.cli.options import parse_instant


@click.group()
def intake() -> None:
    """Intake screening, triage and routing (the front door)."""


@intake.command("evaluate")
@click.option(
    "--events", "events_path", type=click.Path(exists=True, path_type=Path), required=True
)
@click.option(
    "--as-of",
    "as_of",
    required=True,
    help="'now' for intakes without a contact, e.g. 2026-11-05T00:00:00Z",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="a rule set as JSON (default: intake-v1)",
)
def intake_evaluate(events_path: Path, as_of: str, rules_path: Path | None) -> None:
    """Print one JSON object per intake of a JSONL file: route, reasons, STarT Back,
    due time, first contact, breached (sorted by intake_id, then patient_id)."""
    when = parse_instant(as_of)
    rules = DEFAULT_RULES
    if rules_path is not None:
        try:
            rules = load_rules(rules_path.read_bytes())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'rules'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise click.BadParameter(problems, param_hint="'--rules'") from None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--rules'") from None
    with events_path.open("rb") as fh:
        results, errors = evaluate(fh, when, rules)
    for err in errors:
        click.echo(f"{events_path}:{err.line_no}: skipped: {err.message}", err=True)
    click.echo(f"rules: {rules.version}", err=True)
    for r in results:
        sys.stdout.write(render(r) + "\n")
    sys.exit(1 if errors else 0)


COMMANDS: tuple[click.Command, ...] = (intake,)
