"""`mathdistill eval`: evaluate a model (optionally with a LoRA adapter) on a benchmark.

Every option, the adapter folder and the data are checked before the model loads; the one line
on stdout is the metrics JSON (progress and the summary line go to stderr). The generation options
are `EvalConfig`'s (`eval.config`: their defaults, help and bounds), the ones a recipe's `eval:` has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mathdistill.eval.config import EvalConfig
from mathdistill.models import DEFAULT_STUDENT
from mathdistill.runtime import config_option, threads_option

PROMPT_ROOM = 512  # tokens a row's own prompt may take besides a shared prefix, for the batch size from free memory

def eval_command(
    dataset: str = typer.Option(..., "--dataset", help="Benchmark: gsm8k, svamp, asdiv, mawps (= multiarith, addsub, "
                                "singleeq and singleop), multiarith, addsub, singleeq, singleop, gsm_hard, math500."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Output folder for predictions.jsonl and metrics.json "
                             "(a finished evaluation there with the same settings is reused)."),
    model: str = typer.Option(DEFAULT_STUDENT, "--model", help="HF id, local model folder, .gguf file or alias."),
    split: str = typer.Option("test", "--split", help="Dataset split (test; gsm8k also has train)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N problems."),
    thought: str = typer.Option("cot", "--thought", help="Reasoning format the student writes: cot, pot, eot, l2m, or "
                                "keypoints (scored on its solution's answer)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", exists=True, file_okay=False,
                                           help="A PEFT (LoRA) adapter folder, merged into the weights for the run."),
    shots: int = config_option(EvalConfig, "shots", "--shots"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", exists=True, file_okay=False,
                                            help="Data root (else $MATHDISTILL_DATA or ../shared/data, else the hub)."),
    max_new_tokens: int = config_option(EvalConfig, "max_new_tokens", "--max-new-tokens"),
    batch_size: Optional[int] = config_option(EvalConfig, "batch_size", "--batch-size", default=None,
                                              help="Completions generated together (default: 16 on a CPU, from the "
                                                   "free memory on a GPU)."),
    temperature: float = config_option(EvalConfig, "temperature", "--temperature"),
    top_p: float = config_option(EvalConfig, "top_p", "--top-p"),
    samples: int = config_option(EvalConfig, "samples", "--samples"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Random seed for sampling."),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable); cut from the output."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar (on stderr)."),
    loop_stop: bool = config_option(EvalConfig, "loop_stop", "--loop-stop/--no-loop-stop"),
    calculator: bool = config_option(EvalConfig, "calculator", "--calculator/--no-calculator",
                                     help="Force the value of every arithmetic step the student writes (`2 * 3 =`, "
                                     "`<<48/2=`) and continue from it (hf engine; a recipe's `both` is two runs)."),
    threads: Optional[int] = threads_option(),
) -> None:
    """Write OUT/predictions.jsonl and OUT/metrics.json; stdout is one line, the metrics JSON."""
    from mathdistill import data, runtime
    from mathdistill.eval import check_out_dir, check_thought, evaluate, few_shot_exemplars
    from mathdistill.student.adapters import load_student

    # everything a user can get wrong is checked before the model loads
    thought = check_thought(thought)
    check_out_dir(out)
    if adapter is not None:
        from mathdistill.student.adapters import check_adapter

        check_adapter(adapter, "--adapter")
    problems = data.load(dataset, split=split, data_dir=data_dir, limit=limit)
    exemplars = few_shot_exemplars(thought, shots, data_dir, exclude=[p.question for p in problems])
    name = f"{model}+{adapter.resolve()}" if adapter is not None else model

    runtime.set_threads(threads)
    m, tok, weights = load_student(model, adapter)
    if batch_size is None:
        from mathdistill.student.generate import auto_batch_size

        batch_size = auto_batch_size(m, max_new_tokens + PROMPT_ROOM)
    result = evaluate(
        m, tok, problems, thought=thought, exemplars=exemplars, max_new_tokens=max_new_tokens,
        batch_size=batch_size, temperature=temperature, top_p=top_p, samples=samples, seed=seed, stop=stop,
        out_dir=out, dataset=dataset, split=split, model_name=name, weights=weights, progress=progress,
        loop_stop=loop_stop, calculator=calculator,
    )
    mt = result.metrics
    lo, hi = mt["ci95"]
    typer.echo(
        f"{dataset}/{split}: {mt['correct']}/{mt['n']} = {mt['accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}) "
        f"in {mt['seconds']:.0f}s -> {out}",
        err=True,
    )
    typer.echo(json.dumps({k: mt[k] for k in ("dataset", "n", "correct", "accuracy", "ci95")}))
