"""How the methods whose inference is not one format or a vote are served (`serve_hook(cfg.method)`).

    lorid          LoRID's consistency loop (`eval.consistency.consistency_loop`) over the run's three
                   adapters ir, kg, dr kept apart on one base: IR and KG -> DR until an IR and a DR
                   answer agree; the content is the agreed DR rationale (else the fallback's)
    lorid:ir       the Intuitive Reasoner alone, greedy;   lorid:dr: KG then DR, greedy
    fdd-r<N>...    the last finished FDD round (its student, on the round's base when it retrained
                   from the previous one), as `steps.evaluate` evaluated it
    siked-i<N>     the last finished SIKeD iteration: the student chooses its strategy (the choice
                   prompt, `eval.chosen`); siked-i<N>:<format> with that strategy's tag prefilled

The hooks live here (not on each `Method`) so that serving stays in the serve package; a method that
sets `Method.serve` itself overrides its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mathdistill.io import InputError
from mathdistill.serve.inference import Context, Reply, Served, default_serve, family, trained
from mathdistill.student.adapters import is_full_model


def last_done(run, prefix: str) -> int:
    """The number of the last finished scope `<prefix><i>` of the run (InputError when none is)."""
    done = [int(s.name[len(prefix):]) for s in run.scopes
            if s.name.startswith(prefix) and s.name[len(prefix):].isdigit() and s.status == "done"]
    if not done:
        raise InputError(f"{run.path}: no {prefix}<i> scope has finished yet; nothing trained to serve")
    return max(done)


# ----------------------------------------------------------------------------- LoRID


@dataclass(frozen=True)
class LoRID:
    """LoRID's inference: `role` None is the loop; "ir" the IR alone; "dr" KG then DR (greedy).
    `loop` is the run's `LoopConfig` (iterations, agreement, fallback, sampling per role)."""

    loop: object
    role: str | None = None
    summary = "LoRID consistency loop (IR, KG -> DR until they agree)"
    formats = ("cot",)
    streamable = False

    def _role(self, ctx: Context, role: str, question: str, t: int, knowledge: str | None = None) -> tuple[str, object]:
        from mathdistill.methods.lorid import KNOWLEDGE

        if role == "ir":
            prompt = ctx.prompt("cot", question)
        elif role == "kg":
            prompt = ctx.render(KNOWLEDGE.student_prompt(question))
        else:
            prompt = ctx.render(KNOWLEDGE.reasoning_prompt(question, knowledge, "cot"))
        greedy = t == 1 and self.loop.first_greedy
        s = getattr(self.loop, role)
        gen = ctx.generate([prompt], adapter=role, temperature=0.0 if greedy else s.temperature, top_p=s.top_p,
                           max_tokens=self.loop.knowledge_max_new_tokens if role == "kg" else None)[0]
        return gen.texts[0], gen

    def _answer(self, ctx: Context, text: str):
        return ctx.extract("cot", [text])[0]

    def __call__(self, ctx: Context, question: str) -> Reply:
        if self.role is not None:
            return self._greedy(ctx, question)
        from mathdistill.data import Problem
        from mathdistill.eval.consistency import consistency_loop

        last: dict = {}

        def solve(role: str, t: int, knowledge=None) -> tuple[str, str | None]:
            text, gen = self._role(ctx, role, question, t, knowledge)
            found = self._answer(ctx, text)
            last[(role, t)] = (gen, found.error)
            return text, found.prediction

        res = consistency_loop(
            [Problem("request", question, "0", "request")],  # the gold is not used for the reply
            ir=lambda ps, t: [solve("ir", t)], kg=lambda ps, t: [self._role(ctx, "kg", question, t)[0]],
            dr=lambda ps, k, t: [solve("dr", t, k[0])], max_iterations=self.loop.max_iterations,
            agreement=self.loop.agreement, fallback=self.loop.fallback)
        row = res.rows[0]
        role, t = ("dr", row["resolved_at"]) if row["resolved"] else ("ir", 1)
        gen, error = last[(role, t)]
        errors = {} if row["prediction"] is not None or not error else {"cot": error}
        return Reply(row["output"], row["prediction"], "cot", {"ir": row["ir"], "dr": row["dr"]}, errors,
                     ctx.finish_reason(gen),
                     {"iterations": row["iterations"], "resolved": row["resolved"], "knowledge": row["knowledge"][-1]})

    def _greedy(self, ctx: Context, question: str) -> Reply:
        extra = {}
        if self.role == "dr":
            knowledge = self._role(ctx, "kg", question, 1)[0]
            extra = {"knowledge": knowledge}
            text, gen = self._role(ctx, "dr", question, 1, knowledge)
        else:
            text, gen = self._role(ctx, "ir", question, 1)
        found = self._answer(ctx, text)
        return Reply(text, found.prediction, "cot", {"cot": found.prediction},
                     {"cot": found.error} if found.error else {}, ctx.finish_reason(gen), extra)


def serve_lorid(cfg, run) -> Served:
    from mathdistill.methods.lorid import ROLES

    adapters = {r: run.path / "train" / r for r in ROLES}
    missing = [str(f) for f in adapters.values() if not trained(f)]
    if missing:
        raise InputError(f"{run.path}: LoRID's adapters are not all trained yet ({', '.join(missing)} missing)")
    return Served({cfg.method: LoRID(cfg.loop), f"{cfg.method}:ir": LoRID(cfg.loop, "ir"), f"{cfg.method}:dr": LoRID(cfg.loop, "dr")},
                  adapters, merge=False)


# ----------------------------------------------------------------------------- FDD


def serve_fdd(cfg, run) -> Served:
    from mathdistill.methods.fdd import family as fdd_name

    i = last_done(run, "round-")
    scope = run.path / f"round-{i}"
    folder = scope / "train" / "student"
    if not trained(folder):
        raise InputError(f"{run.path}: round-{i} finished but {folder} holds no adapter or model")
    if is_full_model(folder):  # a full fine-tune is the whole student
        models = family(f"{fdd_name(cfg.thoughts)}-r{i}", cfg.thoughts, cfg.eval.vote, cfg.eval.preference, None,
                        cfg.eval.samples)
        return Served(models, {}, model=str(folder))
    model = str(scope / "init") if cfg.retrain_from == "previous" and (scope / "init" / "config.json").is_file() else None
    models = family(f"{fdd_name(cfg.thoughts)}-r{i}", cfg.thoughts, cfg.eval.vote, cfg.eval.preference, "student",
                    cfg.eval.samples)
    return Served(models, {"student": folder}, model=model)


# ----------------------------------------------------------------------------- SIKeD


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

    def __call__(self, ctx: Context, question: str) -> Reply:
        from mathdistill import thoughts

        prefill = f"{thoughts.get(self.force).trigger}\n" if self.force else ""
        gen = ctx.generate([ctx.render(thoughts.choice_prompt(question, self.strategies)) + prefill],
                           adapter=self.adapter)[0]
        text = prefill + gen.texts[0]
        chosen = thoughts.detect(text)
        chosen = chosen if chosen in self.strategies else None
        found = ctx.extract(chosen or "cot", [thoughts.strip_tag(text)])[0]
        fmt = chosen or "cot"
        return Reply(text, found.prediction, chosen, {fmt: found.prediction},
                     {fmt: found.error} if found.error else {}, ctx.finish_reason(gen), {"strategy": chosen or "none"})


def serve_siked(cfg, run) -> Served:
    i = last_done(run, "iteration-")
    folder = run.path / f"iteration-{i}" / "train" / "student"
    if not trained(folder):
        raise InputError(f"{run.path}: iteration-{i} finished but {folder} holds no adapter or model")
    name, strategies = f"{cfg.method}-i{i}", tuple(cfg.strategies)
    full = is_full_model(folder)  # a full fine-tune is the whole student
    adapter = None if full else "student"
    models: dict[str, Callable] = {name: Chosen(strategies, None, adapter)}
    models |= {f"{name}:{t}": Chosen(strategies, t, adapter) for t in strategies}
    return Served(models, {} if full else {"student": folder}, model=str(folder) if full else None)


HOOKS: dict[str, Callable] = {"lorid": serve_lorid, "fdd": serve_fdd, "siked": serve_siked}


def serve_hook(method) -> Callable:
    """`Method.serve` if the method sets one, else its entry here, else `default_serve`."""
    return method.serve or HOOKS.get(method.name) or default_serve
