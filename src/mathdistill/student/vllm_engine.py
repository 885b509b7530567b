"""The vLLM engine of `student.sample` (optional: vLLM is not a dependency; it needs a CUDA GPU).

    gens = generate("smollm2-135m", prompts, k=4, temperature=0.7, top_p=0.95, seeds=seeds,
                    max_new_tokens=256, batch_size=256, stop=[], adapter="runs/x/train/student")

`model` is a `vllm.LLM` or a model name (contract 2; loaded once per process with LoRA enabled).
An adapter is a PEFT adapter folder, sent with each request as a `LoRARequest`; "base" or None
runs the base model. Each prompt is one request, `SamplingParams(n=k, temperature, top_p, seed,
max_tokens, stop)`, its seed the prompt's own (vLLM seeds every request by itself, so a seeded
request gives the same samples in any batch). Greedy (temperature 0) asks for one completion and
repeats it k times. Prompts go in chunks of `batch_size`; each finished chunk is reported
(`on_result`), so a killed call resumes after the last one.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import zlib
from pathlib import Path
from typing import Callable, Sequence

from mathdistill.io import InputError

__all__ = ["installed", "generate", "load", "lora_request"]

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


@functools.cache
def _llm(path: str, max_lora_rank: int):
    import vllm

    return vllm.LLM(model=path, enable_lora=True, max_lora_rank=max_lora_rank)


def load(model, adapter: str | None = None):
    """A `vllm.LLM` for `model` (itself if it is one), with LoRA room for `adapter`'s rank."""
    import vllm

    if isinstance(model, vllm.LLM):
        return model
    from mathdistill.models import resolve_model

    rank = 16
    if adapter is not None:
        rank = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16)
    return _llm(resolve_model(str(model)), next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1]))


def lora_request(adapter: str | None):
    """The `LoRARequest` for an adapter folder (None for the base model). Its integer id is a
    function of the folder's path, so the same adapter keeps its slot across calls."""
    from mathdistill.student.generation import BASE

    if adapter is None or adapter == BASE:
        return None
    from mathdistill.student.adapters import check_adapter

    check_adapter(adapter)
    from vllm.lora.request import LoRARequest

    path = str(Path(adapter).resolve())
    return LoRARequest(Path(path).name, zlib.crc32(path.encode()) % (2**31 - 1) + 1, path)


def generate(
    model,
    prompts: Sequence[str],
    *,
    k: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int] | None = None,
    max_new_tokens: int = 320,
    batch_size: int = 256,
    stop: Sequence[str] | None = None,
    adapter: str | None = None,
    on_result: Callable | None = None,
    progress: bool = True,
    loop_stop: bool = False,
) -> list:
    """One `student.generate.Generation` per prompt, in input order (see the module doc)."""
    from vllm import SamplingParams

    from mathdistill.student.generation import Generation

    if loop_stop:
        raise InputError("engine vllm: loop_stop is only available with engine hf")
    if seeds is not None and len(seeds) != len(prompts):
        raise InputError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    lora = lora_request(adapter)
    llm = load(model, lora.lora_path if lora is not None else None)
    sampling = temperature > 0
    n = k if sampling else 1

    def params(i: int):
        return SamplingParams(n=n, temperature=temperature, top_p=top_p if sampling else 1.0,
                              seed=seeds[i] % 2**63 if seeds is not None and sampling else None,
                              max_tokens=max_new_tokens, stop=list(stop or []) or None)

    gens = []
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        outs = llm.generate([prompts[i] for i in chunk], [params(i) for i in chunk], lora_request=lora,
                            use_tqdm=progress)
        for i, out in zip(chunk, outs):
            texts = [c.text for c in out.outputs] * (k // n)
            counts = [len(c.token_ids) for c in out.outputs] * (k // n)
            gens.append(Generation(texts, counts, [False] * k))
            if on_result is not None:
                on_result(i, gens[-1])
    return gens
