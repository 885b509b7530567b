"""`mathdistill score`: score rationales written elsewhere ("bring your own teacher data").

Input rows: question, answer (gold: a number, a string, or a GSM8K solution ending `#### N`),
rationale. Output rows: the input rows plus prediction, correct, error. The last stdout line is
one JSON object: n, correct, accuracy, errors (and thought, output).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mathdistill.io import InputError, check_output_file, iter_jsonl, write_jsonl

CHUNK = 256


def _gold(value, where: str) -> str:
    from mathdistill.thoughts import gold_answer

    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or str(value).strip() == "":
        raise InputError(f"{where}: key 'answer' must be a non-empty number or string")
    try:
        return gold_answer(value)
    except ValueError as e:
        raise InputError(f"{where}: key 'answer': {e}") from None


def score_command(
    thought: str = typer.Option(..., "--thought", help="cot, pot, eot, l2m (or knowledge, keypoints: validity)"),
    input: Path = typer.Option(..., "--input", help="JSONL rows with question, answer, rationale"),
    output: Path = typer.Option(..., "--output", help="where to write the scored rows (JSONL)"),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="seconds per program (pot) / system (eot)"),
) -> None:
    """Score rationales written elsewhere; the last stdout line is {n, correct, accuracy, errors}."""
    from rich.console import Console
    from rich.progress import Progress

    from mathdistill import thoughts
    from mathdistill.sandbox import Limits

    if thought.strip().lower() not in thoughts.NAMES:
        raise InputError(f"--thought: unknown format {thought!r}; choose one of {', '.join(thoughts.NAMES)}")
    name = thought.strip().lower()
    check_output_file(output)
    executes = thoughts.thought_class(name).executes  # runs in the sandbox: --timeout applies
    fmt = thoughts.get(name, limits=Limits(timeout=timeout)) if executes else thoughts.get(name)
    rows, golds = [], []
    for lineno, row in iter_jsonl(input, required=("question", "answer", "rationale")):
        where = f"{input}:{lineno}"
        for key in ("question", "rationale"):
            if not isinstance(row[key], str):
                raise InputError(f"{where}: key '{key}' must be a string, got {type(row[key]).__name__}")
        golds.append(_gold(row["answer"], where))
        rows.append(row)
    if not rows:
        raise InputError(f"{input}: empty: no rows to score (one JSON object per line: question, answer, rationale)")
    scored = []
    with Progress(transient=True, disable=len(rows) <= CHUNK, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"scoring {name}", total=len(rows))
        for i in range(0, len(rows), CHUNK):
            part = rows[i: i + CHUNK]
            scored += fmt.score_batch([r["rationale"] for r in part], golds[i: i + CHUNK],
                                      [r["question"] for r in part])
            progress.advance(task, len(part))
    write_jsonl(output, ({**row, **s.as_dict()} for row, s in zip(rows, scored)))
    n, correct = len(rows), sum(s.correct for s in scored)
    summary = {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
               "errors": sum(s.error is not None for s in scored), "thought": name, "output": str(output)}
    typer.echo(json.dumps(summary))
