"""ETD, EoTD and plain CoT distillation: one student learns one or several reasoning formats.

    teach each format (verified against gold) -> rows with the format's trigger -> one LoRA
    -> answer in every format -> majority vote across formats (ETD) -> result rows

EoTD is ETD with `thoughts: [eot]`, the CoT baseline `thoughts: [cot]`, PoT-only `[pot]`. Rows:
`etd` (the vote) and `etd:cot`, `etd:pot`, ... (each format alone); `cot`, `eotd`, `pot`.
"""

from __future__ import annotations

from pydantic import Field

from mathdistill.methods import steps
from mathdistill.methods.config import DistillConfig, VoteEvalConfig


class ETDConfig(DistillConfig):
    thoughts: list[str] = Field(default_factory=lambda: ["cot", "pot", "eot"], min_length=1)
    eval: VoteEvalConfig = VoteEvalConfig()


def recipe(cfg: ETDConfig, run) -> list[dict]:
    steps.teach(run, cfg, steps.train_problems(run, cfg), cfg.thoughts)
    steps.data(run, cfg.thoughts, calc_marks=cfg.data.calc_marks)
    train = steps.train(run, cfg)
    rows = run.stage("eval", lambda: steps.evaluate(
        run, cfg, cfg.method, run.path("train", "student"), cfg.thoughts, cfg.eval.vote, cfg.eval.preference, train))
    if cfg.eval.base:
        rows += run.stage("eval-base", lambda: steps.evaluate(run, cfg, "base", None, cfg.thoughts, cfg.eval.vote,
                                                               cfg.eval.preference, folder="eval-base"))
    return rows


def workload(cfg: ETDConfig, w) -> None:
    w.train("train", {t: w.train_problems * cfg.teach.samples for t in cfg.thoughts}, cfg)
    w.evaluate("eval", cfg, cfg.thoughts)
    if cfg.eval.base:
        w.evaluate("eval-base", cfg, cfg.thoughts, trained=False)

