"""`mathdistill report RUN_DIR [RUN_DIR ...]`."""

from __future__ import annotations


def report_command() -> None:
    raise NotImplementedError("mathdistill report is not built yet")
