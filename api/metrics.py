"""Prometheus metrics beyond what Litestar's Prometheus middleware counts (requests by route and status,
latency histograms): answer stages, refusals, ingest jobs and the index's size."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
INGEST_QUEUED = Gauge(f"{PREFIX}_ingest_jobs_waiting", "Background ingest jobs queued or running")
INDEX_ARTICLES = Gauge(f"{PREFIX}_index_articles", "Articles in the published index snapshot")
INDEX_CHUNKS = Gauge(f"{PREFIX}_index_chunks", "Chunks (vectors) in the published index snapshot")
INDEX_GENERATION = Gauge(f"{PREFIX}_index_generation", "Generation of the published index snapshot")
FEED_POLLS = Counter(
    f"{PREFIX}_feed_polls_total", "Feed polls by outcome (ok, not modified, failed)", ["status"]
)
FEED_ARTICLES = Counter(f"{PREFIX}_feed_articles_total", "Articles added or replaced by feed polls")
FEEDS_PAUSED = Gauge(f"{PREFIX}_feeds_paused", "Feeds paused after repeated failures")
WATCHES = Gauge(f"{PREFIX}_watches", "Standing questions (watches) kept")
WATCH_ALERTS = Counter(f"{PREFIX}_watch_alerts_total", "Alerts stored for watches")
WEBHOOK_DELIVERIES = Counter(
    f"{PREFIX}_webhook_deliveries_total", "Webhook tries by outcome (delivered, failed, given_up)", ["status"]
)
