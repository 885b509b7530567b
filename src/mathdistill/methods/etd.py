"""ETD (and EoTD, and plain CoT distillation): one student learns one or several reasoning formats.

    teach each format (verified against gold) -> training data with format triggers -> LoRA
    -> answer in every format -> majority vote across formats -> results + report

EoTD is ETD with `thoughts: [eot]`; the CoT baseline is `thoughts: [cot]`; PoT-only is `[pot]`.
"""

from __future__ import annotations

from pathlib import Path

from mathdistill.io import read_json
from mathdistill.methods import stages
from mathdistill.methods.config import RecipeConfig
from mathdistill.methods.runner import Run

ADAPTER = "student"


def run(cfg: RecipeConfig, command: list[str] | None = None, restart: bool = False) -> Path:
    run = Run(cfg, command, restart)
    for thought in cfg.thoughts:
        run.stage(f"teach-{thought}", lambda thought=thought: stages.teach(run, thought))
    run.stage("data", lambda: stages.build_data(run, cfg.thoughts))
    run.stage("train", lambda: stages.train(run, run.path("data", "train.jsonl"), ADAPTER))

    def evaluate():
        seconds = read_json(run.path("train", ADAPTER, "train_summary.json"))["seconds"]
        rows = [dict(r, method=cfg.method) for r in stages.evaluate(run, ADAPTER)]
        if cfg.eval.base:
            rows += [dict(r, method="base") for r in stages.evaluate(run, None, label="base")]
        stages.write_results(run, rows, seconds)

    run.stage("eval", evaluate)
    run.stage("report", lambda: stages.report(run))
    run.finish()
    return run.dir
