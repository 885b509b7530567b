"""Distillation methods: each one short recipe file wiring the shared components.

    from mathdistill.methods import METHODS, run
    cfg = load_config("recipes/etd.yaml", ["data.train.limit=100"])
    run(cfg)                                   # -> the run folder

`METHODS` maps a recipe's `method:` to its config class (inheriting `config.RecipeConfig`), its
recipe function `recipe(cfg, run) -> result rows`, a one-line summary and the defaults it puts
under the YAML. `run` is the one runner: validate the whole recipe (leakage refused: contract 11),
open the run folder, decontaminate the training problems (a distillation recipe: `leakage`), run the
recipe's stages, write results.json (every row with its provenance: `provenance`), finish the
manifest, write the report.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mathdistill.methods.config import RecipeConfig


@dataclass(frozen=True)
class Method:
    name: str
    config: type[RecipeConfig]
    recipe: Callable  # recipe(cfg, run) -> list of result rows (contract 9 names)
    summary: str
    defaults: dict = field(default_factory=dict)
    # serve(cfg, run) -> mathdistill.serve.Served: the model names a finished run is served under and the
    # inference behind each (`mathdistill serve RUN_DIR`); None: the student in train/student answering
    # in cfg.thoughts (+ their vote), as steps.evaluate evaluates it (docs/adding-a-method.md)
    serve: Callable | None = None
    # workload(cfg, w: mathdistill.workload.Workload) -> None: what the student does in each stage (trainings,
    # generation), added with w.train / w.generate / w.evaluate; what `--plan` estimates (None: no plan)
    workload: Callable | None = None


def _registry() -> dict[str, Method]:
    """Every `METHODS` list of the recipe files in this package (a new method is a new file)."""
    import importlib
    import pkgutil

    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for m in getattr(module, "METHODS", []):
            found[m.name] = m
    order = ["base", "cot", "eotd", "pot", "etd"]  # the rest alphabetically, by file
    return dict(sorted(found.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


METHODS: dict[str, Method] = _registry()


def register(method: Method) -> None:
    """Add a method (a recipe file outside the package, a test's) under its name."""
    METHODS[method.name] = method


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
    from mathdistill.io import write_json
    from mathdistill.methods import steps
    from mathdistill.methods.config import DistillConfig, dump_config, field_defaults, validate
    from mathdistill.methods.provenance import with_provenance
    from mathdistill.methods.run import Run
    from mathdistill.report import write_report
    from mathdistill.models import provenance
    from mathdistill import tracking
    from mathdistill.teacher import budget

    validate(cfg)
    caps = teacher_budget(cfg)
    report_to = getattr(getattr(cfg, "train", None), "report_to", None)
    tracking.check(report_to)
    info = {"student": provenance(cfg.student.model)}
    r = Run.open(cfg.run_dir, dump_config(cfg), command or sys.argv, restart, info, defaults=field_defaults(type(cfg)),
                 on_stage=on_stage)
    if isinstance(cfg, DistillConfig):
        steps.train_problems(r, cfg)  # the decontaminate stage, whatever the recipe does next
    with budget.limits(caps and dataclasses.replace(caps, folder=r.dir)):
        rows = with_provenance(r.dir, METHODS[cfg.method].recipe(cfg, r))
    tracking.log_run(report_to, r.dir, rows, budget.spent(r.dir))
    write_json(r.path("results.json"), {"run": cfg.name, "method": cfg.method, "student": cfg.student.model,
                                        "student_provenance": info["student"], "rows": rows, **r.extras()})
    r.finish()
    write_report([r.dir], r.path("report"))
    return r.dir
