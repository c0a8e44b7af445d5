"""The command line (`rtm`, console script ``rtm.cli:main``): module-level click groups,
one module per family of commands, that parse, call a service or a tool, and print.

- ``root``: the root group ``main`` (builds the Settings) and the families it adds;
- ``services``: up, down, status, db, api (the gateway), worker;
- ``events``: schema, simulate, produce, demo;
- ``alerts``: alerts (tick, webhook(s), evaluate), adherence;
- ``billing``: billing evaluate and readiness (offline), export, submit, reconcile, profiles…;
- ``access``: orgs, users, keys, teams, audit;
- ``fhir``, ``intake``, ``programs`` (home exercise program templates), ``rollups``; ``bench``:
  bench, chaos;
- ``options``: what they share (the Settings of a command, ``parse_instant``).
"""

from rtm.cli.root import main

__all__ = ["main"]
