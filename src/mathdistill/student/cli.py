"""`mathdistill train`: fine-tune a student (LoRA or full) on prompt/completion rows, TRL `messages`
rows, or `teach` output (`--thought`). Re-running resumes or skips the same run; a folder trained on
other data, another base model or config is refused (exit 2, naming what differs) unless `--restart`.

Runs as is under `accelerate launch [--config_file configs/accelerate/...] -m mathdistill.cli train ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mathdistill import runtime
from mathdistill.io import InputError


def _named_dirs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--with-adapter expects NAME=DIR, got '{item}'")
        out[name] = path
    return out


def _option_errors(err) -> str:
    """A pydantic ValidationError of TrainConfig as '--option: message (got value)' lines."""
    return "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']} (got {e.get('input')!r})"
                     for e in err.errors())


def train_command(
    model: str = typer.Option(..., "--model", help="HF id, local folder, .gguf file or alias (smollm2-135m)."),
    data: Path = typer.Option(
        ..., "--data",
        help="JSONL training rows: {prompt, completion}; TRL {messages: [...]} (last assistant turn = completion, "
        "earlier turns = prompt); or `teach` output (rationales.jsonl) with --thought.",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the PEFT adapter (or full model), its record and model card, logs, checkpoints."
    ),
    thought: Optional[list[str]] = typer.Option(
        None, "--thought",
        help="With teach output as --data: train on the kept rationales of these formats (cot, pot, ...; repeat or "
        "comma-separate), each as its student prompt and target, as the recipes do.",
    ),
    adapter_name: str = typer.Option("default", "--adapter-name", help="Name of the adapter being trained."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the data (when --max-steps is not given)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps; overrides --epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate [2e-4 LoRA, 2e-5 full]."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help="LoRA scaling alpha [2 x rank]."),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="Dropout on the LoRA path."),
    target_modules: str = typer.Option("all-linear", "--target-modules", help="Comma list or all-linear."),
    full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
    with_adapter: Optional[list[str]] = typer.Option(
        None, "--with-adapter", help="NAME=DIR: an adapter loaded frozen beside the one trained (repeatable)."
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Examples per device per step."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Steps accumulated into one optimizer update."),
    micro_batch_size: Optional[int] = typer.Option(
        None, "--micro-batch-size", help="Examples per forward pass [1 on CPU, --batch-size on GPU]."
    ),
    max_seq_len: int = typer.Option(1024, "--max-seq-len", help="Prompt+completion tokens; longer rows are cut."),
    packing: str = typer.Option("padding_free", "--packing", help="padding_free | bfd | none"),
    warmup: float = typer.Option(0.03, "--warmup", help="Ratio of steps if < 1, else steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of the adapter's initialisation and the data order."),
    save_steps: int = typer.Option(50, "--save-steps", help="Checkpoint every N steps."),
    precision: str = typer.Option("auto", "--precision", help="auto | fp32 | bf16 | fp16"),
    resume: Optional[bool] = typer.Option(
        None, "--resume/--restart",
        help="Default: resume OUT's checkpoint of the same run (same data, base model, config), skip it when "
        "finished, refuse a folder trained on anything else. --resume: insist on a checkpoint. "
        "--restart: discard what OUT holds and train from scratch.",
    ),
    threads: Optional[int] = runtime.threads_option(),
) -> None:
    import logging

    from pydantic import ValidationError

    from mathdistill.student.train import TrainConfig, train

    notes = logging.getLogger("mathdistill")  # our notes (resuming, dropped rows, skipping) on stderr
    notes.setLevel(min(notes.level or logging.INFO, logging.INFO))
    if not notes.handlers:
        notes.addHandler(logging.StreamHandler())
    targets = target_modules if target_modules == "all-linear" else [t.strip() for t in target_modules.split(",") if t.strip()]
    thoughts = [t.strip() for item in thought or [] for t in item.split(",") if t.strip()]
    try:
        config = TrainConfig(
            model=model,
            adapter_name=adapter_name,
            full=full,
            frozen_adapters=_named_dirs(with_adapter),
            epochs=epochs,
            max_steps=max_steps,
            lr=lr,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=targets,
            batch_size=batch_size,
            grad_accum=grad_accum,
            micro_batch_size=micro_batch_size,
            max_seq_len=max_seq_len,
            packing=packing,
            warmup=warmup,
            seed=seed,
            save_steps=save_steps,
            precision=precision,
            resume=resume,
        )
    except ValidationError as e:
        raise InputError(_option_errors(e)) from None
    runtime.set_threads(threads)
    result = train(config, data, out, thoughts=thoughts)
    typer.echo(json.dumps(result.model_dump(mode="json")))
