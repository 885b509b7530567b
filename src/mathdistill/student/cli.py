"""`mathdistill train`: fine-tune a student (LoRA or full) on prompt/completion rows, TRL `messages`
rows, or `teach` output (`--thought`). Re-running resumes or skips the same run; a folder trained on
other data, another base model or config is refused (exit 2, naming what differs) unless `--restart`.

Runs as is under `accelerate launch [--config_file configs/accelerate/...] -m mathdistill.cli train ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import typer

from mathdistill import runtime
from mathdistill.io import InputError
from mathdistill.student.train import TrainConfig

_FIELDS = TrainConfig.model_fields


def _default(name: str):
    """TrainConfig's default for `name`: the CLI states no default of its own (one place: train.py/device.py)."""
    return _FIELDS[name].default


def _help(name: str) -> str:
    """TrainConfig's description of `name` (what auto/None become on each device), led by the values a Literal
    field accepts: said in one place too."""
    field = _FIELDS[name]
    choices = " | ".join(get_args(field.annotation)) if get_origin(field.annotation) is Literal else ""
    text = field.description
    return (f"{choices}; {text}" if choices and not text.startswith(choices) else text) + "."


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
    adapter_name: str = typer.Option(
        _default("adapter_name"), "--adapter-name", help="Name of the adapter being trained."
    ),
    epochs: float = typer.Option(
        _default("epochs"), "--epochs", help="Passes over the data (when --max-steps is not given)."
    ),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps; overrides --epochs."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate [2e-4 LoRA, 2e-5 full]."),
    lora_r: int = typer.Option(_default("lora_r"), "--lora-r", help="LoRA rank."),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help="LoRA scaling alpha [2 x rank]."),
    lora_dropout: float = typer.Option(_default("lora_dropout"), "--lora-dropout", help="Dropout on the LoRA path."),
    target_modules: str = typer.Option(
        _default("target_modules"), "--target-modules", help="Comma list or all-linear."
    ),
    full: bool = typer.Option(_default("full"), "--full", help="Full fine-tuning instead of LoRA."),
    with_adapter: Optional[list[str]] = typer.Option(
        None, "--with-adapter", help="NAME=DIR: an adapter loaded frozen beside the one trained (repeatable)."
    ),
    batch_size: int = typer.Option(
        _default("batch_size"), "--batch-size", help="Examples (bfd: packed rows of --max-seq-len) per device per step."
    ),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help=_help("batch_tokens")),
    grad_accum: int = typer.Option(
        _default("grad_accum"), "--grad-accum", help="Steps accumulated into one optimizer update."
    ),
    micro_batch_size: Optional[int] = typer.Option(None, "--micro-batch-size", help=_help("micro_batch_size")),
    max_seq_len: int = typer.Option(
        _default("max_seq_len"), "--max-seq-len",
        help="Prompt+completion tokens; longer rows are cut (bfd: the length of a packed row).",
    ),
    packing: str = typer.Option(_default("packing"), "--packing", help=_help("packing")),
    attention: str = typer.Option(_default("attention"), "--attention", help=_help("attention")),
    compile: bool = typer.Option(_default("compile"), "--compile/--no-compile", help=_help("compile")),
    warmup: float = typer.Option(_default("warmup"), "--warmup", help="Ratio of steps if < 1, else steps."),
    seed: int = typer.Option(
        _default("seed"), "--seed", help="Seed of the adapter's initialisation and the data order."
    ),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help=_help("save_steps")),
    logging_steps: Optional[int] = typer.Option(None, "--logging-steps", help=_help("logging_steps")),
    precision: str = typer.Option(_default("precision"), "--precision", help=_help("precision")),
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
            batch_tokens=batch_tokens,
            grad_accum=grad_accum,
            micro_batch_size=micro_batch_size,
            max_seq_len=max_seq_len,
            packing=packing,
            attention=attention,
            compile=compile,
            warmup=warmup,
            seed=seed,
            save_steps=save_steps,
            logging_steps=logging_steps,
            precision=precision,
            resume=resume,
            report_to=report_to or "none",
            run_name=out.name if report_to else None,
        )
    except ValidationError as e:
        raise InputError(_option_errors(e)) from None
    runtime.set_threads(threads)
    result = training.train(config, data, out, thoughts=thoughts)
    typer.echo(json.dumps(result.model_dump(mode="json")))
