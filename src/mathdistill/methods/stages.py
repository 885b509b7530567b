"""Stages shared by the recipes: teach → verify → build data → train → eval → results.

Each function reads/writes the run folder (layout: docs/run-folder.md) and is safe to re-run:
the teacher cache makes `teach` free the second time, and `Run.stage` skips finished stages.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mathdistill import thoughts as formats
from mathdistill.data import Problem, load
from mathdistill.io import InputError, read_json, read_jsonl, write_json, write_jsonl
from mathdistill.methods.config import RecipeConfig, Split, TeacherSpec
from mathdistill.methods.runner import Run, console
from mathdistill.paths import data_dir as resolve_data_dir


def problems_for(cfg: RecipeConfig, split: Split) -> list[Problem]:
    problems = load(split.dataset, split.split, data_dir=cfg.data.data_dir)
    end = None if split.limit is None else split.offset + split.limit
    return problems[split.offset : end]


# ----------------------------------------------------------------------------- teach + verify


def _describe(spec: TeacherSpec, thought: str) -> str:
    if spec.kind == "reference":
        return f"reference: GSM8K gold solutions converted to {thought} and verified by execution"
    if spec.kind == "replay":
        return f"replay: {Path(spec.file).name} (recorded outputs)"
    return f"openai-compatible: {spec.model} @ {spec.url}"


def _teacher_config(cfg: RecipeConfig, spec: TeacherSpec, thought: str):
    """The teacher engine's config for a replay or live teacher."""
    from mathdistill.teacher.config import build

    data: dict = {"kind": spec.kind, "concurrency": spec.concurrency, "max_tokens": spec.max_tokens,
                  "temperature": spec.temperature, "headers": spec.headers}
    if spec.kind == "replay":
        path = Path(spec.file)
        if not path.is_absolute():
            root = resolve_data_dir(cfg.data.data_dir)
            path = (root / path) if root else path
        if not path.exists():
            raise InputError(f"teach.per_thought.{thought}.file: {path} not found")
        data["replay"] = [str(path)]
    else:
        data.update(url=spec.url, model=spec.model, key_env=spec.key_env)
    return build(data, where=f"teach.per_thought.{thought}")


def _reference_rows(problems: list[Problem], thought: str) -> list[dict]:
    from mathdistill.thoughts.reference import reference_rationales

    texts = reference_rationales(problems, thought, progress=True)
    have = [p for p in problems if texts[p.id] is not None]
    scored = formats.get(thought).score_batch([texts[p.id] for p in have], [p.answer for p in have])
    by_id = {p.id: s for p, s in zip(have, scored)}
    rows = []
    for p in problems:
        s = by_id.get(p.id)
        rows.append({
            "problem_id": p.id, "question": p.question, "gold": p.answer, "thought": thought, "sample": 0,
            "text": texts[p.id], "prediction": s.prediction if s else None, "correct": bool(s and s.correct),
            "error": (s.error if s else "no reference rationale (conversion failed verification)"),
            "finish_reason": "reference", "usage": None, "kept": bool(s and s.correct),
        })
    return rows


def teach(run: Run, thought: str) -> None:
    """Rationales for `thought` on the training problems, verified; teach/<thought>/{rationales.jsonl,summary.json}."""
    cfg = run.cfg
    spec = cfg.teach.for_thought(thought)
    problems = problems_for(cfg, cfg.data.train)
    out = run.path("teach", thought)
    summary = {"thought": thought, "teacher": _describe(spec, thought), "problems": len(problems)}
    if spec.kind == "reference":
        rows = _reference_rows(problems, thought)
        write_jsonl(out / "rationales.jsonl", rows)
        summary.update(requests=0, cache_hits=0, tokens={"prompt": 0, "completion": 0}, cost=0.0)
    else:
        from mathdistill.teacher.backends import make_backend
        from mathdistill.teacher.engine import VerifyConfig, teach as run_teacher

        tcfg = _teacher_config(cfg, spec, thought)
        verify = VerifyConfig(keep=cfg.teach.keep, dedupe="normalized" if cfg.teach.dedupe else "none")
        result = run_teacher(problems, [thought], make_backend(tcfg), config=tcfg, samples=cfg.teach.samples,
                             out_dir=out, verify_config=verify, progress=True)
        rows, s = result.rows, result.summary
        summary.update(requests=s["requests"], cache_hits=s["cache_hits"], cost=s["cost_total"],
                       tokens={"prompt": s["prompt_tokens"], "completion": s["completion_tokens"]})
    n_correct = sum(r["correct"] for r in rows)
    summary.update(rationales=len(rows), correct=n_correct, kept=sum(r["kept"] for r in rows),
                   **{"yield": round(n_correct / len(rows), 4) if rows else 0.0})
    write_json(out / "summary.json", summary)
    console.print(f"{thought}: {summary['kept']} kept of {len(rows)} rationales ({summary['teacher']})")


# ----------------------------------------------------------------------------- training data


def build_data(run: Run, thoughts: list[str]) -> Path:
    """data/train.jsonl: one (prompt, completion) per kept rationale, each carrying its format's trigger."""
    rows = []
    for thought in thoughts:
        fmt = formats.get(thought)
        for r in read_jsonl(run.path("teach", thought, "rationales.jsonl")):
            if r.get("kept"):
                rows.append({"prompt": fmt.student_prompt(r["question"]), "completion": fmt.student_target(r["text"]),
                             "thought": thought, "problem_id": r["problem_id"]})
    if not rows:
        raise InputError(f"{run.dir}: no usable teacher rationales for {thoughts}: nothing to train on")
    path = run.path("data", "train.jsonl")
    write_jsonl(path, rows)
    write_json(run.path("data", "summary.json"),
               {"examples": len(rows), "per_thought": dict(Counter(r["thought"] for r in rows))})
    return path


def teach_summaries(run: Run) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in sorted(run.path("teach").glob("*/summary.json"))}


# ----------------------------------------------------------------------------- training


def train(run: Run, data: Path, adapter: str = "student", frozen: dict[str, str] | None = None):
    """Fine-tune the student on `data` into train/<adapter>/ (resumes from its last checkpoint)."""
    from mathdistill.student.train import TrainConfig, train as run_training

    cfg = run.cfg
    t = cfg.train
    tcfg = TrainConfig(
        model=cfg.student.model, adapter_name=adapter, full=t.full, frozen_adapters=frozen or {},
        epochs=t.epochs, max_steps=t.max_steps, lr=t.lr, lora_r=t.lora_r, lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout, batch_size=t.batch_size, grad_accum=t.grad_accum,
        max_seq_len=t.max_seq_len, warmup=t.warmup_ratio, seed=cfg.seed, save_steps=t.save_steps,
    )
    out = run.path("train", adapter)
    result = run_training(tcfg, data, out)
    write_json(out / "train_summary.json", {
        "seconds": result.seconds, "steps": result.global_step, "examples": result.examples,
        "tokens": result.completion_tokens, "train_loss": result.train_loss, "resumed_from": result.resumed_from,
    })
    return result


# ----------------------------------------------------------------------------- evaluation


def _vote_rows(per_thought: dict[str, list[dict]], preference: list[str]) -> list[dict]:
    """ETD inference: per problem, a majority vote over every format's answers (all samples)."""
    from mathdistill.answers import is_equivalent, vote

    rows = []
    first = next(iter(per_thought.values()))
    for i, base in enumerate(first):
        answers = {t: rs[i].get("predictions") or [rs[i]["prediction"]] for t, rs in per_thought.items()}
        pred, winner = vote(answers, preference)
        rows.append({"id": base["id"], "question": base["question"], "gold": base["gold"],
                     "output": per_thought[winner][i]["output"] if winner else first[i]["output"],
                     "prediction": pred, "correct": pred is not None and is_equivalent(pred, base["gold"]),
                     "chosen_format": winner, "answers": answers})
    return rows


def evaluate(run: Run, adapter: str | None, label: str = "") -> list[dict]:
    """Evaluate the student (train/<adapter>, or the base model when None) on every eval split,
    in each format and combined by vote; writes eval/<dataset>/<variant>/ and returns result rows."""
    from mathdistill.eval import evaluate as run_eval, wilson_ci
    from mathdistill.student.adapters import load_merged

    cfg = run.cfg
    e = cfg.eval
    variants = e.thoughts or cfg.thoughts
    # the adapter merged into the weights: same text, no adapter layers to run
    model, tok = load_merged(cfg.student.model, run.path("train", adapter) if adapter else None)
    root = run.path("eval", label) if label else run.path("eval")
    out_rows = []
    for split in cfg.data.eval:
        problems = problems_for(cfg, split)
        per_thought = {}
        for thought in variants:
            res = run_eval(model, tok, problems, thought=thought, max_new_tokens=e.max_new_tokens,
                           batch_size=e.batch_size, temperature=e.temperature, samples=e.samples,
                           seed=cfg.seed, out_dir=root / split.dataset / thought, loop_stop=e.loop_stop,
                           dataset=split.dataset, split=split.split,
                           model_name=f"{cfg.student.model}+{adapter}" if adapter else cfg.student.model)
            per_thought[thought] = res.rows
            out_rows.append({"variant": thought, **res.metrics})
            console.print(f"{split.dataset} {thought}: {res.metrics['accuracy']:.1%} of {res.metrics['n']}")
        if e.vote and len(variants) > 1:
            rows = _vote_rows(per_thought, e.preference)
            n, correct = len(rows), sum(r["correct"] for r in rows)
            metrics = {"dataset": split.dataset, "split": split.split, "n": n, "correct": correct,
                       "accuracy": correct / n, "ci95": list(wilson_ci(correct, n)), "variant": "vote",
                       "formats": variants, "preference": e.preference,
                       "chosen": dict(Counter(r["chosen_format"] for r in rows))}
            write_jsonl(root / split.dataset / "vote" / "predictions.jsonl", rows)
            write_json(root / split.dataset / "vote" / "metrics.json", metrics)
            out_rows.append(metrics)
            console.print(f"{split.dataset} vote: {metrics['accuracy']:.1%} of {n}")
    return out_rows


def write_results(run: Run, eval_rows: list[dict], train_seconds: float | None, method: str | None = None) -> None:
    """results.json: one row per (dataset, variant) with accuracy and 95% CI."""
    method = method or run.cfg.method
    rows = [{"method": method, "dataset": r["dataset"], "variant": r["variant"], "n": r["n"],
             "correct": r["correct"], "accuracy": r["accuracy"], "ci95": r["ci95"],
             "train_seconds": train_seconds} for r in eval_rows]
    write_json(run.path("results.json"),
               {"run": run.cfg.name, "method": method, "student": run.cfg.student.model, "rows": rows})


def report(run: Run) -> Path:
    from mathdistill.report import write_report

    return write_report([run.dir], run.path("report"))
