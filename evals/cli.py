"""`rag eval` (filled in by the evaluation harness)."""

from __future__ import annotations

import argparse
from typing import Any


def add_eval_command(commands: Any) -> None:
    """Register `rag eval` on the `rag` parser."""
    del commands
    _ = argparse
