"""`rtm bench`: floor vs pipeline throughput, latency under load, replay, history.

Runs on the local services (``rtm up``), in one process, in five phases (six with
``--pages``). Every phase gets its own topics, consumer group (Faust app id) and ports (the
integration tests' isolation idea), and every run namespaces its event/patient/episode ids,
so the bench never touches the demo's topics and a rerun is not a run of duplicates.

* floor     bare aiokafka producer -> bench topic -> bare aiokafka consumer -> COPY
            (asyncpg ``copy_records_to_table``) into a scratch hypertable; no validation,
            no rules. The most this Kafka + TimescaleDB can take on this machine from Python.
* pipeline  the same events through gateway + Kafka + worker (every agent) at full speed:
            first request sent -> last event persisted (worker's events_stored counter);
            the worker's CPU (``/proc/<pid>/stat``) and, with py-spy, where it goes; with
            ``--workers N`` N workers in one consumer group (replay too), each one's CPU per
            event it stored.
* latency   a steady ~2,000 events/s through the gateway with red-flag symptom reports mixed
            in: accept (gateway ``received_at``) -> persisted (events.stored_at), -> alert
            published (the alert record's Kafka timestamp on ``topic_alerts``) and -> webhook
            delivered (a local signed receiver, the organisation's webhook meanwhile).
* replay    a large cohort (default 2,000 patients x 90 days) written to a JSONL file and
            backfilled through the gateway with ``rtm produce``'s poster; then one tick
            (untimed) and the per-patient rule-state size (``alert_state``).
* history   two cohorts of the same size in one stack whose patients already have 365 resp.
            30 days of history (written to Kafka block by block and processed first, untimed,
            ticked after each block), then the next days of new events timed for each, in
            interleaved halves: does the per-event cost grow with a patient's history?
* pages     (``--pages``, off by default; ``--pages-only`` alone) the dashboard over a seeded
            clinic (default 5,000 patients x 90 days straight to Kafka): the worklist's
            first page and patient pages, p50/p95 over 50 requests (``pages``).

Nothing here asserts a speed; it measures and reports.

The modules: ``run`` (every phase in turn, the result), ``phases`` (floor, pipeline,
latency, history), ``pages``, ``harness`` (a phase's stack, the worker's counters, ticks,
py-spy), ``cohorts``, ``stats``, ``cpu`` (/proc and py-spy), ``report`` (the table);
`rtm chaos` in ``chaos`` (the runner), ``chaos_report`` (scenarios, figures, table) and
``receiver`` (the signed webhook receiver it shares with the latency phase and the
delivery tests). The command
line is ``rtm.cli.bench``.
"""
