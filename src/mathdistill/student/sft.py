"""TRL's `SFTTrainer` as mathdistill runs it: its config for a resolved `TrainConfig` (`sft_config`), how many rows
a step and a forward pass take and when to checkpoint (`batch_plan`, from `student.device`), a trainer whose step
never waits for the device (`trainer_class`) and whose CPU steps score completion positions only (`compact_head`,
`completion_scores`), and the log written as it happens (`log_callback`).

    plan = batch_plan(cfg, dev, model, len(dataset))
    trainer = trainer_class()(model=model, args=sft_config(cfg, ckpt_dir, dev, plan["micro"], plan["rows"],
                              plan["save_steps"], plan["save_limit"]), train_dataset=dataset, ...)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mathdistill import tracking
from mathdistill.io import InputError
from mathdistill.models import base_of
from mathdistill.student import device
from mathdistill.student.train_config import TrainConfig

__all__ = ["sft_config", "batch_plan", "trainer_class", "compact_head", "completion_scores", "log_callback"]


def _precision(name: str, dev) -> dict:
    name = device.precision(name, dev)
    return {"bf16": name == "bf16", "fp16": name == "fp16", "use_cpu": not dev.gpu}


def sft_config(cfg: TrainConfig, ckpt_dir: Path, dev, micro: int, rows: int, save_steps: int | None,
               save_limit: int):
    """TRL's config for a resolved `cfg`: `rows` examples (bfd: packed rows) per device per step, `micro` of them
    per forward pass; bfd rows come packed already (`pack_examples`), so TRL neither packs nor truncates."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps else -1,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup if cfg.warmup < 1 else int(cfg.warmup),
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=cfg.grad_accum * rows // micro,
        gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed,
        # rows are tokenized (and cut to max_seq_len) by tokenize_rows; TRL only masks and batches
        completion_only_loss=True,
        max_length=None,
        padding_free=cfg.packing == "padding_free",
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=save_limit,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=not dev.gpu,  # the filter reads the loss of every step (a host sync)
        torch_compile=cfg.compile,
        report_to=tracking.trainer_setup(cfg.report_to, ckpt_dir.parent),
        run_name=cfg.run_name,
        project=tracking.PROJECT,
        ddp_find_unused_parameters=False,
        dataloader_drop_last=False,
        **_precision(cfg.precision, dev),
    )


def batch_plan(cfg: TrainConfig, dev, model, n_rows: int) -> dict:
    """Rows per step and per forward pass, and the checkpoint policy, for `n_rows` dataset rows on `dev`."""
    text = model.config.get_text_config()
    rows = device.rows_per_step(cfg.batch_size, cfg.batch_tokens if cfg.packing == "bfd" else None, cfg.max_seq_len)
    per_token = device.activation_bytes_per_token(text.hidden_size, text.num_hidden_layers,
                                                  getattr(text, "intermediate_size", 4 * text.hidden_size))
    micro = device.micro_batch(cfg.micro_batch_size, rows, cfg.packing, dev, cfg.max_seq_len, per_token)
    if rows % micro:
        raise InputError(f"micro_batch_size {micro} must divide the {rows} rows of a step")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = max(1, -(-n_rows // (rows * world)) // cfg.grad_accum)
    total = cfg.max_steps or max(1, int(per_epoch * cfg.epochs))
    save_steps, limit = device.checkpoint_plan(cfg.full, cfg.save_steps, dev.gpu)
    return {"rows": rows, "micro": micro, "save_steps": save_steps, "save_limit": limit, "total_steps": total}


def trainer_class():
    """TRL's SFTTrainer whose training step never waits for the device: the token count, entropy and token
    accuracy TRL reads with `.item()` every step are summed on the device and read once per log record.
    The loss is the completion tokens' mean NLL: through TRL's fused LM head, or on a CPU through
    `completion_scores`."""
    import torch
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        _pending = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if (return_outputs or not model.training or self.compute_loss_func is not None or self.aux_loss_enabled
                    or self.label_smoother is not None or self.args.loss_type != "nll"):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            if compact_head(model, inputs, self.args.torch_compile):
                log_probs, entropy, is_top1, mask = completion_scores(model, inputs)
            else:
                outputs = model(**inputs, fused_lm_head=True)
                log_probs, entropy, is_top1, mask = (outputs.log_probs, outputs.entropy, outputs.is_top1,
                                                     outputs.label_mask)
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -log_probs.sum() / torch.as_tensor(n).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            seen = inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].new_tensor(
                inputs["input_ids"].numel())
            sums = torch.stack([mask.sum(), entropy.detach().sum(), is_top1.sum(), seen]).double()
            self._pending = sums if self._pending is None else self._pending + sums
            return loss

        def log(self, logs, start_time=None):
            if self._pending is not None:
                valid, entropy, top1, seen = self.accelerator.gather_for_metrics(self._pending[None]).sum(0).tolist()
                self._pending = None
                self._total_train_tokens += int(seen) // self._tp_size
                metrics = self._metrics["train"]
                metrics["entropy"] = [entropy / valid if valid else 0.0]
                metrics["mean_token_accuracy"] = [top1 / valid if valid else 0.0]
                metrics["num_tokens"] = [self._total_train_tokens]
            super().log(logs, start_time)

    return Trainer


def compact_head(model, inputs, compiling: bool) -> bool:
    """Whether `completion_scores` computes this step's loss: on a CPU, eager, one process, for a model whose
    LM head is a plain projection. TRL's fused head scores only the completion positions on Triton devices;
    elsewhere it scores every position (fixed shapes for compilers), so a CPU step paid the LM head and its
    log-softmax for every prompt token too (15-19 % of a step: benchmarks/train.md)."""
    if compiling or inputs["input_ids"].device.type != "cpu" or "shift_labels" in inputs:
        return False
    if hasattr(model, "module"):  # DDP and the like: their forward is what synchronises the gradients
        return False
    text = base_of(model).config.get_text_config()
    return not any(getattr(text, key, None) is not None for key in SCALED_HEAD)


SCALED_HEAD = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def completion_scores(model, inputs):
    """(log-probability of each label, entropy, whether the label is the argmax, label mask) for the positions
    whose next-token label is not -100: the backbone over the whole row, the LM head and an fp32 log-softmax
    over the completion positions only (TRL's fused head computes the same per-token values, in tiles)."""
    import torch

    causal = base_of(model)
    backbone = getattr(causal, causal.base_model_prefix)
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = backbone(**kwargs).last_hidden_state[:, :-1]
    labels = inputs["labels"][:, 1:]
    mask = labels != -100
    targets = labels[mask]
    logits = causal.get_output_embeddings()(hidden[mask]).float()
    log_p = torch.log_softmax(logits, dim=-1)
    with torch.no_grad():
        entropy = -(log_p.exp() * log_p).sum(-1)
        is_top1 = logits.argmax(-1) == targets
    return log_p.gather(-1, targets[:, None])[:, 0], entropy, is_top1, mask


def log_callback(path: Path):
    """A TrainerCallback appending each log record (loss, lr, grad norm per step) to `path` as it happens."""
    from transformers import TrainerCallback

    class LogToFile(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return LogToFile()

