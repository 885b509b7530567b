"""LoRID (Li et al., 2025): three LoRA adapters on one student, and a consistency loop between them.

    teach cot (verified) + knowledge (teacher, or recorded plans as an offline stand-in)
    -> train ir: question -> CoT;  kg: question -> knowledge;  dr: question + knowledge -> CoT
       (one `train-<role>` stage each, standard PEFT folders train/<role>/; IR and DR targets alike,
       calculation marks included when `data.calc_marks` asks for them)
    -> one base with the three adapters (`load_with_adapters`), the adapter chosen per call
    -> greedy IR (`lorid:ir`), greedy KG -> DR (`lorid:dr`), the loop (`lorid`): IR, KG and DR sampled
       for the unresolved problems only until an IR and a DR answer agree (`eval.consistency`), scored
       on its one answer (`lorid`) and as the official code scores it, right when any answer IR and DR
       agree on is the gold (`lorid:any`)

`loop.preset: paper` is the official protocol (github Xinhe-Li/LoRID, examples/gsm8k/*/predict.sh,
src/predict.py): every iteration sampled at temperature 1.5 / top-p 0.9, up to 20 iterations, a problem
left unresolved counted wrong. `greedy-first` is what mathdistill did before (a greedy first iteration
that is lorid:ir / lorid:dr itself, then temperature 0.7, a majority vote at the limit). docs/methods.md
has every difference. Besides the paper's code: no merged copies of the base, the accuracy of every
budget 1..max from one run (table + figure), a cached and resumable teacher, and resumable sampling.
Served (`serve`, `LoRID`) as it is evaluated: each role asked the same way (`role_message`, `role_settings`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mathdistill import thoughts
from mathdistill.methods import serving, steps
from mathdistill.methods.config import PLANS, DistillConfig, Strict, require_teacher_without_plans
from mathdistill.thoughts.knowledge import Knowledge

ROLES = ("ir", "kg", "dr")
#: the paper's 5 epochs with the adapter measured for the 576-wide student (docs/methods.md: LoRA r 64 / alpha 128 on
#: every linear layer at lr 3e-4 had the lowest held-out loss; the paper's r 512 / alpha 1024 on q, v at lr 5e-5 exceeds
#: the rank of those matrices here)
TRAIN = {"train": {"epochs": 5, "lr": 3e-4, "lora_r": 64, "lora_alpha": 128, "max_seq_len": 512}}
#: how the rows `lorid` and `lorid:any` score the loop (their `scoring` field)
ONE = "one answer: the agreed one (or the fallback's) equals the gold"
ANY = "any agreed answer: right when any answer IR and DR agree on equals the gold (the LoRID code's score)"
KNOWLEDGE = Knowledge()


#: loop.preset -> what it sets (keys left unset in a recipe); `paper`: the official predict.sh / predict.py
PRESETS = {
    "paper": {"first_greedy": False, "fallback": "abstain", "temperature": 1.5, "top_p": 0.9},
    "greedy-first": {"first_greedy": True, "fallback": "majority", "temperature": 0.7, "top_p": 0.9},
}


class RoleSampling(Strict):
    temperature: float | None = Field(None, gt=0, description="sampling temperature; None: the preset's (paper 1.5, "
                                                                "greedy-first 0.7)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling; None: the preset's (0.9)")


class LoopConfig(Strict):
    preset: Literal["paper", "greedy-first"] = Field(
        "paper", description="paper: every iteration sampled (T 1.5, top-p 0.9), unresolved = wrong (the LoRID "
                             "code); greedy-first: a greedy first iteration, then T 0.7, majority at the limit "
                             "(mathdistill before)")
    max_iterations: int = Field(20, ge=1, description="IR + KG -> DR rounds at most (paper: 20)")
    first_greedy: bool | None = Field(None, description="the first iteration decodes greedily (it is then lorid:ir / "
                                                        "lorid:dr itself); None: the preset's")
    agreement: Literal["any", "same-iteration"] = Field(
        "any", description="any: any IR answer so far equals any DR answer so far (the LoRID code); same-iteration")
    fallback: Literal["abstain", "ir", "majority"] | None = Field(
        None, description="one answer at the limit: abstain (paper: wrong), ir (IR's first), majority (ties: IR's "
                          "first); None: the preset's")
    ir: RoleSampling = Field(default_factory=RoleSampling)
    kg: RoleSampling = Field(default_factory=RoleSampling)
    dr: RoleSampling = Field(default_factory=RoleSampling)
    knowledge_max_new_tokens: int = Field(128, ge=1, description="token limit of the knowledge generator")

    @model_validator(mode="after")
    def _preset(self):
        """Fill what the recipe left unset from the preset, so the recorded config says what ran."""
        p = PRESETS[self.preset]
        if self.first_greedy is None:
            self.first_greedy = p["first_greedy"]
        if self.fallback is None:
            self.fallback = p["fallback"]
        for role in (self.ir, self.kg, self.dr):
            role.temperature = p["temperature"] if role.temperature is None else role.temperature
            role.top_p = p["top_p"] if role.top_p is None else role.top_p
        return self


class LoRIDConfig(DistillConfig):
    plans: str | None = Field(PLANS, description="recorded plan-only rationales standing in for the teacher's knowledge "
                                                  "(offline); null: ask teach.per_thought.knowledge")
    loop: LoopConfig = LoopConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.thoughts != ["cot"]:
            raise ValueError("LoRID's reasoners write chain of thought: thoughts must be [cot]")
        if self.eval.samples != 1 or self.eval.temperature != 0:
            raise ValueError("LoRID samples through loop.* (temperature per role): leave eval.samples and eval.temperature")
        if self.train.full:
            raise ValueError("train.full: LoRID's three roles (IR, KG, DR) are LoRA adapters on one base by definition; "
                             "full fine-tuning cannot give them (leave train.full false)")
        require_teacher_without_plans(self, "knowledge", "knowledge")
        return self


# ----------------------------------------------------------------------------- teacher side


def dr_rows(run, calc_marks: str = "none") -> list[dict]:
    """Deep Reasoner rows: question + the problem's kept knowledge -> its kept CoT rationale, written as the
    Intuitive Reasoner's target is (`calc_marks`: with the same calculation marks as data-ir's)."""
    cot = thoughts.get("cot", calc_marks=calc_marks)
    knowledge = {r["problem_id"]: r["text"] for r in steps.rationales(run, "knowledge") if r["kept"]}
    return [{"prompt": KNOWLEDGE.reasoning_prompt(r["question"], knowledge[r["problem_id"]], "cot"),
             "completion": cot.student_target(r["text"]), "thought": "cot", "problem_id": r["problem_id"]}
            for r in steps.rationales(run, "cot") if r["kept"] and r["problem_id"] in knowledge]


# ----------------------------------------------------------------------------- the roles


# How each role is asked, once for evaluation (`Roles`, batched through `student.sample`) and serving (`LoRID`,
# one request through the server's context): ir: question -> CoT; kg: question -> knowledge; dr: question +
# knowledge -> CoT.


def role_message(role: str, question: str, knowledge: str | None = None) -> str | None:
    """The user message of `role` (None for ir: the CoT student prompt, as in training and evaluation)."""
    if role == "kg":
        return KNOWLEDGE.student_prompt(question)
    if role == "dr":
        return KNOWLEDGE.reasoning_prompt(question, knowledge, "cot")
    return None


@dataclass(frozen=True)
class RoleSettings:
    greedy: bool
    temperature: float
    top_p: float
    max_new_tokens: int | None  # None: the run's eval.max_new_tokens


def role_settings(loop: LoopConfig, role: str, t: int) -> RoleSettings:
    """How `role` samples at iteration t: greedy at t 0 (the rows lorid:ir / lorid:dr) and, with
    `loop.first_greedy`, at t 1; else at its `loop.<role>` temperature and top-p. kg writes at most
    `loop.knowledge_max_new_tokens`."""
    greedy = t == 0 or (t == 1 and loop.first_greedy)
    s = getattr(loop, role)
    return RoleSettings(greedy, 0.0 if greedy else s.temperature, s.top_p,
                        loop.knowledge_max_new_tokens if role == "kg" else None)


class Roles:
    """The three adapters of one loaded base as the loop's roles, each call through `student.sample`:
    the adapter chosen per call, seeded by (seed, role, iteration) and problem, kept resumably in
    folder/<greedy | iteration-t>/<role>/ (a greedy first iteration reuses the greedy rows' samples).
    `tokens[folder]`: the tokens generated for each call's rows (a reused call counted once)."""

    def __init__(self, model, tok, cfg: LoRIDConfig, weights: dict, folder: Path, progress: bool = True):
        self.model, self.tok, self.cfg, self.weights, self.folder, self.progress = model, tok, cfg, weights, folder, progress
        self.tokens: dict[Path, int] = {}

    def sample(self, role: str, problems, t: int, knowledge=None) -> list[dict]:
        """Rows of `student.sample` for `role` at iteration t (0: the greedy rows)."""
        from mathdistill.student.chat import render_prompt
        from mathdistill.student.generate import derive_seed
        from mathdistill.student.sample import sample

        e, c = self.cfg.eval, role_settings(self.cfg.loop, role, t)
        # kg is sampled as "cot" for its caching; its outputs are knowledge, their scores unused
        users = [role_message(role, p.question, k) for p, k in zip(problems, knowledge or [None] * len(problems))]
        prompts = None if role == "ir" else [render_prompt(self.tok, u) for u in users]
        out = self.folder / ("greedy" if c.greedy else f"iteration-{t}") / role
        rows = sample(self.model, self.tok, problems, "cot", adapter=role, prompts=prompts,
                      seed=derive_seed(self.cfg.seed, role, t), weights=self.weights[role], out_dir=out,
                      progress=self.progress,
                      **e.generation(temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens)).rows
        self.tokens[out] = sum(sum(r["num_tokens"]) for r in rows)
        return rows

    def loop_roles(self) -> dict:
        """ir, kg, dr as `consistency_loop` takes them."""
        def answers(rows):
            return [(r["outputs"][0], r["predictions"][0]) for r in rows]

        return {"ir": lambda ps, t: answers(self.sample("ir", ps, t)),
                "kg": lambda ps, t: [r["outputs"][0] for r in self.sample("kg", ps, t)],
                "dr": lambda ps, k, t: answers(self.sample("dr", ps, t, k))}


def _write_eval(folder: Path, split, rows: list[dict], seconds: float, **extra) -> dict:
    """predictions.jsonl + metrics.json of one evaluation (`eval.results`, the layout the report reads)."""
    from mathdistill.eval.results import summarize, write_result

    metrics = summarize(rows, split.dataset, split.split, seconds=round(seconds, 1), **extra)
    write_result(folder, rows, metrics)
    return metrics


def _greedy_rows(rows: list[dict], knowledge=None) -> list[dict]:
    return [{"id": r["id"], "question": r["question"], "gold": r["gold"], "output": r["outputs"][0],
             "prediction": r["predictions"][0], "correct": r["corrects"][0],
             **({"knowledge": knowledge[i]} if knowledge else {})} for i, r in enumerate(rows)]


def _cost(summaries: list[dict]) -> dict:
    return {k: sum(s[k] or 0 for s in summaries) for k in ("seconds", "steps", "tokens")}


def plot_budget(budgets: list[dict], path: Path, title: str) -> Path:
    """Accuracy (one answer, 95% CI; any agreed answer) and share resolved against the iteration budget."""
    from mathdistill.report.plots import figure, save

    xs = [b["budget"] for b in budgets]
    acc = [100 * b["accuracy"] for b in budgets]
    err = [[a - 100 * b["ci95"][0] for a, b in zip(acc, budgets)], [100 * b["ci95"][1] - a for a, b in zip(acc, budgets)]]
    fig, ax = figure((5.5, 3.4))
    ax.errorbar(xs, acc, yerr=err, marker="o", capsize=3, label="accuracy, one answer (95% CI)")
    ax.plot(xs, [100 * b["accuracy_any"] for b in budgets], marker="^", linestyle=":",
            label="accuracy, any agreed answer")
    ax.plot(xs, [100 * b["resolved"] for b in budgets], marker="s", linestyle="--", label="resolved (IR = DR)")
    ax.set_xticks(xs)
    ax.set_xlabel("iteration budget")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return save(fig, path)


def evaluate(run, cfg: LoRIDConfig, train: dict) -> list[dict]:
    """Rows lorid (the loop, one answer), lorid:any (the loop, any agreed answer), lorid:ir, lorid:dr for every
    eval split; the budget table and figure."""
    from mathdistill.eval.consistency import consistency_loop

    # one base, three adapters, none merged; the weights identity of each role
    model, tok, weights = steps.load_student(cfg.student.model, {r: run.path("train", r) for r in ROLES})
    cost = {"lorid": _cost([train[r] for r in ROLES]), "ir": _cost([train["ir"]]), "dr": _cost([train["kg"], train["dr"]])}
    loop, out = cfg.loop, []
    for split in cfg.data.eval:
        ps = steps.problems(split, cfg.data.data_dir)
        roles = Roles(model, tok, cfg, weights, run.path("sample", f"{split.dataset}-{split.split}"))
        start = t0 = time.perf_counter()
        ir = roles.sample("ir", ps, 0)
        ir_m = _write_eval(run.path("eval", split.dataset, "ir"), split, _greedy_rows(ir), time.perf_counter() - t0,
                           generated_tokens=sum(roles.tokens.values()))
        t0 = time.perf_counter()
        knowledge = [r["outputs"][0] for r in roles.sample("kg", ps, 0)]
        dr = roles.sample("dr", ps, 0, knowledge)
        dr_m = _write_eval(run.path("eval", split.dataset, "dr"), split, _greedy_rows(dr, knowledge), time.perf_counter() - t0,
                           generated_tokens=sum(roles.tokens.values()) - ir_m["generated_tokens"])
        res = consistency_loop(ps, **roles.loop_roles(), max_iterations=loop.max_iterations, agreement=loop.agreement,
                               fallback=loop.fallback, on_iteration=lambda t, n, done: steps.console.print(
                                   f"{split.dataset} iteration {t}: {n} sampled, {done}/{len(ps)} resolved"))
        last = res.budgets[-1]
        # the loop's seconds include the greedy IR, KG and DR calls: its first iteration reuses them
        m = _write_eval(run.path("eval", split.dataset, "loop"), split, res.rows, time.perf_counter() - start,
                        generated_tokens=sum(roles.tokens.values()), mean_iterations=last["mean_iterations"],
                        resolved=last["resolved"], sampled=res.sampled, budgets=res.budgets, preset=loop.preset,
                        max_iterations=loop.max_iterations, fallback=loop.fallback, agreement=loop.agreement,
                        **{k: last[k] for k in ("correct_any", "accuracy_any", "ci95_any")})
        extra = {"preset": loop.preset, "mean_iterations": round(last["mean_iterations"], 3),
                 "resolved": round(last["resolved"], 4), "generated_tokens": m["generated_tokens"]}
        any_m = {**m, "correct": m["correct_any"], "accuracy": m["accuracy_any"], "ci95": m["ci95_any"]}
        out += [{**steps.result_row("lorid", "loop", m, cost["lorid"]), **extra, "scoring": ONE,
                 "accuracy_any": m["accuracy_any"]},
                {**steps.result_row("lorid:any", "loop", any_m, cost["lorid"]), **extra, "scoring": ANY},
                steps.result_row("lorid:ir", "ir", ir_m, cost["ir"]), steps.result_row("lorid:dr", "dr", dr_m, cost["dr"])]
        title = (f"LoRID on {split.dataset} (n={len(ps)}): accuracy by iteration budget, preset {loop.preset}, "
                 f"fallback {loop.fallback}")
        run.add_table(title, [{"budget": b["budget"], "accuracy (one answer)": f"{b['accuracy']:.1%}",
                               "95% CI": f"{b['ci95'][0]:.1%}-{b['ci95'][1]:.1%}",
                               "accuracy (any agreed answer)": f"{b['accuracy_any']:.1%}",
                               "resolved": f"{b['resolved']:.0%}",
                               "mean iterations": round(b["mean_iterations"], 2), "problems sampled": b["sampled"]}
                              for b in res.budgets])
        run.add_figure(plot_budget(res.budgets, run.path("eval", split.dataset, "loop", "budget.png"), title), title)
        steps.console.print(f"{split.dataset}: lorid {m['accuracy']:.1%} (any agreed answer {m['accuracy_any']:.1%}), "
                            f"ir {ir_m['accuracy']:.1%}, dr {dr_m['accuracy']:.1%}, resolved {last['resolved']:.0%}")
    return out


# ----------------------------------------------------------------------------- the recipe


def recipe(cfg: LoRIDConfig, run) -> list[dict]:
    problems = steps.train_problems(run, cfg)
    steps.teach(run, cfg, problems, ["cot"])
    why = steps.plans_stand_in(cfg, "general knowledge: they are problem-specific plans")
    know = steps.teach_derived(run, cfg, problems, KNOWLEDGE, lambda p, plan: Knowledge.from_recorded(plan), why)
    if cfg.plans is not None:
        run.note(f"Offline stand-in: {why}, not the general, question-independent rules the LoRID paper asks for.")
    share = know["question_numbers"]
    run.note(steps.yield_note(know, "Knowledge") + (f"; {share['quoting']} of {share['items']} knowledge items "
             f"({share['share']:.0%}) quote a number from their question" if share["items"] else ""))
    steps.data(run, ["cot"], name="data-ir", calc_marks=cfg.data.calc_marks)
    steps.data(run, ["knowledge"], name="data-kg")
    steps.data(run, [], extra=dr_rows(run, cfg.data.calc_marks), name="data-dr")
    train = {r: steps.train(run, cfg, r, run.path(f"data-{r}", "train.jsonl"), stage=f"train-{r}") for r in ROLES}
    return run.stage("eval", lambda: evaluate(run, cfg, train))


#: planning only: the share of problems still unresolved after each iteration of the loop (this CPU's lorid row of
#: benchmarks/results/accuracy.json: 3.28 iterations on average with at most 4, i.e. about 0.87 left each time)
UNRESOLVED_AFTER_ITERATION = 0.87


def workload(cfg: LoRIDConfig, w) -> None:
    """Three trainings; greedy IR, KG -> DR on every eval problem (lorid:ir, lorid:dr, and the loop's first
    iteration with `first_greedy`); then sampled iterations on the problems not yet resolved."""
    from mathdistill.workload import TOKENS

    n, know = w.train_problems, TOKENS["knowledge"][1]
    w.train("train-kg", {"knowledge": n}, cfg)
    w.train("train-ir", {"cot": n}, cfg)
    w.train("train-dr", {"cot": n}, cfg, extra_tokens=know)
    loop, limit = cfg.loop, cfg.eval.max_new_tokens
    problems = sum(w.eval_problems.values())
    roles = (("ir", TOKENS["cot"][1], limit), ("kg", know, loop.knowledge_max_new_tokens), ("dr", TOKENS["cot"][1], limit))
    for role, expected, cap in roles:
        w.generate("eval", problems, expected, cap, note=f"{role}, greedy")
    left = problems * (UNRESOLVED_AFTER_ITERATION if loop.first_greedy else 1)
    for t in range(2 if loop.first_greedy else 1, loop.max_iterations + 1):
        for role, expected, cap in roles:
            w.generate("eval", round(left), expected, cap, sampled=True, note=f"{role}, iteration {t}")
        left *= UNRESOLVED_AFTER_ITERATION
    w.notes.append(f"lorid: planned with {UNRESOLVED_AFTER_ITERATION:.0%} of the problems left unresolved after "
                   "each iteration (as on this CPU; the run's budget table says what happened)")


def teaches(cfg: LoRIDConfig) -> list[str]:
    """CoT for the reasoners' targets; knowledge too when no recorded plans stand in for it."""
    return ["cot"] + (["knowledge"] if cfg.plans is None else [])


def teacher_plan(cfg: LoRIDConfig, problems: list) -> list:
    """teach-cot (teach.samples per problem), then teach-knowledge: one per problem, a teacher's or derived from
    the recorded plans."""
    return [*(steps.teach_stage(cfg, t, problems, cfg.teach.samples) for t in cfg.thoughts),
            steps.teach_stage(cfg, "knowledge", problems, 1, plans=cfg.plans)]


# ----------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class LoRID:
    """LoRID's inference over the run's three adapters (one base, the adapter chosen per call): `role` None is
    the loop (IR and KG -> DR until an IR and a DR answer agree, `eval.consistency`; the content is the agreed
    DR rationale, else the fallback's); "ir" the IR alone; "dr" KG then DR (greedy, as lorid:ir / lorid:dr).
    `loop` is the run's `LoopConfig`; each role is asked as evaluation asks it (`role_message`, `role_settings`)."""

    loop: LoopConfig
    role: str | None = None
    summary = "LoRID consistency loop (IR, KG -> DR until they agree)"
    formats = ("cot",)
    streamable = False

    def _ask(self, ctx: serving.Context, role: str, question: str, t: int, knowledge: str | None = None):
        """(text, generation) of `role` at iteration t."""
        user, s = role_message(role, question, knowledge), role_settings(self.loop, role, t)
        prompt = ctx.prompt("cot", question) if user is None else ctx.render(user)
        gen = ctx.generate([prompt], adapter=role, temperature=s.temperature, top_p=s.top_p,
                           max_tokens=s.max_new_tokens)[0]
        return gen.texts[0], gen

    def __call__(self, ctx: serving.Context, question: str) -> serving.Reply:
        if self.role is not None:
            return self._greedy(ctx, question)
        from mathdistill.data import Problem
        from mathdistill.eval.consistency import consistency_loop

        last: dict = {}

        def solve(role: str, t: int, knowledge=None) -> tuple[str, str | None]:
            text, gen = self._ask(ctx, role, question, t, knowledge)
            found = ctx.extract("cot", [text])[0]
            last[(role, t)] = (gen, found.error)
            return text, found.prediction

        res = consistency_loop(
            [Problem("request", question, "0", "request")],  # the gold is not used for the reply
            ir=lambda ps, t: [solve("ir", t)], kg=lambda ps, t: [self._ask(ctx, "kg", question, t)[0]],
            dr=lambda ps, k, t: [solve("dr", t, k[0])], max_iterations=self.loop.max_iterations,
            agreement=self.loop.agreement, fallback=self.loop.fallback)
        row = res.rows[0]
        role, t = ("dr", row["resolved_at"]) if row["resolved"] else ("ir", 1)
        gen, error = last[(role, t)]
        errors = {} if row["prediction"] is not None or not error else {"cot": error}
        return serving.Reply(row["output"], row["prediction"], "cot", {"ir": row["ir"], "dr": row["dr"]}, errors,
                             ctx.finish_reason(gen), {"iterations": row["iterations"], "resolved": row["resolved"],
                                                      "knowledge": row["knowledge"][-1]})

    def _greedy(self, ctx: serving.Context, question: str) -> serving.Reply:
        extra = {}
        if self.role == "dr":
            knowledge = self._ask(ctx, "kg", question, 0)[0]
            extra = {"knowledge": knowledge}
            text, gen = self._ask(ctx, "dr", question, 0, knowledge)
        else:
            text, gen = self._ask(ctx, "ir", question, 0)
        found = ctx.extract("cot", [text])[0]
        return serving.Reply(text, found.prediction, "cot", {"cot": found.prediction},
                             {"cot": found.error} if found.error else {}, ctx.finish_reason(gen), extra)


def serve(cfg: LoRIDConfig, run) -> serving.Served:
    """`lorid` the loop, `lorid:ir` and `lorid:dr` the greedy roles; the three adapters kept apart on one base."""
    from mathdistill.io import InputError

    adapters = {r: run.path / "train" / r for r in ROLES}
    missing = [str(f) for f in adapters.values() if not serving.trained(f)]
    if missing:
        raise InputError(f"{run.path}: LoRID's adapters are not all trained yet ({', '.join(missing)} missing)")
    return serving.Served({cfg.method: LoRID(cfg.loop), f"{cfg.method}:ir": LoRID(cfg.loop, "ir"),
                           f"{cfg.method}:dr": LoRID(cfg.loop, "dr")}, adapters, merge=False)
