"""The server's side of a served name: the loaded student shared by every request (`Engine`), one request's
view of it (`Context`), and what a run folder (or `--model`) is served as.

    served, cfg, run = served_run("runs/etd")   # Served(models={"etd": Vote(...), "etd:cot": Single("cot"), ...})
    reply = served.models["etd"](Context(engine), "Tom has 3 apples ...")   # Reply(content, answer, ...)

What each served name does with a question (its *inference*, `inference(ctx, question) -> Reply`) is the
method's own declaration (`Method.serve` in `methods.registry`; the types in `methods.serving`: Single, Vote,
Calculated, Served, Reply; LoRID's loop, FDD's last round and SIKeD's chosen strategy in their recipe files).
`Context` here is the `methods.serving.Context` an inference calls: it prompts the student the way
evaluation does (`ctx.prompt(thought, question)`: the format's trigger and instruction, the chat template,
the run's k-shot exemplars), generates through the engine's batcher (batched with every other request in
flight, `adapter=` picks one of the run's adapters per call) and gets answers out with the format's own
extraction (PoT executed in the sandbox, EoT solved by sympy; a program that hangs or attacks the sandbox
gives no answer and the reason in `errors`). A run evaluated with `eval.calculator` also serves
`<name>+calc` (`Calculated`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from mathdistill.io import InputError
from mathdistill.methods.config import EvalConfig
from mathdistill.methods.serving import Calculated, Served, family

_EVAL = EvalConfig()  # the evaluation defaults: a request's, when neither it nor the run says


class RequestError(Exception):
    """A request the server refuses: an OpenAI-style error with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Defaults:
    """Generation settings a request does not set: the run's evaluation settings (`Defaults.of(cfg)`); served
    with --model, `EvalConfig`'s defaults."""

    max_new_tokens: int = _EVAL.max_new_tokens
    temperature: float = _EVAL.temperature
    top_p: float = _EVAL.top_p
    samples: int = _EVAL.samples
    loop_stop: bool = _EVAL.loop_stop
    shots: int = _EVAL.shots
    data_dir: str | None = None
    batch_size: int = _EVAL.batch_size
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
    """One request's view of the engine: the `methods.serving.Context` inferences call. Counts the tokens it
    used (and, with calculator decoding, the values it forced: `interventions`)."""

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


def load_run_config(run_dir: str | Path):
    """(read-only run view `report.runs.Run`, its validated recipe config)."""
    from mathdistill.methods.registry import load_config
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
    """(Served, config, run view) of a run folder: as its method declares (`Method.serve`; by default
    `methods.serving.default_serve`); a run evaluated with `eval.calculator` also serves `<name>+calc`
    (`Calculated`). With results.json, only names that are result rows are served."""
    from mathdistill.methods.registry import METHODS

    run, cfg = load_run_config(run_dir)
    served = METHODS[cfg.method].serve(cfg, run)
    rows = {r.get("method") for r in run.rows}
    if cfg.eval.calculator:  # rows `<name>+calc` (contract 9): the same inference with calculator decoding
        served.models |= {f"{n}+calc": Calculated(inf) for n, inf in served.models.items()}
    if rows:
        kept = {n: inf for n, inf in served.models.items() if n in rows}
        if not kept:
            raise InputError(f"{run.path}: none of the result rows ({', '.join(sorted(map(str, rows)))}) is a name "
                             f"the method '{cfg.method}' is served under ({', '.join(served.models)}); a method whose "
                             "inference is not one format or a vote over formats declares how it is served "
                             "(`Method.serve`, docs/adding-a-method.md)")
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
