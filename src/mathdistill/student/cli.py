"""`mathdistill train` (owned by the training work)."""

from __future__ import annotations


def train_command() -> None:
    raise NotImplementedError("mathdistill train is not built yet")
