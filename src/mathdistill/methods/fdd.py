"""FDD: feedback-driven distillation (Zhu, Li, Ma, Wang, 2024), over rounds that are run scopes.

    round-0   teach the seed problems (paths_per_problem rationales each) -> data -> train -> eval
    round-i   feedback: the previous student samples its training problems (easy: solved, hard: not)
              -> generate: a harder variation of each easy problem, a similar new one for each hard
                 one (per_problem each); repeats dropped; decontaminated against the test sets (the
                 shared step's rule and test questions, `methods.leakage`, as the seed problems are)
              -> label: the teacher solves each new problem label_samples times per format; the
                 majority answer is the label when its share >= label_threshold; agreeing
                 rationales kept (PoT executed, EoT solved)
              -> data: the previous round's data + the new rationales -> train (a fresh adapter on
                 the base, or on the previous student: retrain_from) -> eval

Offline (no `generate.teacher`) the pool teacher (`mathdistill.teacher.pool`) SIMULATES generation:
GSM8K train problems after the seeds are drawn by similarity, labelled by their gold answers and
taught by the recorded teachers; every report says so. `rounds: 2` is rounds 0, 1 and 2. Rows:
`fdd-r0`, `fdd-r1`, ... (several formats: `fdd-etd-r0` the vote, `fdd-etd-r0:cot`, ...), with scope.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mathdistill.data import Problem
from mathdistill.io import InputError, read_json, read_jsonl, write_json
from mathdistill.methods import serving, steps
from mathdistill.methods.config import DistillConfig, Split, Strict, VoteEvalConfig
from mathdistill.teacher.config import OFFLINE_KINDS, TeacherConfig


class FeedbackConfig(Strict):
    samples: int = Field(1, ge=1, description="student samples per problem and format; 1: greedy")
    temperature: float = Field(0.7, gt=0, description="sampling temperature when samples > 1")
    top_p: float = Field(0.95, gt=0, le=1)
    solve_threshold: float = Field(0.5, gt=0, le=1,
                                   description="easy: at least this share of its samples (all formats) correct")


class GenerateConfig(Strict):
    teacher: TeacherConfig | None = Field(None, description="a live teacher writes and labels new problems; "
                                          "none: the pool teacher (offline simulation)")
    per_problem: int = Field(1, ge=1, description="new problems per training problem and round (n)")
    label_samples: int = Field(4, ge=1, description="teacher solutions per new problem and format (m)")
    label_threshold: float = Field(0.5, gt=0, le=1, description="label only when the majority holds this share")
    pool_seeds: int | None = Field(3000, ge=1, description="pool teacher only: the first N problems of data.train are "
                                   "the seeds, the rest of the split is the pool (None: all are seeds); a live teacher "
                                   "seeds with all of data.train, as the paper")
    pool_limit: int | None = Field(None, ge=1, description="pool teacher: the first N train problems after the seeds")


class FDDConfig(DistillConfig):
    eval: VoteEvalConfig = VoteEvalConfig()
    rounds: int = Field(2, ge=0, description="rounds after the first: 2 means rounds 0, 1 and 2")
    paths_per_problem: int = Field(2, ge=1, description="teacher rationales per seed / pool problem and format")
    retrain_from: Literal["base", "previous"] = Field("base", description="each round trains a fresh adapter "
                                                      "on the base (the paper's choice) or on the previous student")
    feedback: FeedbackConfig = FeedbackConfig()
    generate: GenerateConfig = GenerateConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.teach.samples != 1:
            raise ValueError("FDD sets the rationales per problem with paths_per_problem, not teach.samples")
        t = self.generate.teacher
        if t is not None and t.kind in OFFLINE_KINDS:
            raise ValueError(f"generate.teacher must write new problems ({t.kind} cannot): a live teacher, "
                             "or none for the pool teacher")
        if t is None and self.data.train.dataset != "gsm8k":
            raise ValueError("the pool teacher draws from GSM8K train: data.train.dataset must be gsm8k")
        return self

    def training_slices(self) -> list[tuple[str, Split]]:
        """data.train (the seeds) and, offline, the pool teacher's draws: the rest of that split, first
        generate.pool_limit (problems before the seeds first, as `_generate` takes them)."""
        out = super().training_slices()
        if self.generate.teacher is not None or not self.rounds:
            return out
        t, left = self.data.train, self.generate.pool_limit
        seeds = [n for n in (t.limit, self.generate.pool_seeds) if n is not None]  # the seeds: data.train's first
        before = t.offset if left is None else min(t.offset, left)
        if before:
            out.append(("FDD pool, before the seeds", Split(dataset=t.dataset, split=t.split, limit=before)))
        rest = None if left is None else left - before
        if seeds and rest != 0:
            out.append(("FDD pool", Split(dataset=t.dataset, split=t.split, offset=t.offset + min(seeds), limit=rest)))
        return out


def family(thoughts: list[str]) -> str:
    """The row name before `-rN`: fdd (CoT), fdd-etd (CoT+PoT+EoT), else fdd-<formats>."""
    if thoughts == ["cot"]:
        return "fdd"
    return "fdd-etd" if sorted(thoughts) == ["cot", "eot", "pot"] else "fdd-" + "-".join(thoughts)


def seed_problems(cfg: FDDConfig, problems: list[Problem] | None = None) -> list[Problem]:
    """Round 0's problems among `problems` (default: data.train; the recipe gives them decontaminated): all of them
    with a live teacher (the paper distils the whole training set); with the pool teacher the first
    `generate.pool_seeds`, the rest of the split being what it draws."""
    seeds = steps.problems(cfg.data.train, cfg.data.data_dir) if problems is None else problems
    return seeds if cfg.generate.teacher is not None else seeds[: cfg.generate.pool_seeds]


def _check(cfg: FDDConfig, questions: list[str]) -> list[dict]:
    """New problems against the run's test questions, by the shared decontamination step's rule."""
    from mathdistill.methods.leakage import decontaminator

    return decontaminator(cfg).check(questions)


def _feedback(r, cfg: FDDConfig, model: str, adapter: str, problems: list[Problem]) -> dict:
    """The student (model + what was trained into `adapter`) samples `problems` in every format: easy/hard by
    solved share."""
    from mathdistill.student.sample import sample

    fb, e = cfg.feedback, cfg.eval
    m, tok, weights = steps.load_student(model, adapter)
    solved = Counter()
    for t in cfg.thoughts:
        res = sample(m, tok, problems, t, k=fb.samples, seed=cfg.seed, weights=weights, out_dir=r.path("feedback", t),
                     **e.generation(temperature=fb.temperature if fb.samples > 1 else 0.0, top_p=fb.top_p))
        solved.update({row["id"]: sum(row["corrects"]) for row in res.rows})
    return easy_hard([p.id for p in problems], solved, fb.samples * len(cfg.thoughts), fb.solve_threshold)


def easy_hard(ids: list[str], solved: dict[str, int], attempts: int, threshold: float) -> dict:
    """easy: the problems whose share of correct samples (solved / attempts) is >= threshold; hard: the rest."""
    share = {x: solved.get(x, 0) / attempts for x in ids}
    return {"problems": len(ids), "easy": [x for x in ids if share[x] >= threshold],
            "hard": [x for x in ids if share[x] < threshold], "share": share}


def _generate(r, cfg: FDDConfig, problems: list[Problem], easy: list[str], drawn: set[str], seeds, i: int) -> dict:
    """New problems for `problems` (pool draws or teacher-written), decontaminated."""
    g = cfg.generate
    if g.teacher is None:
        from mathdistill.teacher.pool import PoolTeacher

        seed_ids = {p.id for p in seeds}
        pool = [p for p in steps.problems(Split(dataset=cfg.data.train.dataset, split=cfg.data.train.split),
                                          cfg.data.data_dir) if p.id not in seed_ids][: g.pool_limit]
        draws = PoolTeacher(pool).draw(problems, set(easy), g.per_problem, drawn)
        found = {d.problem.id: d.problem for d in draws}
        cands = [{"id": d.problem.id, "seed": d.seed, "kind": d.kind, "question": d.problem.question,
                  "similarity": d.similarity, "seed_steps": d.seed_steps, "steps": d.steps} for d in draws]
        generated = len(draws)
    else:
        from mathdistill.teacher.generate import write_problems

        written = write_problems(problems, easy, g.teacher, g.per_problem, r.path("generate"), prefix=f"r{i}:")
        seen, cands = {" ".join(p.question.lower().split()) for p in problems}, []
        for w in written:
            key = " ".join((w["question"] or "").lower().split())
            if w["question"] and key not in seen:
                seen.add(key)
                cands.append({k: w[k] for k in ("id", "seed", "kind", "question")})
        generated = sum(w["question"] is not None for w in written)
        found = {c["id"]: Problem(c["id"], c["question"], "", "generated", {"seed": c["seed"], "kind": c["kind"]})
                 for c in cands}
    for c, chk in zip(cands, _check(cfg, [c["question"] for c in cands])):
        c.update(chk)
    kept = [found[c["id"]].to_dict() for c in cands if not c["contaminated"]]
    counts = {"asked": len(problems) * g.per_problem, "generated": generated, "repeats": generated - len(cands),
              "contaminated": sum(c["contaminated"] for c in cands), "clean": len(kept)}
    return {"problems": kept, "candidates": cands, "counts": counts}


def _teach(r, cfg: FDDConfig, problems: list[Problem], pool: bool) -> None:
    """teach-<t> stages: paths_per_problem verified rationales per problem (pool draws marked as such)."""
    from mathdistill.teacher.pool import DESCRIPTION

    steps.teach(r, cfg, problems, cfg.thoughts, samples=cfg.paths_per_problem)
    for t in cfg.thoughts if pool else ():
        f = r.path("teach", t, "summary.json")
        s = read_json(f)
        if s.get("offline_stand_in") != DESCRIPTION:
            write_json(f, dict(s, teacher=f"{s['teacher']}, on problems drawn by the pool teacher (simulation)",
                               offline_stand_in=DESCRIPTION))


def recipe(cfg: FDDConfig, run) -> list[dict]:
    from mathdistill.methods.leakage import checked
    from mathdistill.student.adapters import merge, student_parts
    from mathdistill.teacher.generate import label_problems
    from mathdistill.teacher.pool import DESCRIPTION

    g = cfg.generate
    seeds = seed_problems(cfg, steps.train_problems(run, cfg))
    name = family(cfg.thoughts)
    if g.teacher is None and cfg.rounds:
        run.note(f"FDD: no teacher wrote new problems in this run. The {DESCRIPTION}.")
    leak = checked(run)["cosines"]  # every seed problem's, dropped or not
    known = {p.id: p for p in seeds}  # every problem that entered training, by id
    drawn: set[str] = set()
    model, adapter, prev, rows, table, cands = cfg.student.model, None, None, [], [], []
    for i, r in steps.scopes(run, "round", cfg.rounds):
        info = {"round": i}
        if i == 0:
            new = seeds
        else:
            ids = list(dict.fromkeys(x["problem_id"] for x in read_jsonl(prev.path("data", "train.jsonl"))))
            fb = r.stage("feedback", lambda: _feedback(r, cfg, model, adapter, [known[x] for x in ids]))
            gen = r.stage("generate", lambda: _generate(r, cfg, [known[x] for x in ids], fb["easy"], drawn, seeds, i))
            drawn.update(c["id"] for c in gen["candidates"])
            cands += [dict(c, round=i) for c in gen["candidates"]]
            new = [Problem(**d) for d in gen["problems"]]
            info.update(training_problems=len(ids), easy=len(fb["easy"]), hard=len(fb["hard"]), **gen["counts"])
        if i == 0 or g.teacher is None:
            _teach(r, cfg, new, pool=i > 0)
            info["labelled"] = len(new)
        else:
            lab = r.stage("label", lambda: label_problems(new, cfg.thoughts, g.teacher, g.label_samples,
                                                         g.label_threshold, r.path("teach")))
            extra = {p.id: p.extra for p in new}
            new = [Problem(x["id"], x["question"], x["label"], "generated", extra[x["id"]]) for x in lab if x["label"] is not None]
            info["labelled"] = len(new)
        summaries = [read_json(r.path("teach", t, "summary.json")) for t in cfg.thoughts]
        data = steps.data(r, cfg.thoughts, extra=read_jsonl(prev.path("data", "train.jsonl")) if prev else (),
                          calc_marks=cfg.data.calc_marks)
        kept_ids = {x["problem_id"] for t in cfg.thoughts for x in steps.rationales(r, t) if x["kept"]}
        known.update({p.id: p for p in new if p.id in kept_ids})
        info.update(new_problems=len(kept_ids), rationales=sum(s["rationales"] for s in summaries),
                    kept_rationales=sum(s["kept"] for s in summaries), examples=data["examples"])
        if cfg.retrain_from == "previous" and adapter is not None:
            base, lora = student_parts(model, adapter)  # a full fine-tune is the next base as it is
            model = base if lora is None else r.stage("init", lambda: str(merge(base, lora, r.path("init"))))
        rcfg = cfg.model_copy(update={"student": cfg.student.model_copy(update={"model": model})})
        train = steps.train(r, rcfg)
        adapter = str(r.path("train", "student"))
        got = r.stage("eval", lambda: steps.evaluate(r, rcfg, f"{name}-r{i}", Path(adapter), cfg.thoughts,
                                                     cfg.eval.vote, cfg.eval.preference, train))
        rows += [dict(x, scope=f"round-{i}", round=i, train_examples=data["examples"]) for x in got]
        main = [x for x in got if x["method"] == f"{name}-r{i}"]
        info.update(train_steps=train["steps"], **{f"accuracy {x['dataset']}": round(x["accuracy"], 4) for x in main})
        table.append(info)
        prev = r
    _report(run, cfg, table, cands, leak)
    return rows


def _report(run, cfg: FDDConfig, table: list[dict], cands: list[dict], leak: list[float]) -> None:
    """The method's tables and the leakage figure (recomputed from the stages' values on every run)."""
    from mathdistill.data.decontam import histogram, plot_similarity

    cols = ["round", "training_problems", "easy", "hard", "asked", "generated", "repeats", "contaminated", "clean",
            "labelled", "new_problems", "rationales", "kept_rationales", "examples", "train_steps"]
    cols += [k for t in table for k in t if k.startswith("accuracy") and k not in cols]
    run.add_table("FDD rounds: feedback, generation, labelling and data",
                  [{k: t.get(k, "-") for k in dict.fromkeys(cols)} for t in table])
    yields = [{"round": t["round"], "generation yield": _ratio(t["generated"], t["asked"]),
               "clean (not contaminated, not a repeat)": _ratio(t["clean"], t["generated"]),
               "labelled": _ratio(t["labelled"], t["clean"]), "rationale yield": _ratio(t["kept_rationales"], t["rationales"]),
               "problems with a kept rationale": _ratio(t["new_problems"], t["labelled"])} for t in table if t["round"]]
    if yields:
        run.add_table("FDD yield at each step (share of the step before)", yields)
    gen = [c["cosine"] for c in cands]
    hist_seeds, hist_gen = histogram(leak), histogram(gen)
    run.add_table(f"FDD decontamination: largest TF-IDF cosine to any test question (drop at >= {cfg.decontam.cosine:g} "
                  f"or a shared {cfg.decontam.ngram}-gram)",
                  [{"cosine": a["bin"], "seed problems": a["count"], "new problems": b["count"]} for a, b in zip(hist_seeds, hist_gen)]
                  + [{"cosine": "dropped", "seed problems": "-", "new problems": sum(c["contaminated"] for c in cands)}])
    closest = sorted(cands, key=lambda c: -c["cosine"])[:8]
    if closest:
        run.add_table("FDD decontamination: the new problems closest to a test question", [
            {"round": c["round"], "problem": c["question"][:160], "cosine": c["cosine"],
             "nearest test item": f"{c['nearest']['dataset']} {c['nearest']['id']}: {c['nearest']['question'][:160]}",
             "shared n-gram": c["ngram"] or "", "dropped": c["reason"] or "no"} for c in closest])
    fig = plot_similarity({"seed problems": leak, "new problems": gen}, cfg.decontam.cosine, run.path("fdd", "leakage.png"))
    run.add_figure(fig, "Leakage check: each problem's largest TF-IDF cosine to any test question of the data root")


def _ratio(a: int, b: int) -> str:
    return f"{a}/{b} ({a / b:.0%})" if b else f"{a}/0"


def workload(cfg: FDDConfig, w) -> None:
    """Round 0 trains on the seeds; round i samples feedback on its training problems, adds about
    `generate.per_problem` new problems for each (before decontamination and labelling), retrains, evaluates."""
    from mathdistill.workload import TOKENS

    problems, fb, e = w.train_problems, cfg.feedback, cfg.eval
    for i in range(cfg.rounds + 1):
        if i:
            for t in cfg.thoughts:
                w.generate(f"round-{i}/feedback", problems * fb.samples, TOKENS[t][1], e.max_new_tokens,
                           sampled=fb.samples > 1, note=t)
            problems += problems * cfg.generate.per_problem
        w.train(f"round-{i}/train", {t: problems * cfg.paths_per_problem for t in cfg.thoughts}, cfg)
        w.evaluate(f"round-{i}/eval", cfg, cfg.thoughts)


def teacher_plan(cfg: FDDConfig, seeds: list) -> list:
    """Round 0 teaches the seeds; round i writes `per_problem` new problems per training problem (easy ones: a
    harder variation; planned all as that prompt) and labels each (`label_samples` per format), or, with no
    generate.teacher, teaches the pool's draws; counts as if every new problem were kept."""
    from mathdistill.teacher.bill import Stage
    from mathdistill.teacher.generate import ProblemWriter

    g, run, stages = cfg.generate, cfg.run_dir, []
    stages += [steps.teach_stage(cfg, t, seeds, cfg.paths_per_problem, run / "round-0") for t in cfg.thoughts]
    training = len(seeds)
    for i in range(1, cfg.rounds + 1):
        new = training * g.per_problem
        why = f"round {i}: at most {new} new problems ({training} training problems x {g.per_problem})"
        scale = new / len(seeds) if seeds else 0.0
        if g.teacher is not None:
            stages.append(Stage(f"round-{i}/generate", ProblemWriter("harder"), g.teacher, seeds, g.per_problem,
                                None, scale=training / len(seeds),
                                estimated=f"round {i}: {training} training problems x {g.per_problem}"))
            stages += [Stage(f"round-{i}/label-{t}", t, g.teacher, seeds, g.label_samples, None, scale=scale,
                             estimated=why) for t in cfg.thoughts]
        else:
            stages += [steps.teach_stage(cfg, t, seeds, cfg.paths_per_problem, run / f"round-{i}", scale=scale,
                                         estimated=why + ", drawn by the pool teacher") for t in cfg.thoughts]
        training += new
    return stages


def serve(cfg: FDDConfig, run) -> serving.Served:
    """The last finished round's student (on the round's base when it retrained from the previous one), as
    `steps.evaluate` evaluated it: `fdd-r<N>` (several formats: their vote, and `fdd-...-r<N>:<format>`)."""
    from mathdistill.student.adapters import is_full_model

    i = serving.last_done(run, "round-")
    scope = run.path / f"round-{i}"
    folder = scope / "train" / "student"
    if not serving.trained(folder):
        raise InputError(f"{run.path}: round-{i} finished but {folder} holds no adapter or model")
    if is_full_model(folder):  # a full fine-tune is the whole student
        models = serving.family(f"{family(cfg.thoughts)}-r{i}", cfg.thoughts, cfg.eval.vote, cfg.eval.preference,
                                None, cfg.eval.samples)
        return serving.Served(models, {}, model=str(folder))
    model = str(scope / "init") if cfg.retrain_from == "previous" and (scope / "init" / "config.json").is_file() else None
    models = serving.family(f"{family(cfg.thoughts)}-r{i}", cfg.thoughts, cfg.eval.vote, cfg.eval.preference,
                            "student", cfg.eval.samples)
    return serving.Served(models, {"student": folder}, model=model)
