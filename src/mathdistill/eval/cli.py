"""`mathdistill eval` (owned by the evaluator work)."""

from __future__ import annotations


def eval_command() -> None:
    raise NotImplementedError("mathdistill eval is not built yet")
