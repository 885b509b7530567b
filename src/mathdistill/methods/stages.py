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
