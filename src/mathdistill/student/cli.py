"""`mathdistill train`: fine-tune a student (LoRA or full) on prompt/completion rows, TRL `messages`
rows, or `teach` output (`--thought`). Re-running resumes or skips the same run; a folder trained on
other data, another base model or config is refused (exit 2, naming what differs) unless `--restart`.

Runs as is under `accelerate launch [--config_file configs/accelerate/...] -m mathdistill.cli train ...`.
The options are `TrainConfig`'s (`student.train_config`: the recipes' `train:` section plus what one run trains): their
defaults, bounds and descriptions (`runtime.config_option`), stated nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import typer

from mathdistill import runtime
from mathdistill.io import InputError
from mathdistill.student.train_config import TrainConfig


def _option(name: str, *decls: str, **kw):
    """TrainConfig's field `name` as an option (`runtime.config_option`), its help led by the values a Literal
    field accepts; its bounds are checked by TrainConfig itself (the error names the option: `_option_errors`)."""
    field = TrainConfig.model_fields[name]
    choices = " | ".join(get_args(field.annotation)) if get_origin(field.annotation) is Literal else ""
    text = field.description or ""
    if choices and "help" not in kw:
        kw["help"] = (f"{choices}; {text}" if not text.startswith(choices) else text) + "."
    return runtime.config_option(TrainConfig, name, *decls, bounds=False, **kw)


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
    adapter_name: str = _option("adapter_name", "--adapter-name", help="Name of the adapter being trained."),
    epochs: float = _option("epochs", "--epochs", help="Passes over the data (when --max-steps is not given)."),
    max_steps: Optional[int] = _option("max_steps", "--max-steps", help="Optimizer steps; overrides --epochs."),
    lr: Optional[float] = _option("lr", "--lr", help="Peak learning rate; default 2e-4 for LoRA, 2e-5 for full."),
    lora_r: int = _option("lora_r", "--lora-r", help="LoRA rank."),
    lora_alpha: Optional[int] = _option("lora_alpha", "--lora-alpha", help="LoRA scaling alpha; default 2 * rank."),
    lora_dropout: float = _option("lora_dropout", "--lora-dropout", help="Dropout on the LoRA path."),
    target_modules: str = _option("target_modules", "--target-modules", help="Comma list or all-linear."),
    full: bool = _option("full", "--full"),
    with_adapter: Optional[list[str]] = typer.Option(
        None, "--with-adapter", help="NAME=DIR: an adapter loaded frozen beside the one trained (repeatable)."
    ),
    batch_size: int = _option("batch_size", "--batch-size"),
    batch_tokens: Optional[int] = _option("batch_tokens", "--batch-tokens"),
    grad_accum: int = _option("grad_accum", "--grad-accum"),
    micro_batch_size: Optional[int] = _option("micro_batch_size", "--micro-batch-size"),
    max_seq_len: int = _option("max_seq_len", "--max-seq-len"),
    packing: str = _option("packing", "--packing"),
    attention: str = _option("attention", "--attention"),
    compile: bool = _option("compile", "--compile/--no-compile"),
    warmup: float = _option("warmup", "--warmup"),
    seed: int = _option("seed", "--seed", help="Seed of the adapter's initialisation and the data order."),
    save_steps: Optional[int] = _option("save_steps", "--save-steps"),
    logging_steps: Optional[int] = _option("logging_steps", "--logging-steps"),
    precision: str = _option("precision", "--precision"),
    report_to: list[str] = typer.Option(
        [], "--report-to", help="tensorboard | trackio | wandb | mlflow (repeatable): the training curves there "
        "(tensorboard: OUT/tensorboard); default none."),
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

    from mathdistill.student import train as training

    options = {name: value for name, value in locals().items() if name in TrainConfig.model_fields}  # as given
    notes = logging.getLogger("mathdistill")  # our notes (resuming, dropped rows, skipping) on stderr
    notes.setLevel(min(notes.level or logging.INFO, logging.INFO))
    if not notes.handlers:
        notes.addHandler(logging.StreamHandler())
    targets = (target_modules if target_modules == "all-linear"
               else [t.strip() for t in target_modules.split(",") if t.strip()])
    thoughts = [t.strip() for item in thought or [] for t in item.split(",") if t.strip()]
    try:
        config = TrainConfig(**{**options, "target_modules": targets, "frozen_adapters": _named_dirs(with_adapter),
                                "report_to": report_to or "none", "run_name": out.name if report_to else None})
    except ValidationError as e:
        raise InputError(_option_errors(e)) from None
    runtime.set_threads(threads)
    result = training.train(config, data, out, thoughts=thoughts)
    typer.echo(json.dumps(result.model_dump(mode="json")))
