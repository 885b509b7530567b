"""`mathdistill eval`: evaluate a model (optionally with a LoRA adapter) on a benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mathdistill.student.models import DEFAULT_STUDENT


def eval_command(
    dataset: str = typer.Option(..., "--dataset", help="Benchmark: gsm8k, svamp, asdiv, multiarith, addsub, singleeq, singleop, gsm_hard, math500."),
    out: Path = typer.Option(..., "--out", help="Output folder for predictions.jsonl and metrics.json."),
    model: str = typer.Option(DEFAULT_STUDENT, "--model", help="HF id, local model folder, .gguf file or alias."),
    split: str = typer.Option("test", "--split"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N problems."),
    thought: str = typer.Option("cot", "--thought", help="Reasoning format: cot, pot, eot, l2m."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A PEFT (LoRA) adapter folder to apply."),
    shots: int = typer.Option(0, "--shots", help="k-shot exemplars from GSM8K train (0 = zero-shot)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data root (else $MATHDISTILL_DATA or ../shared/data)."),
    max_new_tokens: int = typer.Option(320, "--max-new-tokens"),
    batch_size: int = typer.Option(16, "--batch-size"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p"),
    samples: int = typer.Option(1, "--samples", help="Completions per problem; >1 scores the majority vote."),
    seed: int = typer.Option(0, "--seed"),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    loop_stop: bool = typer.Option(False, "--loop-stop/--no-loop-stop",
                                   help="End a completion that repeats one block 3 times in a row (saves time; off by default)."),
) -> None:
    """Write OUT/predictions.jsonl and OUT/metrics.json; the last stdout line is the metrics JSON."""
    from mathdistill import data
    from mathdistill.eval import evaluate
    from mathdistill.io import InputError
    from mathdistill.student.adapters import load_merged

    if limit is not None and limit < 1:
        raise InputError("--limit must be >= 1")
    problems = data.load(dataset, split=split, data_dir=data_dir, limit=limit)
    name = model
    if adapter is not None:
        if not (adapter / "adapter_config.json").exists():  # say so before loading the model
            raise InputError(f"--adapter {adapter}: no adapter_config.json there (not a PEFT adapter folder)")
        weights = adapter / "adapter_model.safetensors"
        stamp = int(weights.stat().st_mtime) if weights.exists() else 0
        name = f"{model}+{adapter.resolve()}@{stamp}"
    m, tok = load_merged(model, adapter)
    result = evaluate(
        m, tok, problems, thought=thought, shots=shots, data_dir=data_dir, max_new_tokens=max_new_tokens,
        batch_size=batch_size, temperature=temperature, top_p=top_p, samples=samples, seed=seed, stop=stop,
        out_dir=out, dataset=dataset, split=split, model_name=name, progress=progress, loop_stop=loop_stop,
    )
    mt = result.metrics
    lo, hi = mt["ci95"]
    typer.echo(
        f"{dataset}/{split}: {mt['correct']}/{mt['n']} = {mt['accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}) "
        f"in {mt['seconds']:.0f}s -> {out}",
        err=True,
    )
    typer.echo(json.dumps({k: mt[k] for k in ("dataset", "n", "correct", "accuracy", "ci95")}))
