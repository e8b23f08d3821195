"""The service's own errors, placed in the project's one tree (drawn in index/errors.py);
api/web/problems.py answers each with its branch's status."""

from __future__ import annotations

from index.errors import ConflictError, InputError, NotFoundError, UnavailableError


class WebhookRefusedError(InputError):
    """A webhook address the service will not post to (not http(s), or outside the fetcher's rules)."""


class KeyRefusedError(InputError):
    """A key that cannot be made as asked (an origin that is not a web address)."""


class WatchRefusedError(InputError):
    """A standing question that cannot be kept as asked (its text, or its confidence)."""


class WatchLimitError(InputError):
    """A key has as many watches as it may keep."""


class FeedNotFoundError(NotFoundError):
    """No feed with that id or address."""


class WatchNotFoundError(NotFoundError):
    """No such watch (or not one the caller's key may see)."""


class ModelNotFoundError(NotFoundError):
    """A model this service does not serve."""


class KeyTakenError(ConflictError):
    """A key of that name exists (revoked keys keep their names)."""


class KeyInUseError(ConflictError):
    """A key asked to revoke itself (which would lock its holder out mid-request)."""


class QueueFullError(UnavailableError):
    """Too many ingest jobs are waiting."""


class LimitsUnavailableError(UnavailableError):
    """The limits file is damaged and another process still has it open; it is started afresh once the
    last one lets go of it (within seconds), so the request may be retried."""
