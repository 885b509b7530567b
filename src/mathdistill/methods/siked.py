"""SIKeD (Adarsh et al., 2024): one student, several strategies, trained again on its own correct solutions.

    teach every strategy (verified against gold; L2M also checked for its sub-questions)
    iteration-0   data: the teacher's rows, each target starting with its strategy's tag, under one
                  neutral prompt (`thoughts.choice_prompt`) -> train -> eval
    iteration-i   sample: k per problem and strategy with iteration i-1's student, the tag prefilled
                  data: its correct samples (`keep`: one per problem and strategy, as the official code)
                  + the teacher's rows (`mixing`: per-strategy, as the official `create-mixed-data.py`:
                  the teacher's rows of strategy s for every problem the student did not solve in s),
                  alpha overall and per strategy -> train (`init: previous` continues the adapter, a new
                  optimizer and schedule; `base`: a new one) -> eval
    eval          the student chooses the strategy (it writes the tag; row siked-i<i>); the last
                  iteration also with each strategy forced (siked-i<N>:cot, ...)

Every step of every iteration is a stage of its scope (`iteration-<i>/...`), so a killed run resumes
where it stopped; sampling itself resumes per problem. The rows' train_* and sample_seconds add up
iterations 0..i (what that student cost). Tables: data and alpha per iteration; accuracy, alpha and
the strategies chosen per iteration; figure: their shares (the paper's histogram). Notes name the
offline stand-in teachers, and the paper's L2M strategy when a run replaces it. docs/methods.md maps
each step to the paper's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from pydantic import Field, field_validator, model_validator

from mathdistill.io import InputError, read_jsonl, write_json, write_jsonl
from mathdistill.methods import serving, steps
from mathdistill.methods.config import DistillConfig, Strict, known_formats
from mathdistill.methods.run import console


class SampleSettings(Strict):
    """The official `forced_strategy_inference.py`: vLLM SamplingParams(n=10, temperature=0.7, top_p=0.95,
    max_tokens=512)."""

    k: int = Field(10, ge=1, description="samples per training problem and strategy (official: 10)")
    temperature: float = Field(0.7, gt=0, description="official: 0.7")
    top_p: float = Field(0.95, gt=0, le=1, description="official: 0.95")
    max_new_tokens: int | None = Field(512, ge=1, description="official: 512; None: eval.max_new_tokens")
    batch_size: int | None = Field(None, ge=1, description="None: eval.batch_size")
    loop_stop: bool | None = Field(None, description="end a looping sample; None: eval.loop_stop")


class SIKeDConfig(DistillConfig):
    strategies: list[str] = Field(default_factory=lambda: ["cot", "pot", "l2m"], min_length=1,
                                  description="formats the student learns and chooses among (the paper's: cot, pot, "
                                              "l2m; l2m needs a live teacher)")
    iterations: int = Field(2, ge=0, description="self-training iterations after iteration 0 (2: iterations 0, 1, 2)")
    keep: Literal["one", "all_distinct"] = Field("one", description="own correct samples kept per problem and "
                                                 "strategy: the first (official), or every distinct one")
    mixing: Literal["per-strategy", "per-problem", "all"] = Field(
        "per-strategy", description="teacher rows added: of strategy s for the problems the student did not solve "
                                    "in s (per-strategy, the official adaptive mixing), only for the problems it "
                                    "solved in no strategy (per-problem), or all")
    init: Literal["previous", "base"] = Field("previous", description="each iteration continues the previous adapter "
                                              "(new optimizer and schedule), or trains a new one from the base")
    forced: bool = Field(True, description="also evaluate the last iteration with each strategy forced")
    sample: SampleSettings = SampleSettings()

    @field_validator("strategies")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        return known_formats(v)

    @field_validator("mixing", mode="before")
    @classmethod
    def _renamed(cls, v):
        if v == "adaptive":
            raise ValueError("mixing 'adaptive' is two rules now: per-strategy (the official code's adaptive mixing, "
                             "the default) or per-problem (mathdistill's rule before; docs/methods.md)")
        return v

    @model_validator(mode="after")
    def _strategies_are_the_formats(self):
        if "thoughts" in self.model_fields_set and self.thoughts != self.strategies:
            raise ValueError("thoughts: SIKeD's formats are its strategies; set strategies instead")
        self.thoughts = list(self.strategies)  # teachers are checked for these
        if self.data.calc_marks != "none":
            raise ValueError("data.calc_marks: SIKeD's rows do not take calculation marks (cot, etd, fdd, lorid do)")
        if self.eval.samples != 1 or self.eval.shots:
            raise ValueError("eval.samples must be 1 and eval.shots 0: the student answers once, zero-shot, in the "
                             "strategy it chooses")
        return self


def recipe(cfg: SIKeDConfig, run) -> list[dict]:
    problems = steps.train_problems(run, cfg)
    steps.teach(run, cfg, problems, cfg.strategies)
    teacher = [r for t in cfg.strategies for r in steps.rationales(run, t)]
    if "l2m" not in cfg.strategies:
        run.note(f"SIKeD strategies here: {', '.join(cfg.strategies)} (the paper's are CoT, PoT and L2M; offline "
                 "there is no L2M teacher)")
    if cfg.mixing != "per-strategy" or cfg.keep != "one":
        run.note(f"SIKeD data rule here: mixing {cfg.mixing}, keep {cfg.keep} (the official code: per-strategy, one)")
    stand_ins = [f"{t}: {cfg.teach.for_thought(t).describe(t)}" for t in cfg.strategies
                 if cfg.teach.for_thought(t).offline_stand_in]
    if stand_ins:
        run.note(f"Offline stand-ins (not a live teacher) wrote SIKeD's teacher data: {'; '.join(stand_ins)}")
    run.note("SIKeD rows' train_seconds/steps/tokens and sample_seconds add up iterations 0..i")
    rows, data_table, choice_table, hists = [], [], [], {}
    cost = {"seconds": 0.0, "steps": 0, "tokens": 0, "sample_seconds": 0.0}
    previous = None
    for i, it in steps.scopes(run, "iteration", cfg.iterations):
        if i:
            sampled = it.stage("sample", lambda: _sample(it, cfg, problems, previous))
            cost["sample_seconds"] += sum(s["seconds"] for s in sampled.values())
        data = it.stage("data", lambda: _data(it, cfg, teacher, own=i > 0))
        train = steps.train(it, cfg, init=previous if i and cfg.init == "previous" else None)
        for key, part in (("seconds", "seconds"), ("steps", "steps"), ("tokens", "tokens")):
            cost[key] += train[part] or 0
        previous = it.path("train", "student")
        extra = {"scope": f"iteration-{i}", "alpha": data["alpha"], "mixing": data["mixing"],
                 "alpha_per_strategy": {t: c["alpha"] for t, c in data["per_strategy"].items()},
                 "sample_seconds": round(cost["sample_seconds"], 1)}
        name = f"{cfg.method}-i{i}"
        forced = cfg.strategies if cfg.forced and i == cfg.iterations else []
        chosen = it.stage("eval", lambda: _evaluate(it, cfg, name, previous, [None], cost, extra))
        rows += chosen
        if forced:
            rows += it.stage("eval-forced", lambda: _evaluate(it, cfg, name, previous, forced, cost, extra))
        data_table.append({"iteration": i, **{k: data[k] for k in ("problems", "solved", "self_rows", "teacher_rows",
                                                                     "teacher_problems", "alpha")},
                           **{f"{k} {t}": v for t, c in data["per_strategy"].items() for k, v in c.items()}})
        for r in chosen:  # one row per eval dataset
            hists[(i, r["dataset"])] = r["strategies"]
            choice_table.append({"iteration": i, "dataset": r["dataset"], "n": r["n"], "accuracy": r["accuracy"],
                                 "alpha": data["alpha"], **r["strategies"]})
        run.add_table("SIKeD: training data per iteration (alpha = teacher share)", data_table)
        run.add_table("SIKeD: accuracy, alpha and the strategy the student chose, per iteration", choice_table)
        run.add_figure(_plot(hists, run.path("figures", "siked-strategies.png")),
                       "Strategy the student chose at inference (share of test problems), per iteration")
    return rows


def _sample(it, cfg: SIKeDConfig, problems, adapter_dir) -> dict:
    """k samples per problem in each strategy (its tag prefilled) with the previous student."""
    from mathdistill import thoughts
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.sample import sample

    model, tok, weights = steps.load_student(cfg.student.model, adapter_dir)
    prompts = [render_prompt(tok, thoughts.choice_prompt(p.question, cfg.strategies)) for p in problems]
    s, split = cfg.sample, cfg.data.train
    out = {}
    for t in cfg.strategies:
        res = sample(model, tok, problems, t, k=s.k, seed=cfg.seed, prompts=prompts,
                     **cfg.eval.generation(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                           batch_size=s.batch_size, loop_stop=s.loop_stop),
                     prefill=f"{thoughts.get(t).trigger}\n", weights=weights,
                     out_dir=it.path("sample", f"{split.dataset}-{split.split}", t))
        out[t] = {k: res.stats[k] for k in ("n", "k", "generated", "reused", "seconds", "generated_tokens",
                                            "sample_accuracy", "pass_at_k")}
    return out


def _data(it, cfg: SIKeDConfig, teacher: list[dict], own: bool) -> dict:
    """data/train.jsonl: own correct samples (none in iteration 0) mixed with the teacher's rows."""
    from mathdistill.student.selfdata import keep_correct, mix, training_rows

    split = cfg.data.train
    samples = {t: read_jsonl(it.path("sample", f"{split.dataset}-{split.split}", t, "samples.jsonl"))
               for t in cfg.strategies} if own else {}
    mine = keep_correct(samples, cfg.keep)
    mixed, stats = mix(mine, teacher, cfg.mixing if own else "all")
    rows = training_rows(mixed, cfg.strategies)
    if not rows:
        raise InputError(f"{it.dir}: no kept teacher rationales and no correct own samples for "
                         f"{', '.join(cfg.strategies)}: nothing to train on")
    write_jsonl(it.path("data", "train.jsonl"), rows)
    write_jsonl(it.path("data", "self.jsonl"), [r for r in mine if r["kept"]])
    per_thought = {t: sum(r["thought"] == t for r in rows) for t in cfg.strategies}
    summary = {"examples": len(rows), "per_thought": per_thought, **stats}
    write_json(it.path("data", "summary.json"), summary)
    return summary


def _evaluate(it, cfg: SIKeDConfig, name: str, adapter_dir, forced: list, cost: dict, extra: dict) -> list[dict]:
    """Rows for each eval split: the student's choice (None in `forced`) or each forced strategy."""
    from mathdistill.eval.chosen import evaluate_chosen

    e = cfg.eval
    model, tok, weights = steps.load_student(cfg.student.model, adapter_dir)
    rows = []
    for split in cfg.data.eval:
        ps = steps.problems(split, cfg.data.data_dir)
        for f in forced:
            res = evaluate_chosen(model, tok, ps, cfg.strategies, force=f, **e.generation(), seed=cfg.seed,
                                  weights=weights, dataset=split.dataset, split=split.split,
                                  out_dir=it.path("eval", split.dataset, f or "chosen"))
            row = steps.result_row(f"{name}:{f}" if f else name, f or "chosen", res.metrics, cost)
            rows.append({**row, **extra, "strategies": res.metrics["strategies"]})
            console.print(f"{split.dataset} {f or 'chosen'}: {res.metrics['accuracy']:.1%} of {res.metrics['n']} "
                                f"(strategies {res.metrics['strategies']})")
    return rows


def _plot(hists: dict, path):
    """Stacked bars: the share of each strategy chosen, one bar per (iteration, dataset)."""
    from mathdistill.report.plots import figure, save

    labels = [f"i{i}" + (f" {d}" if len({d for _, d in hists}) > 1 else "") for i, d in hists]
    names = list(next(iter(hists.values())))
    fig, ax = figure((max(4.0, 1.2 + 0.8 * len(hists)), 3.4))
    bottom = [0.0] * len(hists)
    for name in names:
        share = [100 * h[name] / max(sum(h.values()), 1) for h in hists.values()]
        ax.bar(labels, share, bottom=bottom, label=name)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_ylabel("% of test problems")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return save(fig, path)


def workload(cfg: SIKeDConfig, w) -> None:
    """Iteration 0 trains on the teacher's rows; iteration i samples k per problem and strategy, trains on about as
    many rows (own correct samples where it solves, the teacher's elsewhere) and evaluates the student's choice;
    the last iteration also with each strategy forced."""
    from mathdistill.workload import TOKENS

    n, s, e = w.train_problems, cfg.sample, cfg.eval
    chosen = sum(TOKENS[t][1] for t in cfg.strategies) // len(cfg.strategies)  # the strategy is the student's
    for i in range(cfg.iterations + 1):
        if i:
            for t in cfg.strategies:
                w.generate(f"iteration-{i}/sample", n * s.k, TOKENS[t][1], s.max_new_tokens or e.max_new_tokens,
                           sampled=True, note=t)
        w.train(f"iteration-{i}/train", {t: n * cfg.teach.samples for t in cfg.strategies}, cfg)
        w.generate(f"iteration-{i}/eval", sum(w.eval_problems.values()), chosen, e.max_new_tokens, note="chosen")
        if cfg.forced and i == cfg.iterations:
            w.evaluate(f"iteration-{i}/eval-forced", cfg, cfg.strategies)


#: the official training (fine-tuning/*/epoch*.yaml: LoRA r 16 / alpha 32, dropout 0, lr 2e-4, weight decay 0.01,
#: 5 warm-up steps, 3 epochs) and test inference (greedy, 1,024 new tokens); sequences of 512 tokens, not the
#: official 1,024 (docs/methods.md: as cot, etd, lorid and fdd, and rows that long are rare)
OFFICIAL = {"train": {"epochs": 3, "lr": 2e-4, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                      "weight_decay": 0.01, "warmup": 5, "max_seq_len": 512},
            "eval": {"max_new_tokens": 1024}}


# ----------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class Chosen:
    """A student that chooses its strategy (SIKeD): the choice prompt; `force` prefills a strategy's tag.
    The content is the student's output (with its tag); `format` the strategy it announced (None:
    none, scored as CoT, as `eval.chosen` scores it)."""

    strategies: tuple[str, ...]
    force: str | None = None
    adapter: str | None = None
    summary = "the student chooses its strategy"

    @property
    def formats(self) -> tuple[str, ...]:
        return (self.force,) if self.force else tuple(self.strategies)

    @property
    def streamable(self) -> bool:  # forced: the prefilled tag is not part of the generation
        return self.force is None

    def __call__(self, ctx: serving.Context, question: str) -> serving.Reply:
        from mathdistill import thoughts

        prefill = f"{thoughts.get(self.force).trigger}\n" if self.force else ""
        gen = ctx.generate([ctx.render(thoughts.choice_prompt(question, self.strategies)) + prefill],
                           adapter=self.adapter)[0]
        text = prefill + gen.texts[0]
        chosen = thoughts.detect(text)
        chosen = chosen if chosen in self.strategies else None
        found = ctx.extract(chosen or "cot", [thoughts.strip_tag(text)])[0]
        fmt = chosen or "cot"
        return serving.Reply(text, found.prediction, chosen, {fmt: found.prediction},
                             {fmt: found.error} if found.error else {}, ctx.finish_reason(gen),
                             {"strategy": chosen or "none"})


def serve(cfg: SIKeDConfig, run) -> serving.Served:
    """The last finished iteration: `siked-i<N>` the student's own choice of strategy (the choice prompt,
    `eval.chosen`), `siked-i<N>:<format>` with that strategy's tag prefilled."""
    from mathdistill.student.adapters import is_full_model

    i = serving.last_done(run, "iteration-")
    folder = run.path / f"iteration-{i}" / "train" / "student"
    if not serving.trained(folder):
        raise InputError(f"{run.path}: iteration-{i} finished but {folder} holds no adapter or model")
    name, strategies = f"{cfg.method}-i{i}", tuple(cfg.strategies)
    full = is_full_model(folder)  # a full fine-tune is the whole student
    adapter = None if full else "student"
    models: dict[str, Callable] = {name: Chosen(strategies, None, adapter)}
    models |= {f"{name}:{t}": Chosen(strategies, t, adapter) for t in strategies}
    return serving.Served(models, {} if full else {"student": folder}, model=str(folder) if full else None)
