"""Every request the service makes to other machines: feeds and the pages they point to, and webhooks.
All go through index/fetch.py's Fetcher, which refuses an address that is not public (unless the
operator allows its network, RAG_FEEDS_ALLOW_NETWORKS), checks the connected peer again, and bounds each
request; here are the service's two doors, built from its settings."""

from __future__ import annotations

from api.config import Settings
from index.fetch import Fetcher, Limits, parse_networks

WEBHOOK_LIMITS = Limits(connect_seconds=5.0, read_seconds=10.0, total_seconds=15.0)
"""One webhook try's bounds: a receiver should answer at once and work later (Standard Webhooks' advice)."""


def feed_fetcher(settings: Settings) -> Fetcher:
    """Feeds and their pages: the allowed networks, and a pause between two requests to one host."""
    service = settings.service
    limits = Limits(host_delay_seconds=service.feeds_host_delay_seconds)
    return Fetcher(parse_networks(",".join(service.feeds_allow_networks)), limits)


def webhook_poster(settings: Settings) -> Fetcher:
    """Webhooks: the same address rule and allowed networks, a try's bounds."""
    return Fetcher(parse_networks(",".join(settings.service.feeds_allow_networks)), WEBHOOK_LIMITS)
