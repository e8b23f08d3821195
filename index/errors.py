"""The one exception tree of the project, drawn whole here (tests/test_errors.py checks the drawing
against the classes). ``api/`` alone maps it to HTTP problem details: each branch under the root has
one status, and no error raised on purpose is answered 500.

RagError
├── ConfigError                   settings or environment that cannot work (503: the operator must act)
├── InputError                    a request the caller can correct (422)
│   ├── ArticleError              one input file or record that cannot be read as an article
│   ├── QuestionError             a question that cannot be asked (empty, too long, bad dates)
│   ├── AddressError              a web address that is not one (index/urls.py)
│   ├── FeedError                 a document that is not a feed or sitemap read here (index/feeds.py)
│   ├── FetchError                a page or feed refused or not fetched (index/fetch.py)
│   ├── WebhookRefusedError       a webhook address the service will not post to (api/errors.py)
│   ├── KeyRefusedError           a key that cannot be made as asked (api/errors.py)
│   ├── WatchRefusedError         a standing question that cannot be kept as asked (api/errors.py)
│   ├── WatchLimitError           a key has as many watches as it may keep (api/errors.py)
│   └── DatasetError              a dataset file that cannot be read as one (evals/data.py)
│       └── CompareError          two runs that cannot be compared (evals/compare.py)
├── NotFoundError                 no such thing, or not one the caller may see (404)
│   ├── ArticleNotFoundError      no article with that id
│   ├── FeedNotFoundError         no feed with that id or address (api/errors.py)
│   ├── WatchNotFoundError        no such watch (api/errors.py)
│   └── ModelNotFoundError        a model this service does not serve (api/errors.py)
├── ConflictError                 the request clashes with what is stored (409)
│   ├── KeyTakenError             a key of that name exists (api/errors.py)
│   └── KeyInUseError             a key asked to revoke itself (api/errors.py)
└── UnavailableError              the service cannot answer now; retry later (503 with Retry-After)
    ├── IndexStoreError           the stored index cannot be used
    │   ├── IndexCorruptError     a file of the index is unreadable
    │   ├── IndexMismatchError    the index was built with another model or dimension
    │   ├── IndexNotReadyError    the index is still loading
    │   └── ShardUnavailableError no replica of a shard of a Ray cluster answers
    ├── QueueFullError            too many ingest jobs are waiting (api/errors.py)
    └── LimitsUnavailableError    the limits file is being repaired (api/errors.py)
"""

from __future__ import annotations


class RagError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(RagError):
    """Settings or environment that cannot work."""


class InputError(RagError):
    """A request the caller can correct: the message says what is wrong with it."""


class ArticleError(InputError):
    """An input that cannot be read as an article; names the file (or record) and the reason."""

    def __init__(self, origin: str, reason: str) -> None:
        super().__init__(f"{origin}: {reason}")
        self.origin = origin
        self.reason = reason


class QuestionError(InputError):
    """A question that cannot be asked."""


class NotFoundError(RagError):
    """No such thing, or not one the caller may see."""


class ArticleNotFoundError(NotFoundError):
    """No article with that id."""


class ConflictError(RagError):
    """The request clashes with what is stored."""


class UnavailableError(RagError):
    """The service cannot answer now; the same request may succeed later."""


class IndexStoreError(UnavailableError):
    """The stored index cannot be used."""


class IndexCorruptError(IndexStoreError):
    """A file of the index is unreadable."""


class IndexMismatchError(IndexStoreError):
    """The index was built with another embedding model or dimension."""


class IndexNotReadyError(IndexStoreError):
    """The index is still loading."""


class ShardUnavailableError(IndexStoreError):
    """No replica of a shard answers."""
