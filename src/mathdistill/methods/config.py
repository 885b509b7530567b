"""Recipe configuration: YAML file + `key=value` overrides, validated by pydantic.

An unknown or misspelt key is an error that names it (every model forbids extra keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mathdistill.io import InputError, read_yaml_mapping


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Split(Strict):
    dataset: str = "gsm8k"
    split: str = "test"
    limit: int | None = None
    offset: int = 0


class DataConfig(Strict):
    data_dir: str | None = None
    train: Split = Split(dataset="gsm8k", split="train")
    eval: list[Split] = Field(default_factory=lambda: [Split(dataset="gsm8k", split="test", limit=200)])


class TeacherSpec(Strict):
    """Where one format's rationales come from.

    kind: `reference` (GSM8K gold solutions converted and verified: offline, PoT/EoT/CoT),
    `replay` (recorded outputs, `file` relative to the data root or absolute),
    `openai` (any OpenAI-compatible endpoint: `url`, `model`, `key_env`).
    """

    kind: Literal["reference", "replay", "openai"]
    file: str | None = None  # replay
    url: str | None = None
    model: str | None = None
    key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    temperature: float | None = None
    max_tokens: int = 1024
    concurrency: int = 8

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "replay" and not self.file:
            raise ValueError("a replay teacher needs `file`")
        if self.kind == "openai" and not (self.url and self.model):
            raise ValueError("an openai-compatible teacher needs `url` and `model`")
        return self


#: offline defaults: the recorded Llama-3-70B CoT for cot, gold conversions for the executable formats
DEFAULT_TEACHERS = {
    "cot": TeacherSpec(kind="replay", file="teacher/gsm8k_train_llama3-70b_cot.json"),
    "pot": TeacherSpec(kind="reference"),
    "eot": TeacherSpec(kind="reference"),
}


class TeachConfig(Strict):
    samples: int = 1
    #: format -> teacher; formats not listed use DEFAULT_TEACHERS, or `default` when set
    per_thought: dict[str, TeacherSpec] = Field(default_factory=dict)
    default: TeacherSpec | None = None
    keep: Literal["correct", "all"] = "correct"
    dedupe: bool = True

    def for_thought(self, thought: str) -> TeacherSpec:
        if thought in self.per_thought:
            return self.per_thought[thought]
        if self.default is not None:
            return self.default
        if thought in DEFAULT_TEACHERS:
            return DEFAULT_TEACHERS[thought]
        raise InputError(f"no teacher configured for thought '{thought}': set teach.per_thought.{thought}")


class TrainSection(Strict):
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int | None = None
    lora_dropout: float = 0.05
    full: bool = False
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 512
    warmup_ratio: float = 0.03
    save_steps: int = 50


class EvalSection(Strict):
    #: formats the student answers with; default: the trained thoughts
    thoughts: list[str] | None = None
    vote: bool = True
    #: tie-break / failure order for the vote
    preference: list[str] = Field(default_factory=lambda: ["pot", "eot", "cot", "l2m"])
    samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256
    batch_size: int = 16
    #: end a completion that repeats one block 3 times in a row (student.generate.ends_in_loop)
    loop_stop: bool = True
    base: bool = False  # also evaluate the untrained student


class StudentSection(Strict):
    model: str = "smollm2-135m"


class RecipeConfig(Strict):
    name: str
    method: Literal["cot", "eotd", "etd", "pot"] = "etd"
    seed: int = 0
    runs_dir: str = "runs"
    student: StudentSection = StudentSection()
    thoughts: list[str] = Field(default_factory=lambda: ["cot", "pot", "eot"])
    data: DataConfig = DataConfig()
    teach: TeachConfig = TeachConfig()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


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
        lines.append(f"{source}: key '{loc}': {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> RecipeConfig:
    """Read a recipe YAML (or start from `base`), apply `key=value` overrides, validate."""
    raw: dict = dict(base or {})
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise InputError(f"recipe not found: {path}")
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
    try:
        return RecipeConfig.model_validate(raw)
    except ValidationError as e:
        raise InputError(_format_error(source, e)) from None


def dump_config(cfg: RecipeConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
