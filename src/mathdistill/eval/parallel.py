"""Data-parallel evaluation: every process of an `accelerate launch` evaluates its share of the problems
with `eval.evaluate`, and the main process merges the shares into the one evaluation a single process writes.

    accelerate launch --multi_gpu --num_processes 4 -m mathdistill.eval.parallel --dataset gsm8k --out DIR ...
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m mathdistill.eval.parallel ...

Process r of w takes problems r, r + w, r + 2w, ... (`mathdistill.shards`, as `student.parallel` does) on its
own device (cuda:<local rank>, or the CPU) and writes DIR/shards/<r>-of-<w>/ (resumable: `evaluate`'s own cache); the
main process then writes DIR/predictions.jsonl in problem order and DIR/metrics.json (contract 4), whose
`seconds` is the slowest share's, `generated_tokens` the sum, `tokens_per_second` their ratio, and
`processes` the number of processes. Predictions do not depend on the split: greedy rows are computed
alone or in batches the same way, and samples are seeded by (seed, problem id, sample index).
On a machine without GPUs, `--multi_gpu` (or configs/accelerate/cpu_ddp.yaml) starts CPU processes that
meet over gloo; accelerate's `--cpu` alone starts one process (its multi-CPU mode needs mpirun).
Plain `python -m mathdistill.eval.parallel ...` is one process: the same result as `mathdistill eval`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import typer

from mathdistill.eval.config import EvalConfig
from mathdistill.eval.results import write_result
from mathdistill.runtime import config_option
from mathdistill.shards import SHARDS, combine, in_order, shard, shard_dir  # noqa: F401 (shard, SHARDS: API)

# metrics that add up over shares, and those that are means over problems (weighted by each share's n)
_SUMMED = ("correct", "no_answer", "loop_stopped", "generated", "reused", "generated_tokens", "interventions")
_MEANS = ("mean_output_tokens", "pass_at_k", "sample_accuracy", "interventions_per_answer", "answers_with_interventions")


def merge(order: Sequence[str], parts: Sequence[tuple[list[dict], dict]]) -> tuple[list[dict], dict]:
    """(rows in `order` of problem ids, metrics) of one evaluation from its shares' (rows, metrics)."""
    from mathdistill.eval.results import tally

    rows = in_order(order, [r for rows, _ in parts for r in rows])
    metrics = combine([m for _, m in parts], _SUMMED, _MEANS)
    n, seconds = metrics["n"], metrics["seconds"]
    metrics.update(**tally(metrics["correct"], n),
                   problems_per_second=metrics["generated"] / seconds if metrics["generated"] and seconds > 0 else None,
                   tokens_per_second=metrics["generated_tokens"] / seconds if seconds > 0 else None)
    metrics.pop("key", None)  # each share has its own resume key (its problems); see shards/
    return rows, metrics


def parallel_eval_command(
    dataset: str = typer.Option(..., "--dataset", help="Benchmark (as `mathdistill eval --dataset`)."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Folder for predictions.jsonl and metrics.json."),
    model: str = typer.Option("smollm2-135m", "--model", help="HF id, local model folder, .gguf file or alias."),
    split: str = typer.Option("test", "--split"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N problems."),
    thought: str = typer.Option("cot", "--thought"),
    adapter: Optional[Path] = typer.Option(None, "--adapter", exists=True, file_okay=False),
    shots: int = config_option(EvalConfig, "shots", "--shots"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", exists=True, file_okay=False),
    max_new_tokens: int = config_option(EvalConfig, "max_new_tokens", "--max-new-tokens"),
    batch_size: int = config_option(EvalConfig, "batch_size", "--batch-size",
                                    help="Completions generated together, per process."),
    temperature: float = config_option(EvalConfig, "temperature", "--temperature"),
    top_p: float = config_option(EvalConfig, "top_p", "--top-p"),
    samples: int = config_option(EvalConfig, "samples", "--samples"),
    seed: int = typer.Option(0, "--seed", min=0),
    loop_stop: bool = config_option(EvalConfig, "loop_stop", "--loop-stop/--no-loop-stop"),
) -> None:
    """Evaluate this process's share; the main process writes OUT/predictions.jsonl and OUT/metrics.json and
    prints the metrics JSON (one line on stdout)."""
    from mathdistill import data, runtime, shards
    from mathdistill.eval import check_out_dir, check_thought, evaluate, few_shot_exemplars
    from mathdistill.student.adapters import load_student

    runtime.quiet()
    state = shards.processes()
    thought = check_thought(thought)
    check_out_dir(out)
    problems = data.load(dataset, split=split, data_dir=data_dir, limit=limit)
    exemplars = few_shot_exemplars(thought, shots, data_dir, exclude=[p.question for p in problems])
    name = f"{model}+{adapter.resolve()}" if adapter is not None else model
    m, tok, weights = load_student(model, adapter)
    m.to(state.device)  # cuda:<local rank> (accelerate made it this process's current GPU), or the CPU

    def work(mine, folder):
        evaluate(m, tok, mine, thought=thought, exemplars=exemplars, max_new_tokens=max_new_tokens,
                 batch_size=batch_size, temperature=temperature, top_p=top_p, samples=samples, seed=seed,
                 out_dir=folder, dataset=dataset, split=split, model_name=name,
                 weights=weights, progress=state.is_main_process, loop_stop=loop_stop)

    folders = shards.run(problems, out, work, state)
    if state.is_main_process:
        rows, metrics = merge([p.id for p in problems], [_read(f) for f in folders])
        write_result(out, rows, metrics)
        typer.echo(json.dumps(metrics))
    state.wait_for_everyone()


def _read(folder: Path) -> tuple[list[dict], dict]:
    from mathdistill.io import iter_jsonl, read_json

    return [row for _, row in iter_jsonl(folder / "predictions.jsonl")], read_json(folder / "metrics.json")


def main() -> None:
    from mathdistill import shards

    shards.main(parallel_eval_command)


if __name__ == "__main__":
    main()
