"""Recipe configuration: one pydantic model per method, each inheriting the shared one.

    RecipeConfig            name, method, seed, runs_dir, student, data, eval     (method base)
      DistillConfig         + teach (a teacher per format) + train (the training schema)
        ETDConfig           + thoughts, eval.vote, eval.preference (VoteEvalConfig)   (cot, eotd, pot, etd)
        ...                 one per method, in the method's own recipe file

A recipe is YAML + `key=value` overrides (`read_recipe`); `method:` picks the config class from the
registry (`methods.registry.load_config`, which builds it here: `build_config`). Every model forbids
unknown keys, so a misspelt key is an error that names it, and every number is range-checked.
The runner then checks the recipe as a whole (`runner.validate`: a teacher for every format, every
dataset present, no training slice that overlaps an evaluation slice: contract 11, `methods.leakage`)
before any stage runs. This module knows no method by name: the registry imports it, never the reverse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mathdistill import thoughts
from mathdistill.eval.config import EvalConfig  # noqa: F401 (the shared evaluation settings; eval's own)
from mathdistill.io import InputError, read_yaml_mapping
from mathdistill.student.train_config import TrainSettings
from mathdistill.teacher.config import TeacherConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def known_formats(names: list[str], answering: bool = True) -> list[str]:
    allowed = thoughts.ANSWER_NAMES if answering else thoughts.NAMES
    for n in names:
        if n not in allowed:
            raise ValueError(f"unknown format {n!r}; choose from {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a format is listed twice: {names}")
    return names


class Split(Strict):
    """A slice of one benchmark split: problems [offset, offset + limit)."""

    dataset: str = "gsm8k"
    split: str = "test"
    limit: int | None = Field(None, ge=1, description="first N problems (after offset); None: all")
    offset: int = Field(0, ge=0)


def problems(split: Split, data_dir: str | None) -> list:
    """The problems of one configured slice (`steps.problems`)."""
    from mathdistill.data import load

    ps = load(split.dataset, split.split, data_dir=data_dir)
    end = None if split.limit is None else split.offset + split.limit
    return ps[split.offset : end]


class DataConfig(Strict):
    data_dir: str | None = Field(None, description="data root; else $MATHDISTILL_DATA or ../shared/data")
    train: Split = Split(dataset="gsm8k", split="train")
    eval: list[Split] = Field(default_factory=lambda: [Split(dataset="gsm8k", split="test", limit=200)], min_length=1)
    calc_marks: Literal["none", "keep", "add"] = Field(
        "none", description="calculation marks in cot training targets, the pattern calculator decoding hooks into: "
                            "none (as always), keep (GSM8K gold notes the calculator agrees with), add (keep, and wrap "
                            "each right written `a op b = c` step as `<<a op b = c>>`); mathdistill.thoughts.calcmarks")


class StudentConfig(Strict):
    model: str = Field("smollm2-135m", description="HF id, local folder, .gguf file or alias")


class VoteEvalConfig(EvalConfig):
    """Evaluation in several formats combined by majority vote (ETD's; FDD's rounds over its formats)."""

    vote: bool = Field(True, description="combine the formats' answers by majority vote (row `<method>`)")
    preference: list[str] = Field(default_factory=thoughts.vote_preference,
                                  description="tie-break order of the vote (default: the formats whose answers are "
                                              "computed first: pot, eot, cot, l2m)")

    @field_validator("preference")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        return known_formats(v)


class RecipeConfig(Strict):
    """What every method has: the untrained student evaluated (method `base`)."""

    name: str = Field(min_length=1)
    #: the method (`methods.registry`); a recipe that names none is `registry.DEFAULT_METHOD`'s (load_config)
    method: str = Field(min_length=1)
    seed: int = 0
    runs_dir: str = "runs"
    student: StudentConfig = StudentConfig()
    #: formats the student answers in
    thoughts: list[str] = Field(default_factory=lambda: ["cot"], min_length=1)
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("thoughts")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        return known_formats(v)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


#: offline defaults, each format's own (`Thought.offline_teacher`): the recorded Llama-3-70B CoT for cot, gold
#: conversions for the executable formats
DEFAULT_TEACHERS = {n: TeacherConfig(**thoughts.thought_class(n).offline_teacher)
                    for n in thoughts.where("offline_teacher")}


class TeachConfig(Strict):
    samples: int = Field(1, ge=1, description="rationales per problem per format")
    #: format -> teacher; formats not listed use `default`, else DEFAULT_TEACHERS
    per_thought: dict[str, TeacherConfig] = Field(default_factory=dict)
    default: TeacherConfig | None = None
    keep: Literal["correct", "usable", "all"] = "correct"
    dedupe: bool = True
    # the run's teacher budget (mathdistill.teacher.budget): every teacher of every stage, across resumes
    max_cost: float | None = Field(None, gt=0, description="USD the run's teachers may spend in all (prices needed); "
                                   "raise it and re-run to go on")
    max_requests: int | None = Field(None, ge=1, description="teacher requests the run may pay for in all")

    def for_thought(self, thought: str) -> TeacherConfig:
        if thought in self.per_thought:
            return self.per_thought[thought]
        if self.default is not None:
            return self.default
        if thought in DEFAULT_TEACHERS:
            return DEFAULT_TEACHERS[thought]
        raise InputError(f"no teacher configured for format '{thought}': set teach.per_thought.{thought}")


class TrainDataConfig(DataConfig):
    """The data of a distillation recipe: + whether decontamination drops what it finds."""

    decontaminate: bool = Field(
        True, description="drop training problems that meet the decontamination rule (`decontam`) against the "
                          "evaluation slices and the data root's test sets; false: check and report them, train on "
                          "them anyway (methods.leakage; FDD's new problems are dropped either way, its paper's step)")


class DecontamConfig(Strict):
    """The decontamination rule (FDD's): a training problem is contaminated when it shares a word n-gram with
    a test question or its TF-IDF cosine to one reaches `cosine` (`mathdistill.data.decontam`)."""

    ngram: int = Field(13, ge=1, description="drop a training problem sharing a word n-gram with a test question")
    cosine: float = Field(0.8, gt=0, le=1, description="drop one whose TF-IDF cosine to a test question is >= this")


#: recorded plan-only rationales that stand in offline for what a teacher would write besides a solution (LoRID's
#: knowledge, KPDD's key points: `steps.teach_derived`)
PLANS = "teacher/gsm8k_train_gemini-1.5-flash_plan.json"


def require_teacher_without_plans(cfg, fmt: str, what: str) -> None:
    """With `plans: null` (no recorded stand-in) a teacher must write `fmt`: refused at config time otherwise."""
    if cfg.plans is None:
        try:
            cfg.teach.for_thought(fmt)
        except ValueError:
            raise ValueError(f"plans is null: set a {what} teacher (teach.per_thought.{fmt} or teach.default)") from None


class DistillConfig(RecipeConfig):
    """What every distillation method adds: teachers, training, and decontamination of what it trains on."""

    data: TrainDataConfig = TrainDataConfig()
    teach: TeachConfig = TeachConfig()
    train: TrainSettings = TrainSettings()
    decontam: DecontamConfig = DecontamConfig()

    def training_slices(self) -> list[tuple[str, Split]]:
        """(config key, slice) of every benchmark slice training problems come from: what the leakage check
        (contract 11) compares with the evaluation slices. A method drawing problems from elsewhere (FDD's
        pool) adds its slices."""
        return [("data.train", self.data.train)]


# ----------------------------------------------------------------------------- loading


def _set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if e["type"] == "value_error":  # our validators' messages name their keys themselves
            msg = str(e.get("ctx", {}).get("error", msg))
        lines.append(f"{source}: key '{loc}': {msg}" if loc else f"{source}: {msg}")
    return "\n".join(lines)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> tuple[dict, str]:
    """(the mapping of a recipe YAML, or of `base`, with its `key=value` overrides applied; where it came from)."""
    raw: dict = dict(base or {})
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise InputError(f"recipe not found: {path}")
        if path.is_dir():
            raise InputError(f"{path}: is a folder; expected a recipe YAML file")
        raw = read_yaml_mapping(path, "a recipe: a mapping of keys")
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override '{item}' is not key=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            parsed = value
        _set_dotted(raw, key.strip(), parsed)
    return raw, source


def build_config(config: type[RecipeConfig], defaults: dict, raw: dict, source: str = "config") -> RecipeConfig:
    """`raw` (a recipe's mapping) over a method's `defaults`, validated by its `config` class; an InputError naming
    every bad key of `source` otherwise."""
    try:
        return config.model_validate(_merge(defaults, raw))
    except ValidationError as e:
        raise InputError(_format_error(source, e)) from None


def dump_config(cfg: RecipeConfig) -> dict:
    """The resolved config as JSON types (`Run.open` redacts secrets in URLs before writing it)."""
    return cfg.model_dump(mode="json")


def field_defaults(cls: type[BaseModel]) -> dict:
    """Every field of config class `cls` that has a default, as JSON types (nested sections whole)."""
    out = {}
    for key, f in cls.model_fields.items():
        if not f.is_required():
            value = f.get_default(call_default_factory=True)
            out[key] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return out


def resolve_teacher(cfg: DistillConfig, thought: str) -> TeacherConfig:
    """The teacher of `thought`, recorded files resolved to real paths (the data root, the user
    cache, or fetched once from their public source)."""
    spec = cfg.teach.for_thought(thought)
    try:
        return spec.with_data_root(cfg.data.data_dir)
    except InputError as e:
        raise InputError(f"teach.per_thought.{thought}: {e}") from None


def describe(method) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) of every key of a method's config, with the method's own
    defaults, sections flattened (what `mathdistill recipes` prints)."""
    cfg = method.config.model_validate(_merge(method.defaults, {"name": method.name, "method": method.name}))
    return _describe(cfg)


def _describe(obj: BaseModel, prefix: str = "") -> list[tuple[str, str, str]]:
    out = []
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        if isinstance(value, BaseModel) and not isinstance(value, TeacherConfig):
            out += _describe(value, f"{prefix}{name}.")
            continue
        dumped = value.model_dump(mode="json", exclude_defaults=True) if isinstance(value, BaseModel) else (
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
            if isinstance(value, list) else value)
        text = json.dumps(dumped, default=str) if not isinstance(dumped, str) else dumped
        out.append((f"{prefix}{name}", text, field.description or ""))
    return out
