"""Several named PEFT adapters on one base model, chosen per call.

    model, tok = load_with_adapters("smollm2-135m", {"ir": "runs/x/ir", "kg": "runs/x/kg", "dr": "runs/x/dr"})
    generate(model, tok, prompts, adapter="kg")     # this call runs adapter kg; the next may run another
    generate(model, tok, prompts, adapter="base")   # the base model, adapters disabled

One copy of the base weights stays in memory; every adapter is loaded once beside it and nothing is
merged or reloaded when the adapter changes. In PEFT (0.21) a switch is `set_adapter`, which only sets
which adapter each LoRA layer adds (plus the adapters' `requires_grad` flags: without
`inference_mode=True` it makes the active adapter trainable; harmless under `torch.inference_mode`);
a LoRA layer computes its active adapter only, so an inactive adapter costs memory (a few MB at r 16
for a 135M model), no compute. `benchmarks/adapters.md` measures the switch and the price of not
merging.

Every adapter folder is checked before the base model loads (`check_adapter`): a missing folder,
a malformed adapter_config.json or missing weights is an InputError naming the file; so are adapters
trained on different base models (`check_same_base`) and an adapter named "base" (the name
`generate(adapter=...)` keeps for the base model).

`load_student(model, trained)` is the one way to load a trained student for inference, with the identity
of its weights (`weights_identity`) that evaluations resume by: a base, an adapter merged, a full
fine-tune, or several adapters on one base. A model loaded by other means is named by a sha256 of its
tensors in memory (`tensors_sha256`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

from mathdistill.io import InputError, atomic_dir, read_json, sha256_file
from mathdistill.student.generation import BASE
from mathdistill.student.train_record import META_FILE, model_key

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter(path: str | Path, name: str = "adapter") -> Path:
    """The weights file of the PEFT adapter folder `path`, after checking its adapter_config.json is a
    JSON object with a known `peft_type` and a `base_model_name_or_path`."""
    from peft.utils import PeftType

    path = Path(path)
    cfg_file = path / ADAPTER_CONFIG
    if not path.is_dir():
        raise InputError(f"adapter '{name}': {path} " + ("is not a folder" if path.exists() else "not found"))
    if not cfg_file.is_file():
        raise InputError(f"adapter '{name}': {path} has no {ADAPTER_CONFIG} (not a PEFT adapter folder)")
    try:
        cfg = read_json(cfg_file)
    except InputError as e:
        raise InputError(f"adapter '{name}': {e}") from None
    if not isinstance(cfg, dict):
        raise InputError(f"adapter '{name}': {cfg_file}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("peft_type") not in PeftType.__members__:
        raise InputError(f"adapter '{name}': {cfg_file}: 'peft_type' is {cfg.get('peft_type')!r}, "
                         "not a PEFT method (e.g. 'LORA')")
    if not isinstance(cfg.get("base_model_name_or_path"), str) or not cfg["base_model_name_or_path"]:
        raise InputError(f"adapter '{name}': {cfg_file}: missing 'base_model_name_or_path'")
    weights = [path / w for w in ADAPTER_WEIGHTS if (path / w).is_file()]
    if not weights:
        raise InputError(f"adapter '{name}': {path} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    return weights[0]


def attach_adapters(model, adapters: dict[str, str | Path], is_trainable: bool = False):
    """`model` wrapped as a PeftModel with each (already checked) adapter folder loaded under its name."""
    from peft import PeftModel

    peft_model = None
    for name, path in adapters.items():
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=is_trainable)
            else:
                peft_model.load_adapter(str(path), adapter_name=name, is_trainable=is_trainable)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:  # e.g. trained on a base of other shapes
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"adapter '{name}': {path} does not load on this base model ({first})") from None
    return peft_model


def _recorded_base(path: Path) -> str | None:
    """The base model a mathdistill training recorded beside the adapter (mathdistill.json), if any."""
    try:
        record = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        return model_key(record["base_model"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _named_base(path: Path) -> str:
    """adapter_config.json's base_model_name_or_path (an existing folder: resolved)."""
    name = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
    return str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name


def check_same_base(adapters: dict[str, str | Path]) -> None:
    """InputError when (already checked) adapter folders were trained on different base models.

    Compared by the base weights' sha256 that training recorded beside each adapter (mathdistill.json)
    when every adapter has that record, else by adapter_config.json's `base_model_name_or_path`.
    Adapters of a base of other shapes also fail to load (`attach_adapters`); this catches the ones
    of the same shapes, whose outputs would be silently wrong."""
    paths = {name: Path(path) for name, path in adapters.items()}
    recorded = {name: _recorded_base(path) for name, path in paths.items()}
    bases = recorded if all(recorded.values()) else {name: _named_base(path) for name, path in paths.items()}
    if len(set(bases.values())) > 1:
        listing = "; ".join(f"'{name}' ({paths[name]}): {base}" for name, base in bases.items())
        raise InputError(f"adapters trained on different base models cannot share one base: {listing}")


def load_with_adapters(model: str, adapters: dict[str, str | Path] | None = None, dtype: str = "auto"):
    """(model, tokenizer): the base `model` with each adapter folder loaded once under its name.

    With no adapters, the plain base model. Otherwise a PeftModel, every adapter frozen, the first one
    active: choose one per call with `generate(..., adapter=name)` (or `adapter="base"` for the base
    alone), or by hand with `model.set_adapter(name, inference_mode=True)` / `with model.disable_adapter():`.
    """
    from mathdistill.models import load_model

    adapters = dict(adapters or {})
    for name, path in adapters.items():
        if not isinstance(name, str) or not name or name == BASE:
            raise InputError(f"adapter name {name!r} ({path}): use a non-empty name other than '{BASE}' "
                             f"('{BASE}' means the base model with adapters disabled)")
        check_adapter(path, name)
    check_same_base(adapters)
    base, tok = load_model(model, dtype=dtype)
    if not adapters:
        return base, tok
    peft_model = attach_adapters(base, adapters)
    peft_model.set_adapter(next(iter(adapters)), inference_mode=True)  # active, still frozen
    peft_model.eval()
    return peft_model, tok


def is_full_model(folder: str | Path) -> bool:
    """True when `folder` holds a whole model (config.json, no adapter_config.json): a full fine-tune."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file()


def student_parts(model: str, trained: str | Path | None) -> tuple[str, Path | None]:
    """(model, adapter folder) of the student trained into `trained` on base `model`: a PEFT adapter folder is
    the adapter on `model`; a full fine-tune (a model folder) is the model itself, no adapter; None: `model`."""
    if trained is None:
        return model, None
    return (str(trained), None) if is_full_model(trained) else (model, Path(trained))


def load_student(model: str, trained: str | Path | Mapping[str, str | Path] | None = None):
    """(model, tokenizer, weights identity) of a student, for inference. `trained`: None, the base `model` itself; a
    folder, what a training wrote there on `model` (a LoRA adapter, merged into the base in memory; a full
    fine-tune, as it is: `student_parts`); {name: adapter folder}, each adapter loaded once beside one base and
    chosen per call (`load_with_adapters`; LoRID's roles), the identity then one per name. The identity
    (`weights_identity`) is what an evaluation's resume key names the weights by."""
    if isinstance(trained, Mapping):
        net, tok = load_with_adapters(model, trained)
        return net, tok, {name: weights_identity(model, folder) for name, folder in trained.items()}
    base, adapter = student_parts(model, trained)
    net, tok = load_merged(base, adapter)
    return net, tok, weights_identity(base, adapter)


def _adapter_files(folder: Path) -> list[Path]:
    """The files that make an adapter: its config and weights (adapter_model.safetensors / .bin)."""
    weights = sorted(p for p in folder.glob("adapter_model.*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
    return [folder / ADAPTER_CONFIG, *weights] if weights else []


def weights_identity(model: str, adapter_dir=None) -> dict:
    """What generates the outputs, for the resume key: the base model as
    `models.provenance` describes it (the sha256 of its weights or GGUF file; a hub id and
    its cached revision), less its name and where it sits on this machine, and the sha256 of the
    adapter's config and weight files. Retraining into the same adapter folder changes it."""
    from mathdistill.models import provenance

    base = {k: v for k, v in provenance(model).items() if k not in ("name", "resolved_path", "file")}
    ident = {"model": base}
    if adapter_dir is not None:
        ident["adapter_sha256"] = {f.name: sha256_file(f) for f in _adapter_files(Path(adapter_dir))}
    return ident


def tensors_sha256(model) -> str:
    """sha256 of a loaded model's tensors as they are in memory (names and bytes): what names the weights of an
    evaluation or a sampling when no `weights_identity` is given (~0.5 s for 135M parameters)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def load_merged(model: str, adapter_dir: str | Path | None = None, dtype: str = "auto"):
    """(model, tokenizer) for inference with one adapter: its LoRA weights merged into the base
    weights in memory (no adapter layers left to run: ~15 % faster generation on CPU, same text).
    With no adapter, the plain base model."""
    m, tok = load_with_adapters(model, {"adapter": adapter_dir} if adapter_dir is not None else None, dtype=dtype)
    return (m.merge_and_unload() if adapter_dir is not None else m), tok


def merge(model: str, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge the adapter in `adapter_dir` into `model`; save a standalone model (+ tokenizer) in `out_dir`."""
    from mathdistill.models import mark_end_of_turn

    out = Path(out_dir)
    peft_model, tok = load_with_adapters(model, {"merged": adapter_dir}, dtype="float32")
    merged = peft_model.merge_and_unload()
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        mark_end_of_turn(tmp)
    return out
