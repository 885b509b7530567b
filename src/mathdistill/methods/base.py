"""The untrained student, evaluated as it is: the `base` row every experiment compares with."""

from __future__ import annotations

from mathdistill.methods import steps
from mathdistill.methods.config import RecipeConfig


def recipe(cfg: RecipeConfig, run) -> list[dict]:
    return run.stage("eval", lambda: steps.evaluate(run, cfg, "base", None, cfg.thoughts))


def workload(cfg: RecipeConfig, w) -> None:
    w.evaluate("eval", cfg, cfg.thoughts, trained=False)

