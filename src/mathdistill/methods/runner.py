"""The one runner of a recipe (`mathdistill run`): validate it whole, open its run folder, run its method's stages,
write the results and the report.

    cfg = load_config("recipes/etd.yaml", ["data.train.limit=100"])   # methods.registry
    run(cfg)                                                         # -> the run folder

In order: the whole recipe validated (leakage refused: contract 11; a teacher for every format its method
teaches), the run folder opened (resumed), the training problems decontaminated (a distillation recipe:
`leakage`), the method's recipe run under the run's teacher budget, results.json written (every row with its
provenance: `provenance`), the manifest finished, the report written.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable

from mathdistill.io import InputError
from mathdistill.methods.config import RecipeConfig


def validate(cfg: RecipeConfig, teaches: list[str] | None = None) -> None:
    """Check the recipe as a whole before any stage runs: every dataset split present, a teacher for every
    format in `teaches` (what its method's teachers write, `Method.formats`; None: cfg.thoughts), recorded
    teacher files present (or fetchable), and no training slice that overlaps an evaluation slice (contract 11:
    `methods.leakage.refuse_overlap`)."""
    from mathdistill import data
    from mathdistill.methods.config import DistillConfig, resolve_teacher
    from mathdistill.methods.leakage import refuse_overlap

    evals = [(f"data.eval[{i}]", s) for i, s in enumerate(cfg.data.eval)]
    trains = cfg.training_slices() if isinstance(cfg, DistillConfig) else []
    loaded = {}
    for key, s in trains + evals:
        try:
            loaded[key] = problems = data.load(s.dataset, s.split, data_dir=cfg.data.data_dir)
        except InputError as e:
            raise InputError(f"{key}: {e}") from None
        if key in ("data.train", *dict(evals)) and s.offset >= len(problems):
            raise InputError(f"{key}: offset {s.offset} is past the end of {s.dataset}/{s.split} ({len(problems)} problems)")
    refuse_overlap([(k, s, loaded[k]) for k, s in trains], [(k, s, loaded[k]) for k, s in evals])
    if isinstance(cfg, DistillConfig):
        for thought in cfg.thoughts if teaches is None else teaches:
            resolve_teacher(cfg, thought)


def teacher_budget(cfg: RecipeConfig):
    """The run's teacher caps (`teach.max_cost`, `teach.max_requests`; None: none), after checking that a cost
    cap knows the price of every live teacher in the recipe (an InputError naming the price keys)."""
    from mathdistill.teacher.budget import Limits, check_prices, find_teachers

    teach = getattr(cfg, "teach", None)
    if teach is None or (teach.max_cost is None and teach.max_requests is None):
        return None
    if teach.max_cost is not None:
        check_prices(find_teachers(cfg))
    return Limits(max_cost=teach.max_cost, max_requests=teach.max_requests)


def run(cfg: RecipeConfig, command: list[str] | None = None, restart: bool = False,
        on_stage: Callable | None = None) -> Path:
    """Run the recipe `cfg` in its run folder (resuming it); returns the folder. `on_stage(stage id, value)`
    is called after every stage that finishes in this call (`Run.open`)."""
    from mathdistill import tracking
    from mathdistill.io import write_json
    from mathdistill.methods import steps
    from mathdistill.methods.config import DistillConfig, dump_config, field_defaults
    from mathdistill.methods.provenance import with_provenance
    from mathdistill.methods.registry import METHODS
    from mathdistill.methods.run import Run
    from mathdistill.models import provenance
    from mathdistill.report import write_report
    from mathdistill.teacher import budget

    method = METHODS[cfg.method]
    validate(cfg, method.formats(cfg))
    caps = teacher_budget(cfg)
    report_to = getattr(getattr(cfg, "train", None), "report_to", None)
    tracking.check(report_to)
    info = {"student": provenance(cfg.student.model)}
    r = Run.open(cfg.run_dir, dump_config(cfg), command or sys.argv, restart, info, defaults=field_defaults(type(cfg)),
                 on_stage=on_stage)
    if isinstance(cfg, DistillConfig):
        steps.train_problems(r, cfg)  # the decontaminate stage, whatever the recipe does next
    with budget.limits(caps and dataclasses.replace(caps, folder=r.dir)):
        rows = with_provenance(r.dir, method.recipe(cfg, r))
    tracking.log_run(report_to, r.dir, rows, budget.spent(r.dir))
    write_json(r.path("results.json"), {"run": cfg.name, "method": cfg.method, "student": cfg.student.model,
                                        "student_provenance": info["student"], "rows": rows, **r.extras()})
    r.finish()
    write_report([r.dir], r.path("report"))
    return r.dir
