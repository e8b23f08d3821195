"""The fixed split of dev questions: tune on one half, check on the other (by hash of the question id)."""

from __future__ import annotations

import hashlib


def in_tune_half(question_id: str) -> bool:
    """True for the half of the questions that tuning may look at."""
    return hashlib.sha256(question_id.encode()).digest()[0] % 2 == 0
