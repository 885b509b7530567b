"""Data-parallel sampling: every process of an `accelerate launch` samples its share of the problems with
`student.sample.sample`, and the shares are merged into the result one process gives.

    res = sample_parallel(model, tok, problems, "pot", k=4, temperature=0.7, seed=0, out_dir="runs/x/s")  # in a script
    accelerate launch --multi_gpu --num_processes 4 my_script.py

    accelerate launch --multi_gpu --num_processes 4 -m mathdistill.student.parallel \\
        --dataset gsm8k --split train --thought pot --k 4 --temperature 0.7 --out DIR

Process r of w takes problems r, r + w, ... (`mathdistill.shards`) on its own device (cuda:<local rank>, or the
CPU) and samples them into OUT/shards/<r>-of-<w>/ (resumable: `sample`'s own files); then every process gets
the merged result, and the main process writes OUT/samples.jsonl (in problem order, each row with its resume
key) and OUT/samples.json (stats: `seconds` the slowest share's, `generated_tokens` the sum, the rates their
ratio, `processes`). The samples do not depend on the split: sample j of problem p draws from a stream seeded
by (seed, p.id, j), and greedy rows are computed alone or in batches the same way, so two processes give the
rows of one. OUT/samples.jsonl is a finished `sample` file: a one-process `sample` call with the same settings
and `out_dir` reuses it. On a machine without GPUs, `--multi_gpu` starts CPU processes that meet over gloo;
run plainly (no launcher) it is one process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import typer

from mathdistill.io import InputError, check_out_dir, read_json, write_json, write_jsonl
from mathdistill.runtime import config_option
from mathdistill.shards import combine, in_order
from mathdistill.student.sample import SAMPLES, STATS, SampleConfig, SampleResult, is_torch_model, sample

# stats that add up over shares, and those that are means over problems (weighted by each share's n)
_SUMMED = ("generated", "reused", "generated_tokens", "interventions")
_MEANS = ("sample_accuracy", "pass_at_k", "interventions_per_answer")


def merge(order: Sequence[str], parts: Sequence[tuple[list[dict], dict]]) -> tuple[list[dict], dict]:
    """(rows in `order` of problem ids, stats) of one sampling from its shares' (rows, stats)."""
    rows = in_order(order, [r for rows, _ in parts for r in rows])
    stats = combine([s for _, s in parts], _SUMMED, _MEANS)
    seconds, generated = stats["seconds"], stats["generated"]
    stats["score_seconds"] = max(s["score_seconds"] for _, s in parts)
    stats["samples_per_second"] = generated * stats["k"] / seconds if generated and seconds > 0 else None
    stats["tokens_per_second"] = stats["generated_tokens"] / seconds if generated and seconds > 0 else None
    return rows, stats


def sample_parallel(model, tokenizer, problems: Sequence, thought: str, *, out_dir, state=None,
                    prompts: Sequence[str] | None = None, prefill: str | Sequence[str] | None = None,
                    progress: bool = True, **kw) -> SampleResult:
    """`sample(model, tokenizer, problems, thought, out_dir=out_dir, ...)` shared out over the processes of an
    `accelerate launch`; every process returns the merged SampleResult. `state`: an accelerate PartialState
    (default: `shards.processes()`). A loaded torch `model` is moved to this process's device. `prompts` and a
    per-problem `prefill` are split with the problems; every other keyword goes to `sample` as is."""
    from mathdistill import shards

    problems = list(problems)
    if not problems:
        raise InputError("nothing to sample: the problem list is empty")
    if len({p.id for p in problems}) != len(problems):
        raise InputError("problem ids are not unique")
    if "cache" in kw:
        raise InputError("sample_parallel keeps its samples in out_dir's shards; it takes no cache")
    for name, values in (("prompts", prompts), ("prefill", None if isinstance(prefill, str) else prefill)):
        if values is not None and len(values) != len(problems):
            raise InputError(f"{name}: {len(values)} items for {len(problems)} problems")
    out = check_out_dir(out_dir)
    state = state or shards.processes()
    if is_torch_model(model):
        model.to(state.device)

    def work(mine: list[int], folder: Path) -> None:
        def pick(xs):  # this share's items of a per-problem list; one value for all (or None) as it is
            return xs if xs is None or isinstance(xs, str) else [xs[i] for i in mine]

        sample(model, tokenizer, pick(problems), thought, out_dir=folder, prompts=pick(prompts),
               prefill=pick(prefill), progress=progress and state.is_main_process, **kw)

    folders = shards.run(range(len(problems)), out, work, state)
    rows, stats = merge([p.id for p in problems], [_read(f) for f in folders])
    if state.is_main_process:
        write_jsonl(out / SAMPLES, rows)
        write_json(out / STATS, stats)
    state.wait_for_everyone()
    return SampleResult([{k: v for k, v in r.items() if k != "key"} for r in rows], stats)


def _read(folder: Path) -> tuple[list[dict], dict]:
    from mathdistill.io import iter_jsonl

    return [row for _, row in iter_jsonl(folder / SAMPLES)], read_json(folder / STATS)


def parallel_sample_command(
    dataset: str = typer.Option(..., "--dataset", help="Problems (as `mathdistill eval --dataset`)."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Folder for samples.jsonl and samples.json."),
    model: str = typer.Option("smollm2-135m", "--model", help="HF id, local model folder, .gguf file or alias."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", exists=True, file_okay=False),
    split: str = typer.Option("train", "--split"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N problems."),
    thought: str = typer.Option("cot", "--thought"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", exists=True, file_okay=False),
    k: int = config_option(SampleConfig, "k", "--k"),
    temperature: float = config_option(SampleConfig, "temperature", "--temperature"),
    top_p: float = config_option(SampleConfig, "top_p", "--top-p"),
    seed: int = config_option(SampleConfig, "seed", "--seed"),
    max_new_tokens: int = config_option(SampleConfig, "max_new_tokens", "--max-new-tokens"),
    batch_size: int = config_option(SampleConfig, "batch_size", "--batch-size",
                                    help="Completions generated together, per process."),
    loop_stop: bool = config_option(SampleConfig, "loop_stop", "--loop-stop/--no-loop-stop"),
) -> None:
    """Sample this process's share; the main process writes OUT/samples.jsonl and OUT/samples.json and prints the
    stats JSON (one line on stdout). The weights are named as the recipes name them (`adapters.weights_identity`).
    The sampling options are `SampleConfig`'s (`student.sample`: their defaults, help and bounds)."""
    from mathdistill import data, runtime, shards
    from mathdistill.student.adapters import load_merged, weights_identity

    runtime.quiet()
    state = shards.processes()
    check_out_dir(out)
    problems = data.load(dataset, split=split, data_dir=data_dir, limit=limit)
    m, tok = load_merged(model, adapter)
    res = sample_parallel(m, tok, problems, thought, out_dir=out, state=state, k=k, temperature=temperature,
                          top_p=top_p, seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size,
                          loop_stop=loop_stop, weights=weights_identity(model, adapter))
    if state.is_main_process:
        typer.echo(json.dumps(res.stats))


def main() -> None:
    from mathdistill import shards

    shards.main(parallel_sample_command)


if __name__ == "__main__":
    main()
