"""Evaluating a student that chooses its own format (SIKeD): each output is scored in the format its
leading tag announces.

    scored = score_chosen(outputs, golds, ["cot", "pot", "eot"])      # [(format or None, Scored)]
    res = evaluate_chosen(model, tok, problems, ["cot", "pot", "eot"], out_dir=d)               # its choice
    res = evaluate_chosen(model, tok, problems, ["cot", "pot", "eot"], force="pot", out_dir=d)  # tag prefilled
    res.metrics["strategies"]       # {"cot": 61, "pot": 30, "eot": 5, "none": 4}: what it chose

The prompt is `thoughts.choice_prompt(question, strategies)` (the one such a student is trained on)
through the chat template, the same for every strategy; `force` prefills that strategy's tag and the
newline after it, exactly as the training targets begin. An output that starts with no tag of the
`strategies` is scored as CoT and counted as "none".

Generation is `student.sample.sample` (k = 1; resumable in `out_dir`, keyed by the weights, prompts,
prefill and settings), so a finished evaluation is read back, not redone. `out_dir` also receives
predictions.jsonl (id, question, gold, output, strategy, prediction, correct, ...) and metrics.json
(dataset, n, correct, accuracy, ci95, strategies, by_strategy, ...), as `eval.evaluate` writes them.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from mathdistill.eval import EvalResult, check_out_dir, check_thought
from mathdistill.eval.results import summarize, write_result
from mathdistill.io import InputError

__all__ = ["NONE", "score_chosen", "evaluate_chosen", "histogram"]

NONE = "none"  # the label of an output that announced none of the strategies


def score_chosen(outputs: Sequence[str], golds: Sequence, strategies: Sequence[str], default: str = "cot") -> list:
    """[(the strategy `output` announced, or None; its `Scored`)]: each output without its tag, scored
    by the evaluation's judge of that strategy (`default` when it announced none of `strategies`)."""
    from mathdistill import thoughts
    from mathdistill.student.sample import judge

    if len(outputs) != len(golds):
        raise InputError(f"{len(outputs)} outputs but {len(golds)} gold answers")
    chosen = [t if t in strategies else None for t in map(thoughts.detect, outputs)]
    verdicts: list = [None] * len(outputs)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(chosen):
        groups.setdefault(t or default, []).append(i)
    for fmt, idx in groups.items():
        scored = judge(fmt)([thoughts.strip_tag(outputs[i]) for i in idx], [golds[i] for i in idx])
        for i, s in zip(idx, scored):
            verdicts[i] = s
    return list(zip(chosen, verdicts))


def histogram(labels: Sequence[str | None], strategies: Sequence[str]) -> dict[str, int]:
    """How often each strategy was chosen, in the order of `strategies`, then "none" (zeros kept)."""
    counts = Counter(label or NONE for label in labels)
    return {t: counts[t] for t in [*strategies, NONE]}


def evaluate_chosen(
    model,
    tokenizer,
    problems: Sequence,
    strategies: Sequence[str],
    *,
    force: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    loop_stop: bool = False,
    weights=None,
    out_dir=None,
    dataset: str | None = None,
    split: str = "test",
    engine: str = "auto",
    progress: bool = True,
) -> EvalResult:
    """Generate one answer per problem with the choice prompt (`force`: that strategy's tag
    prefilled), score each in the strategy it announced, and summarise (see the module doc)."""
    from mathdistill import thoughts
    from mathdistill.student.chat import render_prompt
    from mathdistill.student.sample import sample

    strategies = [check_thought(t) for t in strategies]
    if not strategies or len(set(strategies)) != len(strategies):
        raise InputError(f"strategies must be distinct formats, at least one (got {strategies})")
    if force is not None and force not in strategies:
        raise InputError(f"force '{force}' is not one of the strategies {', '.join(strategies)}")
    problems = list(problems)
    out = check_out_dir(out_dir) if out_dir is not None else None
    if tokenizer is None and isinstance(model, str):
        from mathdistill.models import load_tokenizer

        tokenizer = load_tokenizer(model)
    prompts = [render_prompt(tokenizer, thoughts.choice_prompt(p.question, strategies)) for p in problems]
    prefill = f"{thoughts.get(force).trigger}\n" if force else None
    res = sample(model, tokenizer, problems, force or "cot", k=1, temperature=temperature, top_p=top_p, seed=seed,
                 max_new_tokens=max_new_tokens, batch_size=batch_size, prompts=prompts, prefill=prefill,
                 weights=weights, out_dir=out, engine=engine, loop_stop=loop_stop, progress=progress)
    scored = score_chosen([r["outputs"][0] for r in res.rows], [r["gold"] for r in res.rows], strategies)
    rows = [{"id": r["id"], "question": r["question"], "gold": r["gold"], "output": r["outputs"][0],
             "strategy": t or NONE, "prediction": s.prediction, "correct": bool(s.correct), "error": s.error,
             "num_tokens": r["num_tokens"][0], "looped": r["looped"][0]} for r, (t, s) in zip(res.rows, scored)]
    hist = histogram([t for t, _ in scored], strategies)
    stats = res.stats
    metrics = summarize(
        rows, dataset or problems[0].source, split, force=force, strategies=hist,
        by_strategy={t: {"n": c, "correct": sum(r["correct"] for r in rows if r["strategy"] == t)}
                     for t, c in hist.items() if c},
        prompt=thoughts.choice_prompt("{question}", strategies), prefill=prefill,
        max_new_tokens=stats["max_new_tokens"], temperature=temperature, top_p=stats["top_p"],
        seed=stats["seed"], loop_stop=loop_stop, loop_stopped=sum(r["looped"] for r in rows),
        generated=stats["generated"], reused=stats["reused"], seconds=stats["seconds"],
        generated_tokens=stats["generated_tokens"], tokens_per_second=stats["tokens_per_second"],
        mean_output_tokens=sum(r["num_tokens"] for r in rows) / len(rows), engine=stats["engine"],
    )
    if out is not None:
        write_result(out, rows, metrics)
    return EvalResult(rows, metrics)
