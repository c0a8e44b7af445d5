"""Every metric name in one place; the registry is injected (tests pass a fresh one).

Labels carry event types, routes, kinds and outcomes only: never patient or clinician ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# submission to first contact of an intake: minutes to two weeks
FIRST_CONTACT_BUCKETS = tuple(
    float(m * 60)
    for m in (5, 15, 60, 4 * 60, 8 * 60, 24 * 60, 48 * 60, 72 * 60, 7 * 1440, 14 * 1440)
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# one garbage collection: a young one takes well under a millisecond, a full one over a
# large heap of patient states a tenth of a second
GC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "rtm_gateway_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.events_accepted = Counter(
            "rtm_gateway_events_accepted_total",
            "Valid events produced to Kafka",
            ["type"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "rtm_gateway_events_rejected_total",
            "Invalid events sent to the dead-letter topic",
            ["type"],
            registry=registry,
        )
        self.events_duplicate = Counter(
            "rtm_gateway_events_duplicate_total",
            "Events acknowledged as already stored",
            registry=registry,
        )
        self.produce_failures = Counter(
            "rtm_gateway_produce_failures_total",
            "Requests answered 503 because Kafka did not ack their events in time",
            registry=registry,
        )
        self.produce_latency = Histogram(
            "rtm_gateway_produce_seconds",
            "Time to produce one request's events (acks=all)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class RefreshMetrics:
    """The refresh off the ingest path (``streams.services.refresh``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refreshed = Counter(
            "rtm_worker_refreshed_patients_total",
            "Patients whose claim-line readiness and outcome rows the refresh rewrote",
            registry=registry,
        )
        self.pending = Gauge(
            "rtm_worker_refresh_pending",
            "Patients marked by batches and not yet refreshed (every worker's)",
            registry=registry,
        )


class StateCacheMetrics:
    """The worker's cache of decoded rule states (``RTM_WORKER_STATE_CACHE``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.patients = Gauge(
            "rtm_worker_state_cache_patients",
            "Patients whose decoded rule state the worker keeps in memory",
            registry=registry,
        )
        self.dropped = Gauge(
            "rtm_worker_state_cache_dropped",
            "Decoded rule states dropped at RTM_WORKER_STATE_CACHE since the worker started"
            " (each read from the table again at the patient's next batch)",
            registry=registry,
        )
        self.reads = Gauge(
            "rtm_worker_state_reads",
            "Rule states batches read and decoded from the table since the worker started"
            " (the cache did not hold them at their stored revision)",
            registry=registry,
        )


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_processed = Counter(
            "rtm_worker_events_processed_total",
            "Events taken from rtm.events",
            ["type"],
            registry=registry,
        )
        self.events_stored = Counter(
            "rtm_worker_events_stored_total",
            "Events newly stored in TimescaleDB",
            registry=registry,
        )
        self.duplicates = Counter(
            "rtm_worker_duplicates_ignored_total",
            "Re-delivered or re-sent events ignored",
            registry=registry,
        )
        self.dead_letters = Counter(
            "rtm_worker_dead_letters_total",
            "Events the worker refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.ingest_halted = Gauge(
            "rtm_worker_ingest_halted",
            "1 when the worker stopped consuming rtm.events at the dead-letter limit",
            registry=registry,
        )
        self.batch_size = Histogram(
            "rtm_worker_db_batch_size",
            "Events per database batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000),
            registry=registry,
        )
        self.write_latency = Histogram(
            "rtm_worker_db_write_seconds",
            "Database batch write latency",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.e2e_persisted = Histogram(
            "rtm_worker_accept_to_persisted_seconds",
            "Gateway accept to persisted",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.e2e_alert = Histogram(
            "rtm_worker_accept_to_alert_seconds",
            "Gateway accept to alert published",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "rtm_worker_consumer_lag",
            "Messages behind the log end, per partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.refresh = RefreshMetrics(registry)
        self.state_cache = StateCacheMetrics(registry)
        self.alerts_fired = Counter(
            "rtm_worker_alerts_fired_total",
            "Alerts fired",
            ["kind", "severity"],
            registry=registry,
        )
        self.alerts_unrouted = Counter(
            "rtm_worker_alerts_unrouted_total",
            "Red flags / falls that belonged to no episode after the grace period, sent to the"
            " clinic-wide recipient",
            ["kind"],
            registry=registry,
        )
        self.webhook_backlog = Gauge(
            "rtm_worker_webhook_backlog",
            "Alert changes routed to a webhook and not delivered yet, by severity",
            ["severity"],
            registry=registry,
        )
        self.webhook_oldest_undelivered = Gauge(
            "rtm_worker_webhook_oldest_undelivered_seconds",
            "Age of the oldest undelivered alert change, by severity (0: none)",
            ["severity"],
            registry=registry,
        )
        self.task_failures = Counter(
            "rtm_worker_task_failures_total",
            "Exceptions in the worker's timers and background tasks (logged and retried)",
            ["task"],
            registry=registry,
        )
        self.restarts = Counter(
            "rtm_worker_restarts_total",
            "Times the process restarter started this worker again after it exited",
            registry=registry,
        )
        self.clock_last_tick = Gauge(
            "rtm_worker_clock_last_tick_timestamp_seconds",
            "When this worker last sent the time-driven rules their tick (leader only)",
            registry=registry,
        )
        self.deliveries = Counter(
            "rtm_worker_webhook_deliveries_total",
            "Webhook delivery attempts by outcome",
            ["outcome"],
            registry=registry,
        )
        self.billing_days = Counter(
            "rtm_worker_billing_data_dates_total",
            "New (episode, date) data days",
            registry=registry,
        )
        self.intake_first_contact, self.intake_breaches = _intake_metrics(registry)
        self.gc_pause, self.gc_collected = _gc_metrics(registry)


def _gc_metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
    pause = Histogram(
        "rtm_worker_gc_pause_seconds",
        "The worker's cyclic garbage collections, by generation (2: full), and how long"
        " each stopped the process",
        ["generation"],
        buckets=GC_BUCKETS,
        registry=registry,
    )
    collected = Counter(
        "rtm_worker_gc_collected_objects",
        "Objects the worker's collections found unreachable (cyclic garbage), by generation",
        ["generation"],
        registry=registry,
    )
    return pause, collected


def _intake_metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
    """The front door's (issue 18 item 6): observed by the ingest step when an intake's
    first contact becomes known; labelled by route only (no patient or intake ids)."""
    first_contact = Histogram(
        "rtm_intake_first_contact_seconds",
        "Intake submission to first contact, by route (observed when the contact becomes"
        " known to the worker)",
        ["route"],
        buckets=FIRST_CONTACT_BUCKETS,
        registry=registry,
    )
    breaches = Counter(
        "rtm_intake_breaches_total",
        "Intakes first contacted after their due time, by route (counted with the"
        " first-contact observation; intakes still waiting past due fire intake_overdue)",
        ["route"],
        registry=registry,
    )
    return first_contact, breaches
