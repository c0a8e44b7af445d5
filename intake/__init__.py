"""Intake screening, triage and routing (issue 18; docs/intake-rules.md): the front door
of PT-first care. Pure rules, beside ``alerts`` in the layers: imports ``schemas`` only,
no broker, database or network, never the clock.

- ``intake.rules``: the rule set as versioned data (``IntakeRules``, ``DEFAULT_RULES`` =
  ``intake-v1``);
- ``intake.sbst``: Keele STarT Back scoring (ids and scoring only, never the item text);
- ``intake.routing``: the first routing rule that applies, with reason codes;
- ``intake.service``: ``due_at`` from the service level and the business calendar;
- ``intake.engine``: the reducer over events (state per intake) and ``result(state, as_of)``;
- ``intake.evaluate``: the offline driver (``rtm intake evaluate``).
"""
