"""Kafka topics the pipeline uses, created idempotently."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError

from jobs import kafka_client
from jobs.config import Config

logger = logging.getLogger(__name__)


def wanted_topics(cfg: Config) -> dict[str, int]:
    return {cfg.kafka.topic_in: cfg.kafka.partitions_in,
            cfg.kafka.topic_alerts: cfg.kafka.partitions_alerts}


def create_topics(cfg: Config, topics: dict[str, int] | None = None, *,
                  configs: dict[str, dict[str, str]] | None = None) -> dict[str, int]:
    """Create each topic with its partition count; grow one that has fewer partitions.

    ``configs``: topic name -> topic configs for a topic this call creates (e.g. the bench's
    ``message.timestamp.type=LogAppendTime``). Returns the partition count of every topic
    afterwards. Running it twice changes nothing.
    """
    topics = topics or wanted_topics(cfg)
    from jobs.broker import check_access

    check_access(kafka_client.settings(cfg))
    admin = KafkaAdminClient(**kafka_client.settings(cfg).python_kwargs(KafkaAdminClient),
                             request_timeout_ms=30_000)
    try:
        for name, partitions in topics.items():
            try:
                admin.create_topics([NewTopic(name, partitions, replication_factor=1,
                                              topic_configs=(configs or {}).get(name, {}))])
                logger.info("created topic %s with %d partitions", name, partitions)
            except TopicAlreadyExistsError:
                have = partition_count(admin, name)
                if have < partitions:
                    admin.create_partitions({name: NewPartitions(total_count=partitions)})
                    logger.info("grew topic %s from %d to %d partitions", name, have, partitions)
                else:
                    logger.info("topic %s exists with %d partitions", name, have)
        return _await_metadata(admin, topics)
    finally:
        admin.close()


def _await_metadata(
    admin: KafkaAdminClient, topics: dict[str, int], timeout_s: float = 15.0
) -> dict[str, int]:
    """Wait until the broker's metadata shows every partition (creation is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = {name: partition_count(admin, name) for name in topics}
        if all(counts[n] >= want for n, want in topics.items()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def partition_count(admin: KafkaAdminClient, topic: str) -> int:
    (meta,) = admin.describe_topics([topic])
    return len(meta["partitions"])
