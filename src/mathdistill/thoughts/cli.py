"""`mathdistill score` (owned by the reasoning-formats work)."""

from __future__ import annotations


def score_command() -> None:
    raise NotImplementedError("mathdistill score is not built yet")
