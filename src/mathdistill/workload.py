"""What a recipe asks of the student, before anything runs: its trainings (examples, tokens), its generation
(sequences, tokens) and its model loads, stage by stage; with measured speeds, the seconds each takes.

    w = estimate(cfg)                               # methods.plan: nothing is run, loaded or downloaded
    speeds = Speeds.read("benchmarks/results/gpu_speed.json")
    w.seconds(speeds)                               # total estimated seconds
    for load in w.loads: ...                        # stage, kind, examples, tokens, sequences

One estimator for every planner (`methods.plan.estimate`): `benchmarks/scale.py --plan` (the GPU table's budget)
and the student side of `mathdistill run --plan`. Each method says what its stages do (`Method.workload(cfg, w)`,
declared in the registry, written in its recipe file) with the helpers here (`w.train`, `w.generate`,
`w.evaluate`); the figures below are what a stage of a format costs per problem. This module holds the data
and the arithmetic only (below the teacher, whose bills use `TOKENS`); what a method asks is the methods' own.

Token counts per format (`TOKENS`: the student prompt as evaluation renders it, and the training target) are
means over the first 500 GSM8K train problems with the default student's tokenizer (`python
benchmarks/token_lengths.py`, 2026-12-06). A trained student writes about its target's length (measured on this
CPU: cot answers 85-89 tokens against a 96-token target, kpdd-pot 195 against 191); the untrained student wrote
210 on average (GSM8K CoT, benchmarks/results/base_accuracy.json). Generation runs to `max_new_tokens` at most.

Speeds come in two shapes. Generated tokens/s (`greedy`, `sample`): time grows with the tokens written, as in an
engine that refills a finished row's place at once. Greedy problems/s (`eval_problems_per_s`, measured at
`eval_max_new_tokens`): what a batch-level loop gives when a whole test set is one batch that runs until its
longest row stops, so a greedy pass costs its problems at that rate, scaled by its token limit; when a speeds
file has it, greedy passes are planned so. These are plans, not measurements: every table that runs them
records the seconds it really took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mathdistill.io import InputError, read_json

#: format -> (prompt tokens, target tokens) of one training example (benchmarks/token_lengths.py)
TOKENS = {"cot": (113, 96), "pot": (112, 142), "eot": (115, 142), "l2m": (113, 125), "keypoints": (114, 49),
          "knowledge": (110, 49)}
#: tokens the untrained student writes per answer (GSM8K CoT, 0-shot, limit 320: base_accuracy.json, 2026-11-22)
UNTRAINED_TOKENS = 210


@dataclass(frozen=True)
class Load:
    """One stage's work for the student: a training or a generation pass."""

    stage: str  # as the run folder names it: "train", "round-1/feedback", "eval" ...
    kind: Literal["train", "generate"]
    examples: int = 0  # train: examples in one pass over the data
    tokens: int = 0  # train: tokens over all epochs (prompts too); generate: expected generated tokens
    sequences: int = 0  # generate: completions written
    max_new_tokens: int = 0  # generate: the token limit of each
    full: bool = False  # train: full fine-tuning (else LoRA)
    sampled: bool = False  # generate: temperature > 0
    note: str = ""


@dataclass(frozen=True)
class Speeds:
    """Measured speeds of one machine (a gpu_speed.json); `overheads` are fixed costs the file states."""

    train_full: float  # trained tokens/s (prompts included), full fine-tuning
    train_lora: float  # the same with a LoRA adapter (the full figure where the file has none)
    greedy: float  # generated tokens/s, greedy
    sample: float  # generated tokens/s, sampling
    eval_problems_per_s: float | None = None  # greedy passes per problem (see the module doc), else per token
    eval_max_new_tokens: int = 256  # the token limit eval_problems_per_s was measured at
    startup_seconds: float = 30.0  # process start, imports, device init, first model conversion: once
    load_seconds: float = 5.0  # one model load (+ adapter merge) per stage that generates or trains
    source: str = ""

    @classmethod
    def read(cls, path: str | Path) -> "Speeds":
        """Speeds from a gpu_speed.json (benchmarks/gpu_speed.py writes it): `train_tokens_per_s.full|lora`,
        `generated_tokens_per_s.greedy|sample`, `overheads.startup_seconds|load_seconds`."""
        doc = read_json(path)
        try:
            train, gen = doc["train_tokens_per_s"], doc["generated_tokens_per_s"]
            over = doc.get("overheads", {})
            return cls(train_full=float(train["full"]), train_lora=float(train.get("lora") or train["full"]),
                       greedy=float(gen["greedy"]), sample=float(gen.get("sample") or gen["greedy"]),
                       eval_problems_per_s=float(doc["eval_problems_per_s"]) if doc.get("eval_problems_per_s")
                       else None,
                       eval_max_new_tokens=int(doc.get("eval_max_new_tokens") or cls.eval_max_new_tokens),
                       startup_seconds=float(over.get("startup_seconds", cls.startup_seconds)),
                       load_seconds=float(over.get("load_seconds", cls.load_seconds)),
                       source=f"{path}: {doc.get('device', {}).get('name', '?')}, measured {doc.get('measured', '?')}")
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path}: not a speeds file (train_tokens_per_s.full, generated_tokens_per_s.greedy): "
                             f"{type(e).__name__} {e}") from None


@dataclass
class Workload:
    """The loads of one recipe, in stage order. Methods add to it through `train`, `generate`, `evaluate`."""

    method: str
    train_problems: int = 0
    eval_problems: dict[str, int] = field(default_factory=dict)  # dataset -> problems evaluated
    loads: list[Load] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ what stages add

    def train(self, stage: str, examples: dict[str, int], cfg, extra_tokens: int = 0, note: str = "") -> Load:
        """A training on `examples` ({format: examples}) with `cfg.train`'s epochs (or max_steps) and mode;
        `extra_tokens` more in every example (e.g. the knowledge a DR reads, the solution after key points)."""
        t = cfg.train
        n = sum(examples.values())
        per_pass = sum(k * (sum(TOKENS[f]) + extra_tokens) for f, k in examples.items())
        tokens = per_pass * t.epochs
        if t.max_steps is not None and n:  # a step takes batch_size examples (batch_tokens: that many tokens)
            per_step = t.batch_tokens or t.batch_size * t.grad_accum * per_pass / n
            tokens = min(tokens, t.max_steps * per_step)
        load = Load(stage, "train", examples=n, tokens=int(tokens), full=t.full, note=note)
        self.loads.append(load)
        return load

    def generate(self, stage: str, sequences: int, expected: int, max_new_tokens: int, sampled: bool = False,
                 note: str = "") -> Load:
        """`sequences` completions of about `expected` tokens each, at most `max_new_tokens`."""
        load = Load(stage, "generate", tokens=sequences * min(expected, max_new_tokens), sequences=sequences,
                    max_new_tokens=max_new_tokens, sampled=sampled, note=note)
        self.loads.append(load)
        return load

    def evaluate(self, stage: str, cfg, formats: list[str], trained: bool = True, extra_tokens: int = 0) -> None:
        """Every eval split of `cfg` in each of `formats` (x2 with `eval.calculator: both`; the vote is free): a
        trained student writes its format's target length (+ `extra_tokens`), the untrained one to its limit."""
        e = cfg.eval
        n = sum(self.eval_problems.values()) * e.samples * (2 if e.calculator == "both" else 1)
        if e.calculator:
            self.notes.append("calculator decoding is planned as a plain pass (its cost on a GPU is not measured)")
        for fmt in formats:
            expected = TOKENS[fmt][1] + extra_tokens if trained else UNTRAINED_TOKENS
            self.generate(stage, n, expected, e.max_new_tokens, sampled=e.temperature > 0,
                          note=fmt if trained else f"{fmt}, untrained")

    # ------------------------------------------------------------------ what it costs

    def seconds_of(self, load: Load, speeds: Speeds) -> float:
        """Seconds of one load's compute (model loads are counted per stage: `seconds`)."""
        if load.kind == "train":
            return load.tokens / (speeds.train_full if load.full else speeds.train_lora)
        if load.sampled:
            return load.tokens / speeds.sample
        if speeds.eval_problems_per_s:  # a batch runs until its longest row stops: per problem, by token limit
            return load.sequences / speeds.eval_problems_per_s * load.max_new_tokens / speeds.eval_max_new_tokens
        return load.tokens / speeds.greedy

    def stages(self) -> list[str]:
        """The stages with student work, in order: each loads the student once."""
        return list(dict.fromkeys(x.stage for x in self.loads))

    def seconds(self, speeds: Speeds, startup: bool = True) -> float:
        """Estimated wall seconds of the whole recipe at `speeds`: its compute, a model load per stage and
        (`startup`) the process's start-up."""
        compute = sum(self.seconds_of(x, speeds) for x in self.loads)
        return compute + speeds.load_seconds * len(self.stages()) + (speeds.startup_seconds if startup else 0.0)

    def totals(self) -> dict:
        """Trainings, training examples and tokens, generated sequences and tokens, model loads."""
        train = [x for x in self.loads if x.kind == "train"]
        gen = [x for x in self.loads if x.kind == "generate"]
        return {"trainings": len(train), "train_examples": sum(x.examples for x in train),
                "train_tokens": sum(x.tokens for x in train), "sequences": sum(x.sequences for x in gen),
                "generated_tokens": sum(x.tokens for x in gen), "model_loads": len(self.stages())}
