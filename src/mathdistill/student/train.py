"""Supervised fine-tuning of a student on prompt/completion rows, through TRL's `SFTTrainer`.

    result = train(TrainConfig(model="smollm2-135m", adapter_name="cot", max_steps=100), "data.jsonl", "runs/cot")
    result = train(TrainConfig(...), "teach/rationales.jsonl", "runs/cot", thoughts=["cot"])  # teach output

Rows (`load_rows`): {"prompt", "completion"}; TRL's conversational {"messages": [...]} (the last turn,
an assistant's, is the completion; the turns before it, ending with a user turn, are the prompt); or
`teach` output rows {"question", "text", "kept", "thought"}, of which the kept ones of the `thoughts`
asked for become that format's student prompt and target, exactly as the recipes build them
(`rows_from_rationales`).

Each row's `prompt` is the raw user message: it is rendered with `chat.render_prompt` (exactly the
text `eval` feeds the model) and its `completion` gets the chat template's end-of-turn token, so
a trained student stops by itself. Prompt and completion are tokenized separately and joined, so
the prompt tokens are the ones seen at inference; the loss covers the completion only.

The device decides what `auto`/None settings become (`student.device`; the resolved values are recorded):
on a CPU its measured best (fp32, one unpadded row per forward pass, a log record per step); on a GPU bf16,
whole examples packed best-fit-decreasing into rows of `max_seq_len` tokens, kept apart by per-example
position ids (flash-attention's varlen kernels when installed, else sdpa with a block-diagonal mask per
row), as many rows per forward pass as fit half the free memory, a log record every 20 steps (the step
itself never waits for the GPU). Full fine-tuning and GPU runs write no mid-training checkpoint unless
`save_steps` asks (the stage is the unit of resume); a LoRA on a CPU checkpoints every 50 steps.

The out folder receives:
  mathdistill.json     first: what the run is made of: the base model's provenance (file, sha256,
                       quantisation, public origin), the data (sha256 of the normalised rows), the
                       frozen adapters' sha256 (and that of `init_adapter`, the adapter it starts
                       from, when set) and the TrainConfig
  adapter_config.json + adapter_model.safetensors   standard PEFT adapter (or a full model with `full`);
                       its base_model_name_or_path is the folder the base loads from here
  README.md            model card: base model, its quantisation and origin, data sha256, config, result
  train_log.jsonl      one line per logged step            trainer_state.json   TrainerState at the end
  train_result.json    written last: marks the run done
  checkpoints/         only while training (deleted at the end unless `keep_checkpoints`)
Re-running on the same folder with the same data, base model and config resumes from the last
complete checkpoint (optimizer, scheduler, RNG and data position), or returns at once when
train_result.json is there. A folder trained (or partly trained) on anything else is an InputError
naming what differs, unless `resume=False` (`--restart`), which discards what it holds and starts over.
Runs unchanged under `accelerate launch` (DDP on CPU/GPU, FSDP, DeepSpeed: configs/accelerate/).

Parts: the settings (`student.train_config`), the data (`student.train_data`), the run's folder and record
(`student.train_record`), the model it starts from (`student.train_model`), TRL's trainer as it runs here
(`student.sft`); this module runs them in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

from mathdistill.io import InputError, folder_bytes, read_json, write_json, write_jsonl, write_text
from mathdistill.models import mark_end_of_turn
from mathdistill.student import device, sft
from mathdistill.student.train_config import TrainConfig, TrainResult, TrainSettings, resolve
from mathdistill.student.train_data import (data_identity, load_rows, pack_examples, packed_collator,
                                            rows_from_rationales, tokenize_rows)
from mathdistill.student.train_model import build_model, check_config, run_identity
from mathdistill.student.train_record import (CARD_FILE, CHECKPOINTS, LOG_FILE, META_FILE, OLD_CONFIG_FILE,
                                              RESULT_FILE, STATE_FILE, complete_checkpoints, differences,
                                              is_trained, is_training_dir, model_card)

__all__ = ["train", "TrainSettings", "TrainConfig", "TrainResult", "resolve", "load_rows", "rows_from_rationales",
           "data_identity", "tokenize_rows", "pack_examples", "packed_collator", "run_identity", "is_trained",
           "model_card", "META_FILE"]

log = logging.getLogger(__name__)


def train(config: TrainConfig, data: str | Path | Iterable[dict], out_dir: str | Path,
          thoughts: Sequence[str] = ()) -> TrainResult:
    """Train one adapter (or the full model) on `data` (see `load_rows`; `thoughts` picks the formats
    of teach output rows); write it to `out_dir`. See the module docstring for re-runs."""
    dev = device.probe()
    cfg = resolve(config, dev)
    out = Path(out_dir)
    main = int(os.environ.get("RANK", "0")) == 0  # accelerate/torchrun set RANK on every process
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; the training output (--out) must be a folder")
    check_config(cfg)
    rows = load_rows(data, thoughts)
    ident = run_identity(cfg, rows, str(data) if isinstance(data, (str, Path)) else None)  # a bad model fails here
    finished = _finished(out, cfg, ident)
    if finished is not None:
        return finished
    checkpoints = complete_checkpoints(out / CHECKPOINTS) if cfg.resume is not False else []
    if cfg.resume is True and not checkpoints:
        raise InputError(f"--resume: {out / CHECKPOINTS} has no complete checkpoint to resume from")

    model, tok = build_model(cfg, "bfloat16" if device.precision(cfg.precision, dev) == "bf16" else "float32")
    examples, dataset, collator = _dataset(cfg, tok, rows)
    plan = sft.batch_plan(cfg, dev, model, len(dataset))
    if main:
        _announce(cfg, dev, plan)
        _claim(out, cfg, ident, plan, checkpoints)
    trainer = sft.trainer_class()(
        model=model,
        args=sft.sft_config(cfg, out / CHECKPOINTS, dev, plan["micro"], plan["rows"], plan["save_steps"],
                            plan["save_limit"]),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tok,
        callbacks=[sft.log_callback(out / LOG_FILE)],
    )
    resume_from = checkpoints[-1] if checkpoints else None
    if resume_from:
        log.info("resuming from %s (step %s)", resume_from, resume_from.name.split("-")[-1])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log records: stdout is for results
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - t0
    return _save(trainer, out, cfg, ident, TrainResult(
        out_dir=str(out),
        adapter_name=cfg.adapter_name,
        full=cfg.full,
        global_step=trainer.state.global_step,
        epoch=float(trainer.state.epoch or 0.0),
        train_loss=_mean_loss(trainer.state.log_history) if output is None else float(output.training_loss),
        examples=len(examples),
        completion_tokens=sum(sum(e["completion_mask"]) for e in examples),
        tokens=sum(len(e["input_ids"]) for e in examples),
        device=dev.kind,
        seconds=round(seconds, 2),
        resumed_from=int(resume_from.name.split("-")[-1]) if resume_from else None,
    ), main)


def _finished(out: Path, cfg: TrainConfig, ident: dict) -> TrainResult | None:
    """The result of the same run finished in `out` (None: nothing finished there, or a restart); an InputError
    when `out` holds a training run on something else."""
    if cfg.resume is False or not is_training_dir(out):
        return None
    diff = differences(read_json(out / META_FILE) if (out / META_FILE).exists() else None, ident)
    if diff:
        raise InputError(f"{out} holds a training run on something else ({'; '.join(diff)}): "
                         "train into another --out, or pass --restart to discard it")
    if is_trained(out):
        log.info("%s: already trained on the same data, base model and config; skipping (--restart redoes it)", out)
        return TrainResult(**{**read_json(out / RESULT_FILE), "skipped": True})
    return None


def _dataset(cfg: TrainConfig, tok, rows: list[dict]):
    """(examples, the dataset the trainer reads, its collator or None)."""
    from datasets import Dataset

    examples, dropped = tokenize_rows(tok, rows, cfg.max_seq_len)
    if dropped:
        log.warning("%d of %d rows dropped: their prompt alone fills max_seq_len=%d", dropped, len(rows),
                    cfg.max_seq_len)
    if not examples:
        raise InputError(f"every row's prompt is longer than max_seq_len={cfg.max_seq_len}")
    if cfg.packing != "bfd":
        return examples, Dataset.from_list(examples), None
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    # compiled: every batch padded to whole rows of max_seq_len, one shape for the whole run
    collator = packed_collator(pad, device.flatten_packed(cfg.attention), cfg.max_seq_len if cfg.compile else None)
    return examples, pack_examples(examples, cfg.max_seq_len), collator


def _announce(cfg: TrainConfig, dev, plan: dict) -> None:
    if dev.gpu and cfg.packing == "padding_free" and not device.flatten_packed(cfg.attention):
        log.warning("padding_free without flash-attention builds one dense mask over each whole batch (measured "
                    "7k vs 27k tokens/s on an H100): packing 'bfd' (the GPU default) keeps rows apart instead")
    log.info("training on %s: %s, %s attention, %d %s per step, %d per forward pass, checkpoint every %s steps",
             dev.kind, cfg.packing, cfg.attention, plan["rows"], "packed rows" if cfg.packing == "bfd" else "examples",
             plan["micro"], plan["save_steps"] or "no")


def _claim(out: Path, cfg: TrainConfig, ident: dict, plan: dict, checkpoints: list[Path]) -> None:
    """The folder now belongs to this run: emptied on a restart, its record written first, and what a kill during
    a save left behind (a checkpoint without trainer_state.json, a staging folder) dropped."""
    if cfg.resume is False and is_training_dir(out):
        log.info("--restart: discarding what %s holds", out)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OLD_CONFIG_FILE).unlink(missing_ok=True)
    ident["config"]["save_steps"] = plan["save_steps"]  # what the checkpoint policy chose
    write_json(out / META_FILE, ident)  # first: the folder now belongs to this run
    ckpt_dir = out / CHECKPOINTS
    leftovers = [*out.glob(".final-*"), *(ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else [])]
    for p in leftovers:
        if p not in checkpoints:
            shutil.rmtree(p, ignore_errors=True)


def _save(trainer, out: Path, cfg: TrainConfig, ident: dict, result: TrainResult, main: bool) -> TrainResult:
    """Save the trained adapter (or model) and, on the main process, publish it with its card and logs;
    train_result.json is written last: it marks the run done."""
    staging = out / f".final-{os.getpid()}"
    trainer.save_model(str(staging))  # gathers sharded weights (FSDP/ZeRO-3); writes on the main process only
    trainer.accelerator.wait_for_everyone()
    if main:
        _publish(staging, out, cfg)
        write_text(out / CARD_FILE, model_card(ident, result))  # over the stub PEFT writes
        write_jsonl(out / LOG_FILE, trainer.state.log_history)  # clean: no repeats after a resume
        trainer.state.save_to_json(str(out / STATE_FILE))
        result.disk_bytes = folder_bytes(out)
        if not cfg.keep_checkpoints:
            shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        write_json(out / RESULT_FILE, result.model_dump(mode="json"))  # last: marks the run done
    trainer.accelerator.wait_for_everyone()
    return result


def _mean_loss(history: list[dict]) -> float | None:
    losses = [r["loss"] for r in history if "loss" in r]
    return sum(losses) / len(losses) if losses else None


def _publish(staging: Path, out: Path, cfg: TrainConfig) -> None:
    """Move the saved adapter (or model) files from `staging` into `out`, replacing older ones."""
    src = staging
    if not cfg.full and cfg.adapter_name != "default":
        src = staging / cfg.adapter_name  # PEFT saves a non-default adapter in a subfolder
    if not cfg.full and not (src / "adapter_config.json").exists():
        raise RuntimeError(f"no adapter was saved in {src}")
    for f in src.iterdir():
        if f.is_file():
            os.replace(f, out / f.name)
    shutil.rmtree(staging, ignore_errors=True)
    if cfg.full:
        mark_end_of_turn(out)

