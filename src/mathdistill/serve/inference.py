"""What a served model name does with a question: each method's inference over the loaded student.

    served = served_run("runs/etd")      # Served(models={"etd": Vote(...), "etd:cot": Single("cot"), ...})
    reply = served.models["etd"](ctx, "Tom has 3 apples ...")   # Reply(content, answer, format, answers, ...)

An *inference* is a callable `inference(ctx, question) -> Reply`. It prompts the student the way
evaluation does (`ctx.prompt(thought, question)`: the format's trigger and instruction, the chat
template, the run's k-shot exemplars), generates through `ctx.generate` (batched with every other
request in flight, `adapter=` picks one of the run's adapters per call) and gets answers out with
`ctx.extract` (the format's own extraction: PoT executed in the sandbox, EoT solved by sympy; a
program that hangs or attacks the sandbox gives no answer and the reason in `errors`).

Built in: `Single(thought)` (one format: the `cot`, `etd:pot`, ... rows) and `Vote(thoughts)` (every
format, majority vote by `answers.vote` with the run's preference: the `etd` row). A method whose
inference is something else says so with its `Method.serve` hook, which returns a `Served` (see
docs/adding-a-method.md); LoRID (its loop), FDD and SIKeD (last finished round / iteration) have
theirs in `serve.methods`; methods without one are served by `default_serve`:
the student in train/student answering in `cfg.thoughts` (+ their vote), as `steps.evaluate` evaluates it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mathdistill.io import InputError


class RequestError(Exception):
    """A request the server refuses: an OpenAI-style error with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Reply:
    """What an inference answers: `content` (the chosen rationale) goes in the message; the rest in
    the choice's `mathdistill` field."""

    content: str
    answer: str | None  # the final answer (None: no format gave one)
    format: str | None  # the format whose rationale is `content`
    answers: dict[str, str | None]  # each format's answer (a list when it was sampled several times)
    errors: dict[str, str] = field(default_factory=dict)  # why a format gave no answer
    finish_reason: str = "stop"  # of the generation in `content`: stop | length
    extra: dict = field(default_factory=dict)  # anything else a method reports (LoRID: the loop's rounds)

    def info(self) -> dict:
        out = {"answer": self.answer, "format": self.format, "answers": self.answers}
        if self.errors:
            out["errors"] = self.errors
        return out | self.extra


@dataclass(frozen=True)
class Defaults:
    """Generation settings a request does not set: the run's evaluation settings."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    samples: int = 1
    loop_stop: bool = True
    shots: int = 0
    data_dir: str | None = None
    batch_size: int = 16
    calculator: bool = False  # calculator decoding for every completion (`serve --calculator`)

    @classmethod
    def of(cls, cfg) -> "Defaults":
        e = cfg.eval
        return cls(e.max_new_tokens, e.temperature, e.top_p, e.samples, e.loop_stop, e.shots, cfg.data.data_dir,
                   e.batch_size)


@dataclass(frozen=True)
class Options:
    """What one request asks for (None: the served run's default)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


class Engine:
    """The loaded student shared by every request: tokenizer, batcher, exemplars, formats."""

    def __init__(self, model, tokenizer, batcher, defaults: Defaults, merged: Sequence[str] = ()):
        self.model, self.tokenizer, self.batcher, self.defaults = model, tokenizer, batcher, defaults
        self.merged = set(merged)  # adapter names merged into the weights: generate them with adapter=None
        cfg = getattr(model, "config", None)
        self.context = getattr(cfg, "max_position_embeddings", None) or 2048
        self._lock = threading.Lock()
        self._exemplars: dict[str, list] = {}
        self._formats: dict = {}

    def exemplars(self, thought: str) -> list:
        with self._lock:
            if thought not in self._exemplars:
                from mathdistill.eval import few_shot_exemplars

                self._exemplars[thought] = few_shot_exemplars(thought, self.defaults.shots, self.defaults.data_dir)
            return self._exemplars[thought]

    def format(self, thought: str):
        with self._lock:
            if thought not in self._formats:
                from mathdistill import thoughts

                self._formats[thought] = thoughts.get(thought)
            return self._formats[thought]


class Context:
    """One request's view of the engine; inferences call these. Counts the tokens it used (and,
    with calculator decoding, the values it forced: `interventions`)."""

    def __init__(self, engine: Engine, options: Options = Options(), on_text: Callable[[str], None] | None = None):
        self.engine, self.options = engine, options
        self.on_text = on_text  # set: the first single-prompt generation streams its text to it
        self.tokenizer = engine.tokenizer
        self.prompt_tokens = self.completion_tokens = self.interventions = 0
        self.calculator = engine.defaults.calculator  # set by a `+calc` name (`Calculated`) for its request
        self._calls = 0
        self._budget: dict[int, int] = {}

    def prompt(self, thought: str, question: str) -> str:
        """The prompt evaluation gives the student for `question` in `thought` (`eval.build_prompts`)."""
        from mathdistill.eval import build_prompts

        return build_prompts(self.tokenizer, thought, [question], self.engine.exemplars(thought))[0]

    def render(self, user: str) -> str:
        """Any user message through the chat template (`student.chat.render_prompt`)."""
        from mathdistill.student.chat import render_prompt

        return render_prompt(self.tokenizer, user)

    def generate(self, prompts: Sequence[str], adapter: str | None = None, samples: int = 1,
                 temperature: float | None = None, top_p: float | None = None, max_tokens: int | None = None):
        """`student.generate.generate` on `prompts` (rendered), batched with other requests' calls of
        the same settings; settings the caller leaves out come from the request, then the run.
        Returns one `Generation` per prompt."""
        from mathdistill.student.chat import prompt_token_ids
        from mathdistill.student.generate import derive_seed

        e, o, d = self.engine, self.options, self.engine.defaults
        lengths = [len(prompt_token_ids(self.tokenizer, p)) for p in prompts]
        asked = max_tokens or o.max_tokens
        budget = asked or d.max_new_tokens
        if max(lengths) + budget > e.context:
            if asked is not None or max(lengths) >= e.context:
                raise RequestError(400, f"This model's maximum context length is {e.context} tokens. However, you "
                                   f"requested {max(lengths) + budget} tokens ({max(lengths)} in the prompt, {budget} "
                                   "for the completion). Please reduce the length of the messages or completion.",
                                   param="messages", code="context_length_exceeded")
            budget = e.context - max(lengths)  # the run's default budget, cut to what the context leaves
        temperature = o.temperature if temperature is None else temperature
        temperature = d.temperature if temperature is None else temperature
        top_p = o.top_p if top_p is None else top_p
        top_p = d.top_p if top_p is None else top_p
        seeds = None
        if temperature > 0 and o.seed is not None:
            seeds = [derive_seed(o.seed, self._calls, i) for i in range(len(prompts))]
        self._calls += 1
        settings = {"adapter": None if adapter in e.merged else adapter, "max_new_tokens": budget,
                    "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0, "num_samples": samples,
                    "stop": tuple(o.stop), "loop_stop": d.loop_stop}
        if self.calculator:  # only then: the settings (and so the batching groups) are as before when off
            settings["calculator"] = True
        if self.on_text is not None and len(prompts) == 1 and samples == 1:  # streamed (once per request)
            gens, self.on_text = e.batcher.submit(prompts, settings, seeds, on_text=self.on_text).result(), None
        else:
            gens = e.batcher.generate(list(prompts), settings, seeds)
        self.prompt_tokens += sum(lengths)
        self.completion_tokens += sum(sum(g.num_tokens) for g in gens)
        self.interventions += sum(sum(g.interventions) for g in gens)
        for g in gens:
            self._budget[id(g)] = budget
        return gens

    def finish_reason(self, generation, k: int = 0) -> str:
        """"length" when completion k of `generation` used up its token budget, else "stop"."""
        full = generation.num_tokens[k] >= self._budget.get(id(generation), float("inf"))
        return "length" if full and not generation.looped[k] else "stop"

    def extract(self, thought: str, texts: Sequence[str]):
        """The answers in `texts` by `thought`'s own extraction (PoT in the sandbox, EoT solved):
        `Extracted(prediction, error)` each."""
        return self.engine.format(thought).extract_batch(list(texts))


def _answers(ctx: Context, thought: str, gen) -> tuple[list[str | None], list[str | None]]:
    found = ctx.extract(thought, gen.texts)
    return [x.prediction for x in found], [x.error for x in found]


def _pick(predictions: list[str | None]) -> int:
    """Index of the majority answer among samples (ties: the earliest), as evaluation picks it."""
    from mathdistill.answers import vote

    pred, _ = vote({"samples": predictions}, ["samples"])
    return predictions.index(pred) if pred is not None else 0


@dataclass(frozen=True)
class Single:
    """The student answers in one format (`samples` > 1: the majority of that many samples)."""

    thought: str
    adapter: str | None = None
    samples: int = 1
    summary = "one format"

    @property
    def formats(self) -> tuple[str, ...]:
        return (self.thought,)

    @property
    def streamable(self) -> bool:  # its content is one generation, streamed as it is decoded
        return self.samples == 1

    def __call__(self, ctx: Context, question: str) -> Reply:
        gen = ctx.generate([ctx.prompt(self.thought, question)], adapter=self.adapter, samples=self.samples)[0]
        preds, errors = _answers(ctx, self.thought, gen)
        k = _pick(preds)
        answers = {self.thought: preds[k] if self.samples == 1 else preds}
        return Reply(gen.texts[k], preds[k], self.thought, answers, {self.thought: errors[k]} if errors[k] else {},
                     ctx.finish_reason(gen, k))


@dataclass(frozen=True)
class Vote:
    """The student answers in every format; the majority answer wins (ties: `preference` order), and
    the content is the rationale of the format that gave it (ETD's inference, `eval.vote_formats`)."""

    thoughts: tuple[str, ...]
    preference: tuple[str, ...] = ()
    adapter: str | None = None
    samples: int = 1
    summary = "majority vote over formats"

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self.thoughts)

    def __call__(self, ctx: Context, question: str) -> Reply:
        from mathdistill.answers import is_equivalent, vote

        prompts = [ctx.prompt(t, question) for t in self.thoughts]
        gens = dict(zip(self.thoughts, ctx.generate(prompts, adapter=self.adapter, samples=self.samples)))
        found = {t: _answers(ctx, t, g) for t, g in gens.items()}
        pred, winner = vote({t: preds for t, (preds, _) in found.items()}, self.preference or self.thoughts)
        chosen = winner or self.thoughts[0]
        k = next((i for i, x in enumerate(found[chosen][0]) if x is not None and is_equivalent(x, pred)), 0)
        answers = {t: preds[0] if self.samples == 1 else preds for t, (preds, _) in found.items()}
        errors = {t: errs[0] for t, (preds, errs) in found.items() if preds[0] is None and errs[0]}
        rationales = {t: g.texts[0] for t, g in gens.items() if t != chosen}
        return Reply(gens[chosen].texts[k], pred, winner, answers, errors, ctx.finish_reason(gens[chosen], k),
                     {"rationales": rationales})


@dataclass(frozen=True)
class Calculated:
    """`inner` with calculator decoding on for its request: a row `<name>+calc` (`eval.calculator`) is
    served as `<name>`'s inference with every arithmetic value computed and forced."""

    inner: Callable

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(getattr(self.inner, "formats", ()))

    @property
    def streamable(self) -> bool:
        return bool(getattr(self.inner, "streamable", False))

    @property
    def summary(self) -> str:
        return f"{getattr(self.inner, 'summary', '')}, calculator decoding"

    def __call__(self, ctx: Context, question: str) -> Reply:
        ctx.calculator = True
        return self.inner(ctx, question)


@dataclass
class Served:
    """How a run is served: `models` maps each served name (a result-row name, contract 9) to its
    inference; `adapters` ({name: folder}) are loaded on the student for it (one adapter is merged into
    the weights unless `merge` is False; several stay separate, chosen per call by name); `model`
    replaces the run's student (e.g. a fully fine-tuned folder)."""

    models: dict[str, Callable]
    adapters: dict[str, Path] = field(default_factory=dict)
    merge: bool = True
    model: str | None = None


def family(name: str, thoughts: Sequence[str], vote: bool = True, preference: Sequence[str] = (),
           adapter: str | None = None, samples: int = 1) -> dict[str, Callable]:
    """The names `steps.evaluate` gives rows, with their inferences: `name` for one format or the vote
    of several, `name:<format>` for each of several."""
    thoughts = list(thoughts)
    if len(thoughts) == 1:
        return {name: Single(thoughts[0], adapter, samples)}
    out = {name: Vote(tuple(thoughts), tuple(preference), adapter, samples)} if vote else {}
    return out | {f"{name}:{t}": Single(t, adapter, samples) for t in thoughts}


def trained(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()


def default_serve(cfg, run) -> Served:
    """The student of train/student (when the method trains one) in `cfg.thoughts` (+ the vote when
    `eval.vote`), and the untrained student under `base` names when the run evaluated it."""
    from mathdistill.methods.config import DistillConfig
    from mathdistill.student.generate import BASE

    vote, preference = getattr(cfg.eval, "vote", False), getattr(cfg.eval, "preference", ())
    models, adapters, model = {}, {}, None
    if isinstance(cfg, DistillConfig):
        folder = run.path / "train" / "student"
        if not trained(folder):
            raise InputError(f"{run.path}: nothing trained to serve yet ({folder} holds no adapter or model); "
                             "run the recipe to the end of its train stage")
        if (folder / "adapter_config.json").is_file():
            adapters["student"] = folder
        else:
            model = str(folder)  # a full fine-tune
        models |= family(cfg.method, cfg.thoughts, vote, preference, "student" if adapters else None, cfg.eval.samples)
    if cfg.method == "base" or cfg.eval.base:
        if model is not None:
            raise InputError(f"{run.path}: a fully fine-tuned student and the base student cannot be served together")
        models |= family("base", cfg.thoughts, vote and cfg.method != "base", preference,
                         BASE if adapters else None, cfg.eval.samples)
    return Served(models, adapters, merge=not (adapters and cfg.eval.base), model=model)


def load_run_config(run_dir: str | Path):
    """(read-only run view `report.runs.Run`, its validated recipe config)."""
    from mathdistill.methods.config import load_config
    from mathdistill.report.runs import load_run

    run = load_run(run_dir)
    if not run.config:
        raise InputError(f"{run.path}: no config.yaml in the run folder (written by `mathdistill run`)")
    try:
        cfg = load_config(None, base=run.config)
    except InputError as e:
        raise InputError(f"{run.path / 'config.yaml'}: {e}") from None
    return run, cfg


def served_run(run_dir: str | Path) -> tuple[Served, object, object]:
    """(Served, config, run view) of a run folder: the method's `serve` hook (`serve.methods`: LoRID,
    FDD, SIKeD), else `default_serve`; a run evaluated with `eval.calculator` also serves `<name>+calc`
    (`Calculated`). With results.json, only names that are result rows are served."""
    from mathdistill.methods import METHODS
    from mathdistill.serve.methods import serve_hook

    run, cfg = load_run_config(run_dir)
    served = serve_hook(METHODS[cfg.method])(cfg, run)
    rows = {r.get("method") for r in run.rows}
    if cfg.eval.calculator:  # rows `<name>+calc` (contract 9): the same inference with calculator decoding
        served.models |= {f"{n}+calc": Calculated(inf) for n, inf in served.models.items()}
    if rows:
        kept = {n: inf for n, inf in served.models.items() if n in rows}
        if not kept:
            raise InputError(f"{run.path}: none of the result rows ({', '.join(sorted(map(str, rows)))}) is a name "
                             f"the method '{cfg.method}' is served under ({', '.join(served.models)}); a method whose "
                             "inference is not one format or a vote over formats says how it is served with "
                             "`Method.serve` (docs/adding-a-method.md)")
        served.models = kept
    if not served.models:
        raise InputError(f"{run.path}: nothing to serve")
    return served, cfg, run


def model_cards(names, run=None, model: str | None = None) -> dict[str, dict]:
    """What /v1/models says of each served name besides its inference: the base model (its public provenance,
    no path of this machine) and where its training data came from (contract 9: the result row's teacher,
    offline_stand_in and teacher_note; `methods.provenance`). Served from --model/--adapter: not recorded."""
    from mathdistill.methods.provenance import FIELDS
    from mathdistill.models import provenance, public_provenance

    if run is not None:
        base = public_provenance(run.student or {"name": model or ""})
        rows = {}
        for r in run.rows:
            rows.setdefault(r.get("method"), r)
        return {n: {"base_model": base, "run": run.path.name,
                    "training_data": {k: rows.get(n, {}).get(k) for k in FIELDS}} for n in names}
    base = public_provenance(provenance(model))
    unknown = {"teacher": None, "offline_stand_in": None,
               "teacher_note": "not recorded: served with --model/--adapter, not from a run folder"}
    return {n: {"base_model": base, "training_data": unknown} for n in names}


def served_model(model: str, adapter: str | Path | None, thoughts: Sequence[str], name: str = "student") -> Served:
    """`--model M [--adapter A]`: `name` (one format, or the vote of several) and `name:<format>` each."""
    from mathdistill.eval import check_thought

    thoughts = [check_thought(t) for t in thoughts]
    if len(set(thoughts)) != len(thoughts):
        raise InputError(f"--thought: a format is listed twice ({', '.join(thoughts)})")
    adapters = {"student": Path(adapter)} if adapter is not None else {}
    return Served(family(name, thoughts, True, (), "student" if adapters else None), adapters)
