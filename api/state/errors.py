"""Errors of the service's own state, which api/web/problems.py turns into HTTP answers."""

from __future__ import annotations

from index.errors import RagError


class NotFoundError(RagError):
    """No such job, feed or watch."""


class WebhookRefusedError(RagError):
    """A webhook address the service will not post to (not http(s), or outside the fetcher's rules)."""


class KeyRefusedError(RagError):
    """A key that cannot be made as asked (an origin that is not a web address)."""


class KeyInUseError(RagError):
    """A key asked to revoke itself (which would lock its holder out mid-request)."""


class LimitsUnavailableError(RagError):
    """The limits file is damaged and another process still has it open; it is started afresh once the
    last one lets go of it (within seconds), so the request may be retried."""
