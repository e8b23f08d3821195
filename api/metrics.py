"""Prometheus metrics beyond what Litestar's Prometheus middleware counts (requests by route and status,
latency histograms): answer stages, refusals, ingest jobs and the index's size.

Under `rag serve --workers N` each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` and
/metrics sums the counters and histograms of every worker (the Prometheus client's multi-process mode).
The gauges are set from shared state (the index, service.sqlite), so the most recent value stands."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

PREFIX = "newsqa"
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

STAGE_SECONDS = Histogram(
    f"{PREFIX}_stage_seconds",
    "Time spent in each stage of answering a question",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
RATE_LIMITED = Counter(f"{PREFIX}_rate_limited_total", "Requests refused with 429, by limit", ["limit"])
AUTH_REFUSED = Counter(
    f"{PREFIX}_auth_refused_total", "Requests refused for a missing or wrong key, scope or origin", ["reason"]
)
INGEST_JOBS = Counter(f"{PREFIX}_ingest_jobs_total", "Background ingest jobs by outcome", ["status"])
INGEST_QUEUED = Gauge(
    f"{PREFIX}_ingest_jobs_waiting",
    "Background ingest jobs queued or running",
    multiprocess_mode="mostrecent",
)
INDEX_ARTICLES = Gauge(
    f"{PREFIX}_index_articles", "Articles in the published index snapshot", multiprocess_mode="mostrecent"
)
INDEX_CHUNKS = Gauge(
    f"{PREFIX}_index_chunks",
    "Chunks (vectors) in the published index snapshot",
    multiprocess_mode="mostrecent",
)
INDEX_GENERATION = Gauge(
    f"{PREFIX}_index_generation", "Generation of the published index snapshot", multiprocess_mode="mostrecent"
)
FEED_POLLS = Counter(
    f"{PREFIX}_feed_polls_total", "Feed polls by outcome (ok, not modified, failed)", ["status"]
)
FEED_ARTICLES = Counter(f"{PREFIX}_feed_articles_total", "Articles added or replaced by feed polls")
FEEDS_PAUSED = Gauge(
    f"{PREFIX}_feeds_paused", "Feeds paused after repeated failures", multiprocess_mode="mostrecent"
)
WATCHES = Gauge(f"{PREFIX}_watches", "Standing questions (watches) kept", multiprocess_mode="mostrecent")
WORKERS = Gauge(
    f"{PREFIX}_worker_up",
    "1 for each live worker process answering, by its slot (and its pid)",
    ["worker"],
    multiprocess_mode="liveall",
)
WORKER_REQUESTS = Counter(
    f"{PREFIX}_worker_requests_total", "HTTP requests each worker slot answered", ["worker"]
)
WATCH_ALERTS = Counter(f"{PREFIX}_watch_alerts_total", "Alerts stored for watches")
WEBHOOK_DELIVERIES = Counter(
    f"{PREFIX}_webhook_deliveries_total", "Webhook tries by outcome (delivered, failed, given_up)", ["status"]
)


def metrics_registry() -> CollectorRegistry:
    """What /metrics reports: this process's registry, or every worker's under `rag serve --workers N`."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
