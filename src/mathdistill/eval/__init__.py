"""Evaluate a student on a benchmark: prompts, batched generation, scoring, metrics with a 95% CI.

    result = evaluate(model, tokenizer, problems, thought="cot", shots=4, out_dir="runs/x/eval")
    result.metrics["accuracy"], result.metrics["ci95"], result.rows[0]["prediction"]

Prompts: the thought's `student_prompt(question)` as the user message, through the chat
template (`mathdistill.student.chat`); k-shot prompts put k GSM8K *train* problems (with their
reference rationale in the same format) before it as earlier turns. Scoring: the thought's
`score_batch`. With `samples > 1` the prediction is the majority vote of the samples.

Files in `out_dir` (written atomically at the end): `predictions.jsonl` (one row per problem:
id, question, gold, output, prediction, correct, ...) and `metrics.json` (dataset, n, correct,
accuracy, ci95, ...). Finished generations are appended to `predictions.partial.jsonl` after
each batch, so an interrupted run resumes where it stopped; a finished run with the same
settings is loaded, not redone.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mathdistill.io import InputError, iter_jsonl, read_json, write_json, write_jsonl

__all__ = ["EvalResult", "evaluate", "wilson_ci", "few_shot_exemplars", "build_prompts", "PARTIAL", "DEFAULT_MAX_NEW_TOKENS"]

PARTIAL = "predictions.partial.jsonl"
DEFAULT_MAX_NEW_TOKENS = 320


@dataclass
class EvalResult:
    rows: list[dict]
    metrics: dict


def wilson_ci(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% by default); (0, 1) when n is 0."""
    if n <= 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct <= 0 else max(0.0, centre - half)
    hi = 1.0 if correct >= n else min(1.0, centre + half)
    return (lo, hi)


def few_shot_exemplars(thought: str, k: int, data_dir=None, exclude: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """k exemplars (problem id, user message, assistant answer) in `thought`'s format.

    Taken in file order from GSM8K *train* (never a test split), using each problem's
    verified reference rationale (`mathdistill.thoughts.reference`); problems whose question
    is in `exclude` (the ones being evaluated) are skipped.
    """
    if k <= 0:
        return []
    from mathdistill import data, thoughts
    from mathdistill.thoughts.reference import FORMATS, reference_rationale

    if thought not in FORMATS:
        raise InputError(f"--shots needs reference rationales, which exist for {', '.join(FORMATS)} (not '{thought}')")
    fmt = thoughts.get(thought)
    skip = {q.strip() for q in exclude}
    out = []
    for p in data.load("gsm8k", "train", data_dir=data_dir):
        if p.question.strip() in skip:
            continue
        rationale = reference_rationale(p, thought)
        if rationale is not None:
            out.append((p.id, fmt.student_prompt(p.question), fmt.student_target(rationale)))
        if len(out) == k:
            return out
    raise InputError(f"only {len(out)} GSM8K train problems have a {thought} reference rationale; asked for {k}")


def build_prompts(tokenizer, thought: str, questions: Sequence[str], exemplars: Sequence[tuple[str, str, str]] = ()) -> list[str]:
    """Prompt text for each question: chat template, k-shot exemplars as earlier turns."""
    from mathdistill import thoughts
    from mathdistill.student.chat import render_few_shot, render_prompt

    fmt = thoughts.get(thought)
    shots = [(user, answer) for _, user, answer in exemplars]
    if shots:
        return [render_few_shot(tokenizer, shots, fmt.student_prompt(q)) for q in questions]
    return [render_prompt(tokenizer, fmt.student_prompt(q)) for q in questions]


def _key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _cached(out_dir: Path, key: str, ids: set[str]) -> dict[str, dict]:
    """Generations already made with the same settings: {problem id: {"texts", "num_tokens", "looped"}}."""
    found: dict[str, dict] = {}
    metrics, preds = out_dir / "metrics.json", out_dir / "predictions.jsonl"
    if metrics.exists() and preds.exists():
        try:
            same = read_json(metrics).get("key") == key
        except InputError:
            same = False
        if same:
            for _, row in iter_jsonl(preds):
                if row.get("id") in ids:
                    texts = row.get("outputs") or [row["output"]]
                    looped = row.get("looped", False)
                    found[row["id"]] = {"texts": texts, "num_tokens": _as_list(row.get("num_tokens")),
                                        "looped": looped if isinstance(looped, list) else [looped] * len(texts)}
    partial = out_dir / PARTIAL
    if partial.exists():
        with partial.open(encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if row.get("key") == key and row.get("id") in ids:
                    found[row["id"]] = {"texts": row["texts"], "num_tokens": row["num_tokens"],
                                        "looped": row.get("looped") or [False] * len(row["texts"])}
    return found


def _as_list(x) -> list[int]:
    return list(x) if isinstance(x, list) else [x or 0]


def _vote(preds: list[str | None], corrects: list[bool]) -> tuple[str | None, bool]:
    """Majority answer among samples (equivalent answers count as one; ties: the earliest sample)
    and whether the thought's own scoring called it correct."""
    from mathdistill.answers import vote

    pred, _ = vote({"samples": preds}, ["samples"])
    if pred is None:
        return None, False
    return pred, corrects[preds.index(pred)]  # the winner is one of the samples: its own verdict


def evaluate(
    model,
    tokenizer,
    problems: Sequence,
    *,
    thought: str = "cot",
    shots: int = 0,
    exemplars: Sequence[tuple[str, str, str]] | None = None,
    data_dir=None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    samples: int = 1,
    seed: int | None = 0,
    stop: Sequence[str] | None = None,
    adapter: str | None = None,
    out_dir=None,
    dataset: str | None = None,
    split: str = "test",
    model_name: str | None = None,
    prompts: Sequence[str] | None = None,
    progress: bool = True,
    loop_stop: bool = False,
) -> EvalResult:
    """Generate, score and summarise `problems` (a list of `mathdistill.data.Problem`).

    `exemplars` overrides the k-shot exemplars (else `few_shot_exemplars(thought, shots)`);
    `adapter` is passed to `generate` (a PeftModel adapter name, "base", or None = as is);
    `model_name` identifies the weights in metrics and in the resume key. `prompts` (one
    already-rendered prompt per problem) replaces the thought's prompts and the exemplars.
    `loop_stop` ends completions that repeat themselves early (`student.generate.ends_in_loop`);
    metrics count them (`loop_stopped`).
    """
    from mathdistill import thoughts
    from mathdistill.student.generate import generate

    if not problems:
        raise InputError("nothing to evaluate: the problem list is empty")
    try:
        fmt = thoughts.get(thought)
    except ValueError as e:
        raise InputError(str(e)) from None
    if shots < 0:
        raise InputError("--shots must be >= 0")
    if prompts is not None:
        if len(prompts) != len(problems):
            raise InputError(f"{len(prompts)} prompts for {len(problems)} problems")
        exemplars = []
    elif exemplars is None:
        exemplars = few_shot_exemplars(thought, shots, data_dir, exclude=[p.question for p in problems])
    exemplars = list(exemplars)
    if stop is None and exemplars and not getattr(tokenizer, "chat_template", None):
        stop = ["\n\n"]  # plain-text k-shot prompts separate exemplars with a blank line
    dataset = dataset or problems[0].source
    model_name = model_name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    custom = prompts is not None
    prompts = list(prompts) if custom else build_prompts(tokenizer, thought, [p.question for p in problems], exemplars)
    settings = {
        "prompts": hashlib.sha256("\x00".join(prompts).encode()).hexdigest() if custom else None,
        "model": model_name, "adapter": adapter, "dataset": dataset, "split": split, "thought": thought,
        "exemplars": [(u, a) for _, u, a in exemplars], "max_new_tokens": max_new_tokens,
        "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0, "samples": samples,
        "seed": seed if temperature > 0 else None, "stop": list(stop or []),
    }
    if loop_stop:  # only when on, so results saved before the option existed still resume
        settings["loop_stop"] = True
    key = _key(settings)
    out = Path(out_dir) if out_dir is not None else None
    by_id = {p.id: p for p in problems}
    if len(by_id) != len(problems):
        raise InputError("problem ids are not unique")
    done = _cached(out, key, set(by_id)) if out is not None else {}
    todo = [i for i, p in enumerate(problems) if p.id not in done]

    partial_file = None
    if out is not None and todo:
        out.mkdir(parents=True, exist_ok=True)
        partial_file = (out / PARTIAL).open("a", encoding="utf-8")

    def save(j: int, g) -> None:
        pid = problems[todo[j]].id
        done[pid] = {"texts": g.texts, "num_tokens": g.num_tokens, "looped": g.looped}
        if partial_file is not None:
            partial_file.write(json.dumps({"key": key, "id": pid, **done[pid]}, ensure_ascii=False) + "\n")
            partial_file.flush()

    t0 = time.perf_counter()
    try:
        if todo:
            generate(
                model, tokenizer, [prompts[i] for i in todo], max_new_tokens=max_new_tokens, batch_size=batch_size,
                temperature=temperature, top_p=top_p, num_samples=samples, stop=stop, adapter=adapter,
                seed=seed, progress=progress, on_result=save, loop_stop=loop_stop,
            )
    finally:
        if partial_file is not None:
            partial_file.close()
    seconds = time.perf_counter() - t0

    # score every sample of every problem in one batch (PoT programs run in parallel)
    flat = [(p, t) for p in problems for t in done[p.id]["texts"]]
    scored = fmt.score_batch([t for _, t in flat], [p.answer for p, _ in flat])
    rows, pos = [], 0
    for p in problems:
        texts, ntoks, looped = done[p.id]["texts"], done[p.id]["num_tokens"], done[p.id]["looped"]
        s = scored[pos : pos + len(texts)]
        pos += len(texts)
        row = {"id": p.id, "question": p.question, "gold": p.answer, "output": texts[0]}
        if len(texts) == 1:
            row.update(prediction=s[0].prediction, correct=bool(s[0].correct), error=s[0].error, num_tokens=ntoks[0],
                       looped=bool(looped[0]))
        else:
            pred, ok = _vote([x.prediction for x in s], [bool(x.correct) for x in s])
            row.update(prediction=pred, correct=ok, error=None if pred is not None else s[0].error,
                       outputs=texts, predictions=[x.prediction for x in s],
                       corrects=[bool(x.correct) for x in s], num_tokens=ntoks, looped=[bool(x) for x in looped])
        rows.append(row)
    generated_now = sum(sum(done[problems[i].id]["num_tokens"]) for i in todo)

    n, correct = len(rows), sum(r["correct"] for r in rows)
    metrics = {
        "dataset": dataset, "split": split, "n": n, "correct": correct, "accuracy": correct / n,
        "ci95": list(wilson_ci(correct, n)), "no_answer": sum(r["prediction"] is None for r in rows),
        "model": model_name, "adapter": adapter, "thought": thought, "shots": len(exemplars),
        "exemplar_ids": [pid for pid, _, _ in exemplars], "max_new_tokens": max_new_tokens,
        "temperature": temperature, "top_p": settings["top_p"], "samples": samples, "seed": settings["seed"],
        "stop": settings["stop"], "batch_size": batch_size, "loop_stop": loop_stop,
        "loop_stopped": sum(sum(done[p.id]["looped"]) for p in problems),
        "generated": len(todo), "reused": n - len(todo), "seconds": round(seconds, 3),
        "generated_tokens": generated_now,
        "problems_per_second": len(todo) / seconds if todo and seconds > 0 else None,
        "tokens_per_second": generated_now / seconds if todo and seconds > 0 else None,
        "mean_output_tokens": sum(sum(_as_list(r["num_tokens"])) for r in rows) / (n * samples),
        "key": key,
    }
    if samples > 1:
        metrics["pass_at_k"] = sum(any(r["corrects"]) for r in rows) / n
        metrics["sample_accuracy"] = sum(sum(r["corrects"]) for r in rows) / (n * samples)
    if out is not None:
        write_jsonl(out / "predictions.jsonl", rows)
        write_json(out / "metrics.json", metrics)
        (out / PARTIAL).unlink(missing_ok=True)
    return EvalResult(rows, metrics)
