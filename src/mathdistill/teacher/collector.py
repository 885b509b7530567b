"""`collect`: one format's teacher rationales on a problem set, verified, written to a folder.

    from mathdistill.teacher import TeacherConfig, collect
    result = collect(problems, "pot", TeacherConfig(kind="reference"), "runs/x/teach/pot")
    result.rows, result.summary

Explicit inputs only (no recipe config, no run folder). Writes out_dir/rationales.jsonl (one row
per problem and sample: problem_id, question, gold, thought, sample, text, prediction, correct,
error, finish_reason, usage, kept, ...) and out_dir/summary.json (thought, teacher: who wrote the
rationales in words, offline_stand_in, problems, rationales, correct, kept, yield, requests,
cache_hits, tokens {prompt, completion}, cost). summary.json is written last and only on success:
it marks the folder complete.

- `reference`: the problems' GSM8K gold solutions converted to the format and verified by
  execution (`mathdistill.thoughts.reference`); one rationale per problem, `samples` does not apply.
- `replay`, `openai`, `hf`, `vllm`: the teacher engine (`engine.teach`, its reply cache and
  teach_summary.json in out_dir). Requests still failed after their retries raise TeacherError
  (what succeeded is cached: calling again sends only the failed ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from mathdistill.data import Problem
from mathdistill.io import InputError, write_json, write_jsonl

from .config import TeacherConfig
from .engine import TeachResult, VerifyConfig, resolve_thoughts, teach

KEEP = ("correct", "usable", "all")
DEDUPE = ("none", "exact", "normalized")


def reference_rows(problems: Sequence[Problem], thought, progress: bool = False) -> list[dict]:
    """One row per problem: its verified reference rationale in `thought` (a Thought), or none
    (text None, kept False) when the conversion failed or did not verify."""
    from mathdistill.thoughts.reference import reference_formats, reference_rationales

    if thought.name not in reference_formats():
        raise InputError(f"the reference teacher converts GSM8K gold solutions to {', '.join(reference_formats())}; "
                         f"not to {thought.name}: configure another teacher for it")
    texts = reference_rationales(problems, thought, progress=progress)  # the Thought: its calc_marks too
    have = [p for p in problems if texts[p.id] is not None]
    scored = thought.score_batch([texts[p.id] for p in have], [p.answer for p in have])
    by_id = {p.id: s for p, s in zip(have, scored)}
    rows = []
    for p in problems:
        s = by_id.get(p.id)
        rows.append({
            "problem_id": p.id, "question": p.question, "gold": p.answer, "thought": thought.name, "sample": 0,
            "text": texts[p.id], "prediction": s.prediction if s else None, "correct": bool(s and s.correct),
            "error": (s.error if s else "no reference rationale (conversion failed verification)"),
            "finish_reason": "reference", "usage": None, "kept": bool(s and s.correct),
        })
    return rows


def collect(
    problems: Sequence[Problem],
    thought,
    teacher: TeacherConfig,
    out_dir: str | Path,
    *,
    samples: int = 1,
    keep: str = "correct",
    dedupe: str = "normalized",
    context: Callable | Mapping | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> TeachResult:
    """Rationales of `teacher` in `thought` (a name or a Thought) for `problems`, verified, into
    `out_dir` (see the module docstring). keep: which rows are marked kept (correct | usable | all);
    dedupe: drop repeated rationales of a problem (none | exact | normalized); context: extra
    teacher inputs (engine.teach's; default: the format's `teacher_context`); data_dir: the data
    root relative replay files are looked up in (`TeacherConfig.with_data_root`)."""
    if keep not in KEEP:
        raise InputError(f"keep '{keep}': expected one of {', '.join(KEEP)}")
    if dedupe not in DEDUPE:
        raise InputError(f"dedupe '{dedupe}': expected one of {', '.join(DEDUPE)}")
    (fmt,) = resolve_thoughts(thought)
    problems = list(problems)
    out = Path(out_dir)
    (out / "summary.json").unlink(missing_ok=True)  # present only beside complete rationales
    if teacher.kind == "reference":
        rows = reference_rows(problems, fmt, progress)
        write_jsonl(out / "rationales.jsonl", rows)
        stats = {"requests": 0, "cache_hits": 0, "tokens": {"prompt": 0, "completion": 0}, "cost": 0.0}
    else:
        from .backends import make_backend

        cfg = teacher.with_data_root(data_dir)
        result = teach(problems, [fmt], make_backend(cfg), config=cfg, samples=samples, out_dir=out, context=context,
                       verify_config=VerifyConfig(keep=keep, dedupe=dedupe), progress=progress)
        result.raise_if_failed()
        rows, s = result.rows, result.summary
        stats = {"requests": s["requests"], "cache_hits": s["cache_hits"],
                 "tokens": {"prompt": s["prompt_tokens"], "completion": s["completion_tokens"]},
                 "cost": s["cost_total"], "model": s["teacher"], "retries": s["retries"], "misses": s["misses"],
                 "length_cut": s["length_cut"], "wall_s": s["wall_s"]}
    correct = sum(r["correct"] for r in rows)
    summary = {
        "thought": fmt.name, "teacher": teacher.describe(fmt.name), "offline_stand_in": teacher.offline_stand_in,
        "problems": len(problems), "rationales": len(rows), "correct": correct, "kept": sum(r["kept"] for r in rows),
        "yield": round(correct / len(rows), 4) if rows else 0.0, **stats,
    }
    write_json(out / "summary.json", summary)
    return TeachResult(rows, summary)
