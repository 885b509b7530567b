"""Every method, declared once, here: its config class, its recipe, how its runs are served, what its teachers
write, its defaults and its figures (what `--plan` counts).

    from mathdistill.methods.registry import METHODS, load_config
    METHODS["etd"].config                     # ETDConfig
    cfg = load_config("recipes/etd.yaml", ["data.train.limit=100"])   # the config class of its `method:`

The recipe files (`methods/<name>.py`) hold what a method does and know nothing of this file: the registry
imports them, never the reverse. A method in another package registers through the Python entry-point group
`mathdistill.methods` (its pyproject.toml: `[project.entry-points."mathdistill.methods"]`, `<name> =
"<module>:<object>"`, the object a `Method` or a list of them), loaded the first time a name is not built in
or the methods are listed (docs/adding-a-method.md). `register(method)` adds one at run time (tests).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Iterator

from mathdistill.io import InputError
from mathdistill.methods import base, etd, fdd, kpdd, lorid, siked
from mathdistill.methods.config import DistillConfig, RecipeConfig, build_config, read_recipe
from mathdistill.methods.serving import default_serve

GROUP = "mathdistill.methods"  # the entry-point group of methods outside the package
DEFAULT_METHOD = "etd"  # of a recipe that names no `method:` (recipes written before `base` existed meant ETD)


@dataclass(frozen=True)
class Method:
    """One method. `recipe(cfg, run)` runs it in a run folder and returns its result rows (contract 9 names);
    `defaults` go under the recipe's YAML (e.g. `{"thoughts": ["cot"]}`: one config class, several methods)."""

    name: str
    config: type[RecipeConfig]
    recipe: Callable
    summary: str
    defaults: dict = field(default_factory=dict)
    # serve(cfg, run view) -> methods.serving.Served: the names a finished run is served under and the inference
    # behind each (`mathdistill serve RUN_DIR`); default: the student of train/student in cfg.thoughts (+ vote)
    serve: Callable = default_serve
    # teaches(cfg) -> the formats the run's teachers write, each checked for a teacher before any stage runs;
    # None: cfg.thoughts for a distillation method, none for one that trains nothing
    teaches: Callable | None = None
    # workload(cfg, w: mathdistill.workload.Workload): what the student does in each stage (trainings, generation),
    # added with w.train / w.generate / w.evaluate; what `--plan` estimates (None: no student plan)
    workload: Callable | None = None
    # teacher_plan(cfg, problems) -> [teacher.bill.Stage]: the teach stages `--plan` bills (`steps.teach_stage`);
    # None: one stage per format it teaches, teach.samples rationales per problem
    teacher_plan: Callable | None = None

    def formats(self, cfg) -> list[str]:
        """The formats the run of `cfg` asks its teachers for (`teaches`)."""
        if self.teaches is not None:
            return list(self.teaches(cfg))
        return list(cfg.thoughts) if isinstance(cfg, DistillConfig) else []


def _etd(name: str, thoughts: list[str], summary: str) -> Method:
    return Method(name, etd.ETDConfig, etd.recipe, summary, {"thoughts": thoughts}, workload=etd.workload)


BUILT_IN: list[Method] = [
    Method("base", RecipeConfig, base.recipe, "the untrained student, evaluated as it is", workload=base.workload),
    _etd("cot", ["cot"], "chain-of-thought distillation, the baseline every paper compares to"),
    _etd("eotd", ["eot"], "EoTD: equations (unknowns allowed) solved by sympy"),
    _etd("pot", ["pot"], "program-of-thought distillation: Python run in the sandbox"),
    _etd("etd", ["cot", "pot", "eot"], "ETD: CoT + PoT + EoT in one student, answers combined by vote"),
    Method("fdd", fdd.FDDConfig, fdd.recipe, "FDD: rounds of student feedback, new problems (easy: harder, hard: "
           "similar), decontaminated, majority-labelled; retrained from the base", {"thoughts": ["cot"]},
           serve=fdd.serve, workload=fdd.workload, teacher_plan=fdd.teacher_plan),
    Method("kpdd", kpdd.KPDDConfig, kpdd.recipe, "KPDD: key points (core question, facts) then the solution, CoT or "
           "PoT", teaches=kpdd.teaches, workload=kpdd.workload, teacher_plan=kpdd.teacher_plan),
    Method("lorid", lorid.LoRIDConfig, lorid.recipe, "LoRID: intuitive, knowledge and deep reasoners (3 LoRAs, one "
           "base) in a consistency loop", lorid.TRAIN, serve=lorid.serve, teaches=lorid.teaches,
           workload=lorid.workload, teacher_plan=lorid.teacher_plan),
    Method("siked", siked.SIKeDConfig, siked.recipe, "SIKeD: several strategies, the student's own correct solutions, "
           "iterated; the student picks the strategy", siked.OFFICIAL, serve=siked.serve, workload=siked.workload),
]


class Registry(MutableMapping):
    """name -> Method: the built-in methods, then those of the entry-point group (loaded on first need)."""

    def __init__(self, methods: list[Method]):
        self._methods = {m.name: m for m in methods}
        self._plugins_loaded = False

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=GROUP):
            where = f"entry point '{ep.name} = {ep.value}' (group {GROUP}" + (
                f", package {ep.dist.name})" if ep.dist is not None else ")")
            try:
                found = ep.load()
            except Exception as e:  # a plugin that does not import: say which, and why
                raise InputError(f"{where}: does not load: {type(e).__name__}: {e}") from e
            for m in found if isinstance(found, (list, tuple)) else [found]:
                if not isinstance(m, Method):
                    raise InputError(f"{where}: is a {type(m).__name__}, not a mathdistill.methods.registry.Method")
                if m.name in self._methods and self._methods[m.name] is not m:
                    raise InputError(f"{where}: method '{m.name}' is defined twice")
                self._methods[m.name] = m

    def __getitem__(self, name: str) -> Method:
        if name not in self._methods:
            self._load_plugins()
        return self._methods[name]

    def __contains__(self, name) -> bool:
        if name not in self._methods:
            self._load_plugins()
        return name in self._methods

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(dict(self._methods))

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._methods)

    def __setitem__(self, name: str, method: Method) -> None:
        self._methods[name] = method

    def __delitem__(self, name: str) -> None:
        del self._methods[name]


METHODS = Registry(BUILT_IN)


def register(method: Method) -> None:
    """Add `method` under its name, for this process (a test's; a package uses the entry point)."""
    METHODS[method.name] = method


def get(name: str, source: str = "config") -> Method:
    """The method called `name`; an InputError naming `source`'s key and the known methods otherwise."""
    if name not in METHODS:
        raise InputError(f"{source}: key 'method': unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> RecipeConfig:
    """Read a recipe YAML (or start from `base`), apply `key=value` overrides, validate with the config class of
    its `method:` (DEFAULT_METHOD when it names none, recorded so in the config), the method's defaults under
    the YAML."""
    raw, source = read_recipe(path, overrides, base)
    raw.setdefault("method", DEFAULT_METHOD)
    method = get(raw["method"], source)
    return build_config(method.config, method.defaults, raw, source)
