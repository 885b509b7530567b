"""`mathdistill run RECIPE.yaml [key=value ...]`."""

from __future__ import annotations


def run_command() -> None:
    raise NotImplementedError("mathdistill run is not built yet")
