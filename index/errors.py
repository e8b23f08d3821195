"""The one exception tree of the project. ``api/`` alone maps it to HTTP problem details.

RagError
├── ConfigError             settings or environment that cannot work
├── ArticleError            one input file or record that cannot be read as an article
├── IndexStoreError             the stored index cannot be used
│   ├── IndexCorruptError   a file of the index is unreadable
│   ├── IndexMismatchError  the index was built with another model or dimension
│   └── IndexNotReadyError  the index is still loading
├── ArticleNotFoundError    no article with that id
└── QuestionError           a question that cannot be asked (empty, too long, bad dates)
"""

from __future__ import annotations


class RagError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(RagError):
    """Settings or environment that cannot work."""


class ArticleError(RagError):
    """An input that cannot be read as an article; names the file (or record) and the reason."""

    def __init__(self, origin: str, reason: str) -> None:
        super().__init__(f"{origin}: {reason}")
        self.origin = origin
        self.reason = reason


class IndexStoreError(RagError):
    """The stored index cannot be used."""


class IndexCorruptError(IndexStoreError):
    """A file of the index is unreadable."""


class IndexMismatchError(IndexStoreError):
    """The index was built with another embedding model or dimension."""


class IndexNotReadyError(IndexStoreError):
    """The index is still loading."""


class ArticleNotFoundError(RagError):
    """No article with that id."""


class QuestionError(RagError):
    """A question that cannot be asked."""
