"""One evaluation's result, scored and written one way: every evaluator (`eval.evaluate`, the vote over formats,
a self-chosen strategy, LoRID's loop) reports the same counts with the same interval, in the same two files.

    metrics = summarize(rows, "gsm8k", "test", seconds=12.5)   # dataset, split, n, correct, accuracy, ci95, no_answer
    write_result(out_dir, rows, metrics)                       # out_dir/predictions.jsonl + out_dir/metrics.json
    tally(correct, n)                                          # n, correct, accuracy, ci95 (a Wilson 95% interval)

Rows are one per problem with at least `prediction` (None: no answer) and `correct`. Both files are written
atomically (a crash leaves the earlier ones, never half of one); the report reads them (`report.runs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mathdistill.io import write_json, write_jsonl

__all__ = ["EvalResult", "wilson_ci", "tally", "summarize", "write_result"]


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


def tally(correct: int, n: int) -> dict:
    """{"n", "correct", "accuracy", "ci95"} of `correct` right answers out of `n` (n > 0)."""
    return {"n": n, "correct": correct, "accuracy": correct / n, "ci95": list(wilson_ci(correct, n))}


def summarize(rows: list[dict], dataset: str | None, split: str | None, **extra) -> dict:
    """The metrics every evaluation starts with: dataset, split, the tally of `rows`' `correct` and how many gave
    no answer (`no_answer`), then `extra` (each evaluator's own fields)."""
    return {"dataset": dataset, "split": split, **tally(sum(r["correct"] for r in rows), len(rows)),
            "no_answer": sum(r["prediction"] is None for r in rows), **extra}


def write_result(out_dir: str | Path, rows: list[dict], metrics: dict) -> None:
    """out_dir/predictions.jsonl (the rows) and out_dir/metrics.json (the metrics), each written atomically."""
    write_jsonl(Path(out_dir) / "predictions.jsonl", rows)
    write_json(Path(out_dir) / "metrics.json", metrics)
