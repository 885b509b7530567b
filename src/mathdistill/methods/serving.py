"""How a method's run is served: what each served name does with one question (`mathdistill serve RUN_DIR`).

    served = default_serve(cfg, run)   # Served(models={"etd": Vote(...), "etd:cot": Single("cot"), ...}, adapters=...)
    reply = served.models["etd"](ctx, "Tom has 3 apples ...")   # Reply(content, answer, format, answers, ...)

A method declares its serving with the method (`Method.serve` in `methods.registry`: `serve(cfg, run) ->
Served`, where `run` is the read-only view of the run folder, `report.runs.load_run`). Those without one are
served by `default_serve`: the student of train/student answering in `cfg.thoughts` (+ their vote), as
`steps.evaluate` evaluates it. LoRID (its loop), FDD (the last finished round) and SIKeD (the student's own
choice of strategy) declare theirs in their recipe files, from the pieces here.

An *inference* is a callable `inference(ctx, question) -> Reply`. `ctx` is a `Context`: it prompts the
student the way evaluation does (`ctx.prompt(thought, question)`), generates (`ctx.generate`, batched with
every other request in flight, `adapter=` picks one of the run's adapters per call) and gets answers out
(`ctx.extract`: PoT executed in the sandbox, EoT solved by sympy). The server (`mathdistill.serve`) gives
every request its context; these types live here, below the server, so that recipe files can declare how
they are served without importing it.

Built in: `Single(thought)` (one format: the `cot`, `etd:pot`, ... rows), `Vote(thoughts)` (every format,
majority vote by `answers.vote` with the run's preference: the `etd` row) and `Calculated(inner)` (`inner`
with calculator decoding: the `<row>+calc` rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from mathdistill.io import InputError


class Context(Protocol):
    """What an inference may ask of the request it answers (the server's `serve.inference.Context`)."""

    calculator: bool  # calculator decoding for this request's generations

    def prompt(self, thought: str, question: str) -> str:
        """The prompt evaluation gives the student for `question` in `thought` (trigger, chat template, the
        run's k-shot exemplars)."""

    def render(self, user: str) -> str:
        """Any user message through the chat template."""

    def generate(self, prompts: Sequence[str], adapter: str | None = None, samples: int = 1,
                 temperature: float | None = None, top_p: float | None = None, max_tokens: int | None = None) -> list:
        """One `student.generate.Generation` per prompt (`.texts`, `.num_tokens`, ...); settings left out come from
        the request, then the run."""

    def finish_reason(self, generation, k: int = 0) -> str:
        """"length" when completion k of `generation` used up its token budget, else "stop"."""

    def extract(self, thought: str, texts: Sequence[str]) -> list:
        """The answers in `texts` by `thought`'s own extraction: `thoughts.Extracted(prediction, error)` each."""


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
    """Whether a training finished into `folder` (an adapter or a whole model)."""
    return (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()


def last_done(run, prefix: str) -> int:
    """The number of the last finished scope `<prefix><i>` of the run (InputError when none is): the round or
    iteration a method with scopes (`steps.scopes`) serves."""
    done = [int(s.name[len(prefix):]) for s in run.scopes
            if s.name.startswith(prefix) and s.name[len(prefix):].isdigit() and s.status == "done"]
    if not done:
        raise InputError(f"{run.path}: no {prefix}<i> scope has finished yet; nothing trained to serve")
    return max(done)


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

