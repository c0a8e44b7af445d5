"""Topic declaration: the gateway may start before any worker, so topics exist up front."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka.transport import kafka_client_kwargs
from streams.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    return [settings.kafka.topic_events, settings.kafka.topic_dead, settings.kafka.topic_alerts]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the project's topics with the configured partition count; returns new ones."""
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_names(settings) if t not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        t, num_partitions=settings.kafka.topic_partitions, replication_factor=1
                    )
                    for t in missing
                ]
            )
        return missing
    finally:
        await admin.close()
