"""How a student trains: `TrainSettings` (the hyperparameters: the recipes' `train:` section and the options of
`mathdistill train`, their defaults, bounds and help), `TrainConfig` (those plus what one run trains), and what a
run returns (`TrainResult`). `resolve` fills in what the device decides (`student.device`), so the recorded
config says what ran.

    cfg = resolve(TrainConfig(model="smollm2-135m", adapter_name="cot", max_steps=100), device.probe())
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mathdistill.models import DEFAULT_STUDENT
from mathdistill.student import device
from mathdistill.tracking import ReportTo

__all__ = ["TrainSettings", "TrainConfig", "TrainResult", "resolve"]


class TrainSettings(BaseModel):
    """How to train: the hyperparameters, one schema for the recipes' `train:` section and the CLI."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    full: bool = Field(False, description="full fine-tuning instead of LoRA")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="overrides epochs when set")
    lr: float | None = Field(None, gt=0, description="default 2e-4 for LoRA, 2e-5 for full")
    lora_r: int = Field(16, gt=0)
    lora_alpha: int | None = Field(None, gt=0, description="default 2 * lora_r")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"
    batch_size: int = Field(8, gt=0, description="examples (bfd: packed rows of max_seq_len) per device per step")
    grad_accum: int = Field(1, gt=0, description="steps of batch_size accumulated into one optimizer update")
    batch_tokens: int | None = Field(
        None, gt=0, description="bfd packing: tokens per device per step, in packed rows of max_seq_len "
        "(overrides batch_size); None: batch_size rows"
    )
    micro_batch_size: int | None = Field(
        None, gt=0, description="examples (bfd: packed rows) per forward pass (a divisor of batch_size); None: 1 on "
        "CPU (bfd: all), on GPU as many as fit half the free memory"
    )
    max_seq_len: int = Field(1024, gt=0, description="prompt+completion tokens; longer rows are cut at the end; "
                             "bfd: the length of a packed row")
    packing: Literal["auto", "padding_free", "bfd", "none"] = Field(
        "auto", description="auto | padding_free | bfd | none (pad to longest in batch); auto: padding_free on CPU "
        "(one row per forward), bfd on GPU (whole examples packed into rows, kept apart by their position ids)"
    )
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        "auto", description="attention implementation; auto: flash_attention_2 on a GPU that has it, else sdpa"
    )
    compile: bool = Field(False, description="torch.compile the model (Trainer torch_compile)")
    warmup: float = Field(0.03, ge=0, description="warm-up: a ratio of all steps if < 1, else a step count")
    weight_decay: float = Field(0.0, ge=0)
    save_steps: int | None = Field(
        None, gt=0, description="checkpoint every N steps; None: every 50 for a LoRA on a CPU, else none (full "
        "fine-tuning and GPU runs: the stage is the unit of resume; a full checkpoint is 1.6 GB for the 135M student)"
    )
    logging_steps: int | None = Field(None, gt=0, description="log every N steps; None: 1 on CPU, 20 on GPU "
                                      "(each log record waits for the GPU)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on GPU, fp32 on CPU)"
    )
    gradient_checkpointing: bool = False
    keep_checkpoints: bool = False
    report_to: ReportTo = Field("none", description="none | tensorboard | trackio | wandb | mlflow (or a list): the "
                                "trainer's curves there, and a recipe's results (mathdistill.tracking)")

    @model_validator(mode="after")
    def _fill_defaults(self):
        """Defaults that depend on other fields, filled in so the recorded config says what was used."""
        if self.lr is None:
            self.lr = 2e-5 if self.full else 2e-4
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_r
        return self


class TrainConfig(TrainSettings):
    """One training run: the settings plus what to train (saved in the out folder's mathdistill.json)."""

    model: str = DEFAULT_STUDENT
    adapter_name: str = Field("default", min_length=1)
    # named adapters loaded (frozen) beside the one being trained: {name: folder}
    frozen_adapters: dict[str, str] = Field(default_factory=dict)
    # continue an earlier adapter: its weights (and LoRA settings), a new optimizer and schedule
    init_adapter: str | None = Field(None, description="adapter folder whose weights the trained adapter starts "
                                     "from (e.g. SIKeD's previous iteration); None: a fresh LoRA")
    seed: int = Field(0, description="LoRA initialisation and data order (a recipe's top-level seed)")
    run_name: str | None = Field(None, description="the trackers' name of this training (a recipe: its run folder's)")
    resume: bool | None = Field(
        None, description="None: resume a checkpoint of the same run if any; True: must; False: restart, "
        "discarding whatever the out folder holds"
    )


class TrainResult(BaseModel):
    out_dir: str
    adapter_name: str
    full: bool
    global_step: int
    epoch: float
    train_loss: float | None
    examples: int
    completion_tokens: int = Field(description="supervised tokens in one pass over the data")
    tokens: int | None = Field(None, description="all tokens (prompts too) in one pass over the data")
    device: str | None = Field(None, description="cuda | cpu")
    seconds: float
    resumed_from: int | None = None
    disk_bytes: int | None = Field(None, description="the out folder at its fullest: the saved model or adapter plus "
                                   "the checkpoints kept at the end (none unless asked: full fine-tuning, GPU)")
    skipped: bool = False


def resolve(cfg: TrainConfig, dev) -> TrainConfig:
    """`cfg` with the device's defaults filled in (packing, attention, logging_steps), so the recorded config
    says what ran. On a CPU this is what mathdistill always did (padding_free, sdpa, a log record per step)."""
    pack = device.packing(cfg.packing, dev)
    return cfg.model_copy(update={"packing": pack, "attention": device.attention(cfg.attention, dev, pack),
                                  "logging_steps": device.logging_steps(cfg.logging_steps, dev)})

