"""`mathdistill teach` (owned by the teacher-engine work)."""

from __future__ import annotations


def teach_command() -> None:
    raise NotImplementedError("mathdistill teach is not built yet")
