"""The care pathway engine (issue 19; docs/pathways-and-outcomes.md), pure: pathway versions
as data (``model``), each episode's primary scores, tasks and decisions (``engine``), the
outcome rows and the report (``outcomes``) and the offline commands' drivers (``offline``).

Between ``streams`` and ``alerts`` in the layers: it reads adherence and the pauses from
``alerts`` and the instruments from ``outcomes``; no I/O, no clock (the as-of instant is
given)."""
