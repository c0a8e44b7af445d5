"""All SQL of the project, one module per table group (migrations in infra/migrations).

- ``pool``: the connection pool and the migrations runner.
- ``events``: the ``events`` table and its idempotency ledger ``event_ids`` (``EventStore``:
  the pool with the gateway's event writes), the dead-letter refusal probe, and the reads of
  raw events (patient history, exports, demo).
- ``alert_states``: the alert rules' per-patient states (``StateStore``).
- ``alerts``: alerts (snapshots, acknowledgement notes) and the ``rtm.alerts`` outbox.
- ``deliveries``: webhooks and the webhook delivery queue.
- ``rollups``: the worklist's per-patient rollups and daily adherence.
- ``batch``: one ingest batch: its reads and ``write_batch`` (every table above, in order,
  in one transaction); ``memory``: the same store in memory (tests).
- ``access``, ``signin``, ``roles``: organisations, users, sessions, keys, scope, audit;
  sign-in throttling; the database roles.
- ``billing``: the RTM ledger (data days, time logs, episode events) and recorded exports.

Callers (agents, the gateway's routes, the CLI, the services) hold no SQL of their own.
"""
