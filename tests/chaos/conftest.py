"""Fault injection: real processes, killed at random moments, and the invariants that must hold."""

from __future__ import annotations

import os


def rounds(ci_default: int, variable: str = "TRI24ES_CHAOS_ROUNDS") -> int:
    """How many rounds to run: the short CI default unless the environment asks for more."""
    return int(os.environ.get(variable, ci_default))
