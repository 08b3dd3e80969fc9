"""`textstream worker`: run one worker of the consumer group TEXTSTREAM_APP_ID."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from commands import clients
from worker import config, limits, logs

logger = logging.getLogger(__name__)


def settings_epilog() -> str:
    rows = config.describe()
    width = max(len(name) for name, _, _ in rows)
    lines = [f"  {name:<{width}}  {desc} (default: {default})" for name, default, desc in rows]
    return "environment variables:\n" + "\n".join(lines)


def version_labels(folder: Path) -> list[str]:
    """The labels in a version's manifest, read without TensorFlow; [] when the manifest is unusable
    (loading the version then says what is wrong with it)."""
    from worker import registry
    from worker.errors import TextstreamError

    try:
        labels = registry.read_manifest(folder).get("labels")
    except (TextstreamError, OSError):
        return []
    return [x for x in labels if isinstance(x, str) and x] if isinstance(labels, list) else []


def cmd_worker(args: argparse.Namespace) -> int:
    settings = clients.kafka_settings(args)
    logs.setup(settings.log_level, settings.log_format)
    from worker import registry, security, topics

    version = registry.serving_version(settings.model_dir)  # fails fast on an empty registry
    access = security.from_settings(settings)  # fails fast on unreadable certificates
    labels = version_labels(settings.model_dir / str(version))
    topics.check_label_topics(settings, labels, f"version {version}")
    # Also the start-up check of the broker, the credentials and TLS: wrong ones stop here with a
    # message instead of Faust retrying for ever. So does a topic the broker refuses to create or,
    # with TEXTSTREAM_CREATE_TOPICS=false, any missing topic (all of them named).
    created = asyncio.run(topics.prepare_worker_topics(settings, access, labels))
    settings = derive_limits(settings, asyncio.run(topics.describe_limits(
        settings.bootstrap_servers, dead_letter_topic=settings.dlq_topic,
        output_topics=[settings.output_topic, *([settings.review_topic] if settings.review_on else [])],
        label_prefix=settings.label_topic_prefix, security=access,
    )))
    if settings.review_on:
        logger.info("review route: confidence under %s (per label: %s) goes to %s instead of the label's topic",
                    settings.min_confidence, settings.thresholds or "none", settings.review_topic)
    logger.info(
        "worker app_id=%s broker=%s security=%s input=%s output=%s dlq=%s registry=%s version=%d batch_size=%d "
        "batch_max_wait=%.3fs guarantee=%s web=%s:%d topics=%s created_topics=%s",
        settings.app_id, settings.bootstrap_servers, access.describe(), settings.input_topic, settings.output_topic,
        settings.dlq_topic, settings.model_dir, version, settings.batch_size, settings.batch_max_wait,
        settings.processing_guarantee, settings.web_host, settings.web_port,
        topics.TopicSpec.from_settings(settings).describe() if settings.create_topics else "pre-created (not creating)",
        ",".join(created) or "none",
    )
    # Faust, not TensorFlow: the web pages answer and the topics exist before the model loads.
    from worker import allocator, app
    from worker.reload import Serving

    allocator.return_large_blocks()

    app.run(settings, Serving(settings.model_dir))
    return 0


def derive_limits(settings: config.Settings, cluster: limits.ClusterLimits) -> config.Settings:
    """The settings with the size limits the cluster allows (ConfigError for a variable set above them)."""
    for what in cluster.unreadable:
        logger.warning("cannot read max.message.bytes of %s; assuming Kafka's default %d: set "
                       "TEXTSTREAM_MAX_DEAD_LETTER_BYTES / TEXTSTREAM_MAX_OUTPUT_BYTES if the cluster's are lower, "
                       "or grant DescribeConfigs", what, limits.KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    derived = limits.derive(settings, cluster)
    logger.info("size limits: %s (cluster: dead-letter topic max.message.bytes=%s, output and label topics=%s, "
                "brokers' message.max.bytes=%s)", limits.Limits.of(derived).describe(), cluster.dead_letter_topic,
                cluster.output_topics, cluster.broker_default)
    return derived


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a worker (joins the consumer group TEXTSTREAM_APP_ID)",
                       epilog=settings_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    clients.add_command_config(p)
    p.set_defaults(func=cmd_worker)
