"""All SQL of the project, one module per table group (migrations in infra/migrations).

- ``events``: the connection pool (``EventStore``), migrations, the ``events`` table and the
  dead-letter refusal probe, and the reads of raw events (patient history, exports, demo).
- ``alerts``: alert rule states, alerts, the ``rtm.alerts`` outbox, webhooks and deliveries.
- ``billing``: the RTM ledger (data days, time logs, episode events) and recorded exports.

Callers (agents, the gateway's routes, the CLI) hold no SQL of their own.
"""
