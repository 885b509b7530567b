"""What a training run trains: its config checked as a whole (`check_config`), what it is made of (`run_identity`:
the base model's provenance, the data, the adapters' weights, the config: mathdistill.json) and the model it
starts from (`build_model`: the base with its frozen adapters and a fresh or continued LoRA, or the full model).

    model, tok = build_model(cfg)                   # the adapter cfg.adapter_name trainable, all else frozen
"""

from __future__ import annotations

import json
from pathlib import Path

from mathdistill.io import InputError, sha256_file
from mathdistill.models import load_model, provenance
from mathdistill.student.adapters import ADAPTER_CONFIG, attach_adapters, check_adapter, check_same_base
from mathdistill.student.train_config import TrainConfig
from mathdistill.student.train_data import data_identity

__all__ = ["check_config", "run_identity", "build_model"]


def check_config(cfg: TrainConfig) -> None:
    """Combinations of settings that cannot train (single values are checked by TrainConfig itself)."""
    if cfg.full and cfg.frozen_adapters:
        raise InputError("full fine-tuning cannot keep frozen adapters beside it")
    if cfg.adapter_name in cfg.frozen_adapters:
        raise InputError(f"adapter '{cfg.adapter_name}' is both the one to train and a frozen one")
    if cfg.micro_batch_size is not None and cfg.batch_tokens is None and cfg.batch_size % cfg.micro_batch_size:
        raise InputError(f"micro_batch_size {cfg.micro_batch_size} must divide batch_size {cfg.batch_size}")
    if cfg.init_adapter:
        if cfg.full:
            raise InputError("init_adapter: full fine-tuning starts from a model (set model to its folder), "
                             "not from an adapter")
        check_adapter(cfg.init_adapter, "init_adapter")
        saved = json.loads((Path(cfg.init_adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        wanted = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha}
        differ = [f"{k} {saved.get(k)!r} (config: {v!r})" for k, v in wanted.items() if saved.get(k) != v]
        if differ:
            raise InputError(f"init_adapter {cfg.init_adapter}: its LoRA settings differ: {', '.join(differ)}")


def run_identity(cfg: TrainConfig, rows: list[dict], source: str | None = None) -> dict:
    """What a training run is made of (written as mathdistill.json): base model provenance, data,
    frozen adapters' weights and the config. Resolves (once: converts) the base model; checks adapters."""
    frozen = {name: sha256_file(check_adapter(path, name)) for name, path in cfg.frozen_adapters.items()}
    data = {**data_identity(rows), **({"source": source} if source else {})}
    init = {"init_adapter": sha256_file(check_adapter(cfg.init_adapter, "init_adapter"))} if cfg.init_adapter else {}
    return {"base_model": provenance(cfg.model), "data": data, "frozen_adapters": frozen, **init,
            "config": cfg.model_dump(mode="json")}


def build_model(cfg: TrainConfig, base_dtype: str = "float32"):
    """(model, tokenizer): the base (+ frozen adapters) with a fresh trainable adapter, or the full model.
    `base_dtype`: the frozen base's weights under LoRA ("bfloat16" when training in bf16: half the memory
    traffic, no cast per step; PEFT keeps the adapter's own weights in fp32). Full fine-tuning keeps fp32
    master weights (bf16 weights would lose AdamW's small updates)."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    check_config(cfg)
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

