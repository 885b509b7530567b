"""Evaluate a student on a benchmark: prompts, batched generation, scoring, metrics with a 95% CI.

    result = evaluate(model, tokenizer, problems, thought="cot", shots=4, out_dir="runs/x/eval")
    result.metrics["accuracy"], result.metrics["ci95"], result.rows[0]["prediction"]

Prompts (`mathdistill.student.prompts`): the thought's `student_prompt(question)` as the user message,
through the chat template (`mathdistill.student.chat`); k-shot prompts put k GSM8K *train* problems (with their
reference rationale in the same format) before it as earlier turns. Generation and scoring are
`mathdistill.student.sample.sample` (the thought's `score_batch`: PoT executed, EoT solved);
with `samples > 1` the prediction is the majority vote of the samples.

Files in `out_dir` (written atomically at the end): `predictions.jsonl` (one row per problem:
id, question, gold, output, prediction, correct, ...) and `metrics.json` (dataset, n, correct,
accuracy, ci95, ...). Finished generations are appended to `predictions.partial.jsonl` after
each batch, so an interrupted run resumes where it stopped; a finished run with the same
settings is loaded, not redone (its `seconds` are then this call's, 0, and `measured` keeps the
timing of the call that generated the predictions). "The same settings" (the resume key) means
the same weights, adapter, prompts (exemplars included) and generation settings. The weights are named by
`weights` (`weights_identity(model, adapter_dir)`: sha256 of the base weights and of the adapter
files, so a retrained adapter in the same folder is a different model); without it, by a sha256
of the model's tensors in memory.

Formats: the ones whose output has an answer (`THOUGHTS`): cot, pot, eot, l2m, and keypoints,
scored on the answer of its solution part. `knowledge` gives no answer and is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from mathdistill.eval.results import EvalResult, summarize, tally, wilson_ci, write_result
from mathdistill.io import InputError, check_out_dir, iter_jsonl, read_json
from mathdistill.student.adapters import tensors_sha256, weights_identity
from mathdistill.student.generate import DEFAULT_MAX_NEW_TOKENS  # generation's default, one definition
from mathdistill.student.prompts import THOUGHTS, build_prompts, check_thought, few_shot_exemplars

__all__ = ["EvalResult", "evaluate", "wilson_ci", "tally", "summarize", "write_result", "few_shot_exemplars",
           "build_prompts", "check_thought", "check_out_dir", "weights_identity", "THOUGHTS", "PARTIAL",
           "DEFAULT_MAX_NEW_TOKENS"]

PARTIAL = "predictions.partial.jsonl"


def _key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _finished(out_dir: Path, key: str) -> dict | None:
    """The metrics.json of the finished evaluation in `out_dir`, when it was made with the same settings."""
    metrics, preds = out_dir / "metrics.json", out_dir / "predictions.jsonl"
    if not (metrics.is_file() and preds.is_file()):
        return None
    try:
        m = read_json(metrics)
    except InputError:
        return None
    return m if m.get("key") == key else None


def _timing(finished: dict) -> dict | None:
    """The timing of the call that generated a finished evaluation's predictions (its own, or the one it
    carried when it reused everything): {"n", "seconds", "generated_tokens", "tokens_per_second"}."""
    if finished.get("measured"):
        return finished["measured"]
    if finished.get("generated") == finished.get("n") and finished.get("seconds"):
        return {k: finished.get(k) for k in ("n", "seconds", "generated_tokens", "tokens_per_second")}
    return None


def generation_timing(metrics: dict) -> dict:
    """Where an evaluation's seconds and tokens/s are: its `measured` when it reused every prediction
    (the call that generated them), else its own metrics."""
    return metrics.get("measured") or metrics


def _cached(out_dir: Path, finished: dict | None, key: str, ids: set[str]) -> dict[str, dict]:
    """Generations already made with the same settings (`finished`: `_finished(out_dir, key)`), from its
    predictions and the partial file: {problem id: {"texts", "num_tokens", "looped"}} (and
    "interventions" when made with the calculator)."""
    from mathdistill.student.sample import read_generations

    found: dict[str, dict] = {}
    if finished is not None:
        for _, row in iter_jsonl(out_dir / "predictions.jsonl"):
            if row.get("id") in ids:
                texts = row.get("outputs") or [row["output"]]
                looped = row.get("looped", False)
                found[row["id"]] = {"texts": texts, "num_tokens": _as_list(row.get("num_tokens")),
                                    "looped": looped if isinstance(looped, list) else [looped] * len(texts)}
                if "interventions" in row:
                    found[row["id"]]["interventions"] = _as_list(row["interventions"])
    return found | read_generations(out_dir / PARTIAL, dict.fromkeys(ids, key))


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
    weights: dict | str | None = None,
    prompts: Sequence[str] | None = None,
    progress: bool = True,
    loop_stop: bool = False,
    engine: str = "auto",
    calculator: bool = False,
) -> EvalResult:
    """Generate, score and summarise `problems` (a list of `mathdistill.data.Problem`).

    `exemplars` overrides the k-shot exemplars (else `few_shot_exemplars(thought, shots)`);
    `adapter` is passed to `generate` (a PeftModel adapter name, "base", or None = as is);
    `model_name` names the model in metrics; `weights` identifies the weights in the resume key
    (e.g. `weights_identity(model, adapter_dir)`); left out, a sha256 of the model's tensors in
    memory does (~0.5 s for 135M parameters). `prompts` (one already-rendered prompt per problem)
    replaces the thought's prompts and the exemplars. `loop_stop` ends completions that repeat
    themselves early (`student.generate.ends_in_loop`); metrics count them (`loop_stopped`).
    `engine` ("auto", "hf", "vllm") is `student.sample`'s. Samples are seeded by (seed, problem
    id, sample index), so they do not depend on batching or resuming. `calculator=True` forces the
    value of every arithmetic step the student writes (`student.calculator`; hf engine only): rows
    carry `interventions`, metrics `interventions`, `interventions_per_answer` and
    `answers_with_interventions` (the share of answers it changed is the share of predictions that
    differ from a run without it: `benchmarks/arith_slips.py --compare`).
    Every setting is checked before anything is generated or written.
    """
    from mathdistill.student.generate import check_settings
    from mathdistill.student.sample import Cache, pick_engine, sample

    if not problems:
        raise InputError("nothing to evaluate: the problem list is empty")
    thought = check_thought(thought)
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise InputError(f"shots must be an integer >= 0 (got {shots!r})")
    check_settings(max_new_tokens=max_new_tokens, batch_size=batch_size, samples=samples,
                   temperature=temperature, top_p=top_p)
    out = check_out_dir(out_dir) if out_dir is not None else None
    by_id = {p.id: p for p in problems}
    if len(by_id) != len(problems):
        raise InputError("problem ids are not unique")
    if prompts is not None:
        if len(prompts) != len(problems):
            raise InputError(f"{len(prompts)} prompts for {len(problems)} problems")
        exemplars = []
    elif exemplars is None:
        exemplars = few_shot_exemplars(thought, shots, data_dir, exclude=[p.question for p in problems])
    exemplars = list(exemplars)
    engine = pick_engine(engine, model, loop_stop, calculator)
    if stop is None and exemplars and not getattr(tokenizer, "chat_template", None):
        stop = ["\n\n"]  # plain-text k-shot prompts separate exemplars with a blank line
    dataset = dataset or problems[0].source
    model_name = model_name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    custom = prompts is not None
    prompts = list(prompts) if custom else build_prompts(tokenizer, thought, [p.question for p in problems], exemplars)
    if weights is None and out is not None:
        weights = tensors_sha256(model)
    # the prompts: all of them when given, else the template around a question (chat template,
    # instruction, exemplars), so a run over more problems reuses the ones already done
    template = prompts if custom else build_prompts(tokenizer, thought, ["{question}"], exemplars)
    settings = {
        "prompts": hashlib.sha256("\x00".join(template).encode()).hexdigest(),
        "weights": weights, "adapter": adapter, "dataset": dataset, "split": split, "thought": thought,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0, "samples": samples,
        "seed": seed if temperature > 0 else None, "stop": list(stop or []),
    }
    # only when they differ from what came before, so results saved earlier still resume
    if loop_stop:
        settings["loop_stop"] = True
    if calculator:
        settings["calculator"] = True
    if temperature > 0:
        settings["sampler"] = "per-row"  # seeded by (seed, problem id, sample index) since issue 12
    if engine != "hf":
        settings["engine"] = engine
    key = _key(settings)
    finished = _finished(out, key) if out is not None else None
    cache = Cache(out / PARTIAL if out is not None else None, dict.fromkeys(by_id, key),
                  _cached(out, finished, key, set(by_id)) if out is not None else {})
    try:
        res = sample(model, tokenizer, problems, thought, k=samples, temperature=temperature, top_p=top_p,
                     seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size, adapter=adapter,
                     prompts=prompts, stop=stop, engine=engine, loop_stop=loop_stop, progress=progress, cache=cache,
                     **({"calculator": True} if calculator else {}))
    finally:
        cache.close()
    rows = []
    for r in res.rows:
        row = {"id": r["id"], "question": r["question"], "gold": r["gold"], "output": r["outputs"][0]}
        if samples == 1:
            row.update(prediction=r["predictions"][0], correct=r["corrects"][0], error=r["errors"][0],
                       num_tokens=r["num_tokens"][0], looped=r["looped"][0])
        else:
            pred, ok = _vote(r["predictions"], r["corrects"])
            row.update(prediction=pred, correct=ok, error=None if pred is not None else r["errors"][0],
                       outputs=r["outputs"], predictions=r["predictions"], corrects=r["corrects"],
                       num_tokens=r["num_tokens"], looped=r["looped"])
        if calculator:
            row["interventions"] = r["interventions"][0] if samples == 1 else r["interventions"]
        rows.append(row)
    stats = res.stats
    generated_now, seconds, todo = stats["generated_tokens"], stats["seconds"], stats["generated"]

    n = len(rows)
    metrics = summarize(
        rows, dataset, split,
        model=model_name, weights=weights, adapter=adapter, thought=thought, shots=len(exemplars),
        exemplar_ids=[pid for pid, _, _ in exemplars], max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=settings["top_p"], samples=samples, seed=settings["seed"],
        stop=settings["stop"], batch_size=batch_size, loop_stop=loop_stop,
        loop_stopped=sum(sum(r["looped"]) for r in res.rows),
        generated=todo, reused=n - todo, seconds=seconds, generated_tokens=generated_now,
        problems_per_second=todo / seconds if todo and seconds > 0 else None,
        tokens_per_second=stats["tokens_per_second"], engine=engine,
        mean_output_tokens=sum(sum(_as_list(r["num_tokens"])) for r in rows) / (n * samples),
        key=key,
    )
    earlier = _timing(finished) if todo == 0 and finished else None
    if earlier and earlier["n"] == n:  # all reused: the timing of the call that generated them
        metrics["measured"] = earlier
    if calculator:
        metrics["calculator"] = True
        metrics["interventions"] = stats["interventions"]
        metrics["interventions_per_answer"] = stats["interventions_per_answer"]
        touched = sum(sum(n > 0 for n in r["interventions"]) for r in res.rows)
        metrics["answers_with_interventions"] = touched / (n * samples)
    if samples > 1:
        metrics["pass_at_k"], metrics["sample_accuracy"] = stats["pass_at_k"], stats["sample_accuracy"]
    if out is not None:
        write_result(out, rows, metrics)
        (out / PARTIAL).unlink(missing_ok=True)
    return EvalResult(rows, metrics)
