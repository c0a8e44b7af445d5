"""The road and the mirror (issue 19; docs/pathways-and-outcomes.md): outcome measures
(``instruments``: the registry as data, and scoring), later the pathway engine and the
outcome rows. Pure rules: imports ``schemas`` only, beside ``intake`` in the layers."""
