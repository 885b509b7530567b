"""The stages most recipes share, as small functions over the components: each runs one stage (or
a group of them) in a run folder or scope, and returns what later stages need.

    steps.train_problems(run, cfg)                         decontaminate stage: data.train less what meets the rule
    steps.teach(run, cfg, problems, ["cot", "pot"])       teach-<t> stages: teach/<t>/rationales.jsonl
    steps.data(run, ["cot", "pot"])                        data stage: data/train.jsonl (kept rationales)
    steps.train(run, cfg, "student")                       train stage: train/student/ (a PEFT adapter)
    steps.evaluate(run, cfg, "etd", run.path("train", "student"), ["cot", "pot"], vote=True)
    steps.load_student(cfg.student.model, run.path("train", "student"))   # (model, tokenizer, weights identity)
    for i, r in steps.scopes(run, "round", cfg.rounds):    rounds / iterations: scopes round-0..N, each closed when
        ...                                                its body is done
    steps.teach_derived(run, cfg, problems, Knowledge(), convert, why)
                                                           teach-knowledge: a teacher's, or derived from the recorded
                                                           plans (LoRID's knowledge, KPDD's key points)
    steps.teach_stage(cfg, "cot", problems, 1)             what a teach stage would send (a `--plan` row)

Recipes read their config here and hand the components explicit inputs; the components themselves
(teacher.collect, student.train.train, eval.evaluate, eval.vote_formats) never see a config or a run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

from mathdistill.data import Problem
from mathdistill.io import InputError, read_json, read_jsonl, write_json, write_jsonl
from mathdistill.methods.config import DistillConfig, RecipeConfig, resolve_teacher
from mathdistill.methods.config import problems  # noqa: F401 (a step: the problems of a configured slice)
from mathdistill.methods.run import Run, console
from mathdistill.student.adapters import load_student  # noqa: F401 (a step: the student of a train stage, loaded)


def train_problems(run: Run, cfg: DistillConfig) -> list[Problem]:
    """The training problems of `cfg.data.train`, decontaminated against the test sets (stage `decontaminate`,
    at the run's root: `methods.leakage`). Every recipe reads its training problems here; `train` refuses rows
    of a dropped problem, or of a run that never ran the stage."""
    from mathdistill.methods.leakage import decontaminate

    return decontaminate(run, cfg, problems(cfg.data.train, cfg.data.data_dir))


def _taught(thought: str, calc_marks: str):
    """`thought`, or its format with calculation marks in its targets (`data.calc_marks`, cot only)."""
    from mathdistill import thoughts

    return thoughts.get(thought, calc_marks=calc_marks) if thought == "cot" and calc_marks != "none" else thought


def teach(run: Run, cfg: DistillConfig, problems: list[Problem], thoughts: list[str], samples: int | None = None,
          context=None) -> None:
    """One `teach-<thought>` stage per format: verified rationales in teach/<thought>/ (gold-derived
    cot with the recipe's `data.calc_marks`)."""
    from mathdistill.teacher import collect

    for t in thoughts:
        run.stage(f"teach-{t}", lambda t=t: collect(
            problems, _taught(t, cfg.data.calc_marks), resolve_teacher(cfg, t), run.path("teach", t),
            samples=samples or cfg.teach.samples, keep=cfg.teach.keep, dedupe="normalized" if cfg.teach.dedupe else "none", context=context,
            data_dir=cfg.data.data_dir,
        ).summary)


def rationales(run: Run, thought: str) -> list[dict]:
    return read_jsonl(run.path("teach", thought, "rationales.jsonl"))


def data(run: Run, thoughts: list[str], tagged: bool = False, extra: list[dict] = (), name: str = "data",
         calc_marks: str = "none") -> dict:
    """Stage `name`: data/train.jsonl from the kept rationales of `thoughts` (+ `extra` rows);
    `calc_marks="add"`: cot targets with their right written steps marked (`thoughts.calcmarks`)."""
    from mathdistill.student.train import rows_from_rationales

    def make() -> dict:
        rows = rows_from_rationales([r for t in thoughts for r in rationales(run, t)],
                                    [_taught(t, calc_marks) for t in thoughts], tagged=tagged)
        rows += list(extra)
        if not rows:
            raise InputError(f"{run.dir}: no kept teacher rationales for {', '.join(thoughts)}: nothing to train on")
        write_jsonl(run.path(name, "train.jsonl"), rows)
        summary = {"examples": len(rows), "per_thought": dict(Counter(r["thought"] for r in rows))}
        write_json(run.path(name, "summary.json"), summary)
        return summary

    return run.stage(name, make)


def train(run: Run, cfg: DistillConfig, adapter: str = "student", data_file: Path | None = None,
          frozen: dict[str, str] | None = None, stage: str | None = None, init: Path | None = None) -> dict:
    """Stage `train` (or `stage`): a LoRA (or full) fine-tune on data/train.jsonl into train/<adapter>/
    (`init`: starting from the student trained into that folder, an adapter or a full fine-tune, with a new
    optimizer and schedule)."""
    from mathdistill.methods.leakage import check_rows
    from mathdistill.student.adapters import student_parts
    from mathdistill.student.train import TrainConfig, train as fit
    from mathdistill.tracking import run_name

    def make() -> dict:
        model, init_adapter = student_parts(cfg.student.model, init)
        out, data = run.path("train", adapter), data_file or run.path("data", "train.jsonl")
        tcfg = TrainConfig(**cfg.train.model_dump(), model=model, adapter_name=adapter, frozen_adapters=frozen or {},
                           seed=cfg.seed, init_adapter=str(init_adapter) if init_adapter else None,
                           run_name=run_name(run.root, out))
        if Path(data).is_file():
            check_rows(run, read_jsonl(data), data)
        r = fit(tcfg, data, out)
        summary = {"adapter": adapter, "full": r.full, "seconds": r.seconds, "steps": r.global_step,
                   "examples": r.examples, "tokens": r.completion_tokens, "all_tokens": r.tokens, "epochs": r.epoch,
                   "train_loss": r.train_loss, "resumed_from": r.resumed_from, "disk_bytes": r.disk_bytes}
        write_json(out / "train_summary.json", summary)
        return summary

    return run.stage(stage or "train", make)


def evaluate(run: Run, cfg: RecipeConfig, name: str, adapter_dir: Path | None, formats: list[str],
             vote: bool = False, preference: list[str] = (), train: dict | None = None, folder: str = "eval") -> list[dict]:
    """Evaluate the student trained into `adapter_dir` (an adapter, merged, or a full fine-tune; None: the base) on
    every eval split in each of `formats` (+ their vote): eval/<dataset>/<format|vote>/. Returns result rows named
    by contract 9 (`name` for the vote or a single format, `name:<format>` for each format of several)."""
    from mathdistill.eval import evaluate as run_eval
    from mathdistill.eval.vote import vote_formats

    e = cfg.eval
    model, tok, weights = load_student(cfg.student.model, adapter_dir)
    rows = []
    several = len(formats) > 1
    for split in cfg.data.eval:
        ps = problems(split, cfg.data.data_dir)
        plain = {}  # calculator "both": the rows without it, to count the answers it changed
        for on in ([False, True] if e.calculator == "both" else [e.calculator]):
            calc = "+calc" if on else ""  # contract 9: method[-variant][:inference][+calc]
            per_format = {}
            for t in formats:
                res = run_eval(model, tok, ps, thought=t, **e.generation(), samples=e.samples, seed=cfg.seed,
                               shots=e.shots, data_dir=cfg.data.data_dir, calculator=on,
                               out_dir=run.path(folder, split.dataset, t + calc), dataset=split.dataset,
                               split=split.split, weights=weights,
                               model_name=cfg.student.model + (f"+{adapter_dir}" if adapter_dir else ""))
                per_format[t] = res
                rows.append(result_row((f"{name}:{t}" if several else name) + calc, t, res.metrics, train,
                                       changed_share(res.rows, plain.get(t))))
                console.print(f"{split.dataset} {t}{calc}: {res.metrics['accuracy']:.1%} of {res.metrics['n']}")
            if vote and several:
                res = vote_formats(per_format, preference, out_dir=run.path(folder, split.dataset, "vote" + calc))
                per_format["vote"] = res
                rows.append(result_row(name + calc, "vote", res.metrics, train,
                                       changed_share(res.rows, plain.get("vote"))))
                console.print(f"{split.dataset} vote{calc}: {res.metrics['accuracy']:.1%} of {res.metrics['n']}")
            plain = plain or per_format
    return rows


def scopes(run: Run, prefix: str, last: int) -> Iterator[tuple[int, Run]]:
    """(i, scope `<prefix>-i`) for i in 0..last, in order: the rounds (FDD) or iterations (SIKeD) of a method.
    Each scope is closed (recorded done) when the loop's body for it has finished; one whose body raised stays
    open, so a re-run redoes what it had not finished."""
    for i in range(last + 1):
        scope = run.scope(f"{prefix}-{i}")
        yield i, scope
        scope.close_scope()


def changed_share(rows: list[dict], other) -> float | None:
    """Share of `rows` whose prediction differs from the same problem's in `other` (an EvalResult; None: None)."""
    if other is None:
        return None
    theirs = {r["id"]: r.get("prediction") for r in other.rows}
    return sum(r.get("prediction") != theirs.get(r["id"]) for r in rows) / len(rows) if rows else None


def result_row(name: str, variant: str, metrics: dict, train: dict | None, answers_changed: float | None = None) -> dict:
    """One results.json row (contract 9): the row name, the evaluation and what training cost
    (+ `answers_changed_share`: of a `+calc` row measured beside its plain row, the share of answers that differ)."""
    from mathdistill.eval import generation_timing

    train = train or {}
    timing = generation_timing(metrics)
    return {"method": name, "dataset": metrics["dataset"], "variant": variant, "n": metrics["n"],
            "correct": metrics["correct"], "accuracy": metrics["accuracy"], "ci95": metrics["ci95"],
            "train_seconds": train.get("seconds"), "train_steps": train.get("steps"),
            "train_tokens": train.get("tokens"), "eval_seconds": timing.get("seconds"),
            "gen_tokens_per_s": timing.get("tokens_per_second"),
            "interventions_per_answer": metrics.get("interventions_per_answer"),
            **({"answers_changed_share": answers_changed} if answers_changed is not None else {})}


def train_summary(run: Run, adapter: str = "student") -> dict:
    return read_json(run.path("train", adapter, "train_summary.json"))


# ----------------------------------------------------------------------------- derived teaching


def plans_stand_in(cfg, what: str) -> str:
    """The report's sentence for the recorded plans (`cfg.plans`) standing in for the teacher's `what`."""
    return (f"recorded Gemini-1.5-Flash plan-only rationales ({Path(cfg.plans or '').name}, final answer sentence cut) "
            f"stand in for the teacher's {what}")


def yield_note(summary: dict, what: str) -> str:
    """The report's sentence for a teach stage's yield: kept problems of all, and the share valid."""
    return f"{what}: {summary['kept']} of {summary['problems']} training problems kept ({summary['yield']:.0%} valid)"


def teach_derived(run: Run, cfg: DistillConfig, problems: list[Problem], fmt, convert, why: str,
                  samples: int = 1) -> dict:
    """Stage teach-<fmt.name>: `fmt` (knowledge, key points) from the teacher (`samples` per problem), or,
    with `cfg.plans`, from the recorded plan-only rationales: each turned into `fmt` by `convert(problem,
    plan)` (a text, or a list of them: KPDD composes one per kept solution), written as a replay file
    teach/<fmt>/<plans>.<fmt>.json and collected (validated, deduplicated) like any teacher's text, as
    many samples per problem as its most texts; `why` (`plans_stand_in`) marks it an offline stand-in.
    Returns the summary (yield; for knowledge, the share of items quoting a question's number)."""
    from mathdistill.teacher import TeacherConfig, collect
    from mathdistill.teacher.backends import load_recordings, normalize_question
    from mathdistill.thoughts.knowledge import question_numbers

    out = run.path("teach", fmt.name)

    def make() -> dict:
        extra, n = {}, samples
        teacher = resolve_teacher(cfg, fmt.name) if cfg.plans is None else None
        if cfg.plans is not None:
            try:
                (source,) = TeacherConfig(kind="replay", replay=[cfg.plans]).with_data_root(cfg.data.data_dir).replay
            except ValueError as e:
                raise type(e)(f"plans: {e}") from None
            table = load_recordings(source)
            plans = {p.id: table[normalize_question(p.question)][0] for p in problems
                     if normalize_question(p.question) in table}
            derived = out / f"{Path(source).stem}.{fmt.name}.json"
            texts = {p.id: convert(p, plans[p.id]) for p in problems if p.id in plans}
            texts = {k: [v] if isinstance(v, str) else list(v) for k, v in texts.items()}
            write_json(derived, [{"instruction": p.question, "output": t}
                                 for p in problems for t in texts.get(p.id, [])])
            n = max(map(len, texts.values()), default=1)
            teacher = TeacherConfig(kind="replay", replay=[derived])
            extra = {"offline_stand_in": why, "source": {"plans": Path(source).name, "recorded": len(plans),
                                                          "conversion": "final answer sentence cut, one item per sentence"}}
        res = collect(problems, fmt, teacher, out, samples=n, keep=cfg.teach.keep,
                      dedupe="normalized" if cfg.teach.dedupe else "none", data_dir=cfg.data.data_dir)
        if fmt.name == "knowledge":
            extra["question_numbers"] = question_numbers(res.rows)
        summary = {**res.summary, **extra}
        write_json(out / "summary.json", summary)
        return summary

    return run.stage(f"teach-{fmt.name}", make)


# ----------------------------------------------------------------------------- what a plan counts


def teach_stage(cfg: DistillConfig, thought, problems: list[Problem], samples: int, scope: Path | None = None,
                plans: str | None = None, **kw):
    """The `teacher.bill.Stage` of teach-<format> in `scope` (default: the run folder) as `teach` (or, with
    `plans`, `teach_derived` from the recorded stand-in) would run it: what `--plan` bills. `kw`: Stage's
    `scale` and `estimated`, for stages whose problems the run has not made yet."""
    from mathdistill.teacher.bill import Stage
    from mathdistill.teacher.cache import FILE
    from mathdistill.teacher.config import TeacherConfig

    scope = scope or cfg.run_dir
    name = thought if isinstance(thought, str) else thought.name
    teacher = TeacherConfig(kind="replay", replay=[plans]) if plans else cfg.teach.for_thought(name)
    prefix = "" if scope == cfg.run_dir else f"{scope.name}/"
    return Stage(f"{prefix}teach-{name}", thought, teacher, problems, samples, scope / "teach" / name / FILE, **kw)
