"""Batched generation for a student: many prompts in, one (or n) completions per prompt out.

    gens = generate(model, tokenizer, prompts, max_new_tokens=256, batch_size=16)
    gens[i].text, gens[i].num_tokens[0]          # in the order of `prompts`
    generate(model, tokenizer, prompts, stream={0: print})   # prompt 0's text printed as it is written

Two paths with one contract and the same text: the slot engine (`student.engine_run` over `student.engine`:
continuous batching over a static KV cache, every per-step decision on the device; the default wherever it
runs, a CPU included: benchmarks/engine.md) and batches through Hugging Face `model.generate`
(`student.batches`: any causal LM). What they share lives below them: a call's settings, adapter, progress and
results (`student.generation`), when a completion ends (`student.stopping`), seeded draws (`student.draws`),
the calculator (`student.calculator`), the batch size a device holds (`student.batch_size`).

Sampling (temperature > 0, top-p) is seeded per prompt: a row's stream is seeded by (its prompt's seed, its
sample index) and its draws are indexed by token position, so a seeded completion is the same whatever the
batch size, the order, the other rows or a resumed run (`seeds=` gives each prompt its own seed, e.g. from its
problem id). Greedy decoding with `num_samples > 1` generates once and repeats it.

Adapters: `adapter="name"` runs that adapter of a PeftModel for this call (and restores the active one
after), `adapter=BASE` ("base") runs the base model with adapters disabled, `adapter=None` runs the model
as it is.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

from mathdistill.io import InputError
from mathdistill.student import engine_run
from mathdistill.student.batch_size import DEFAULT_BATCH_SIZE, auto_batch_size, batch_size_for_memory
from mathdistill.student.batches import generate_batches
from mathdistill.student.draws import derive_seed
from mathdistill.student.generation import BASE, DEFAULT_MAX_NEW_TOKENS, Generation, check_settings
from mathdistill.student.stopping import ends_in_loop

__all__ = ["Generation", "generate", "ends_in_loop", "check_settings", "derive_seed", "BASE",
           "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_BATCH_SIZE", "batch_size_for_memory", "auto_batch_size"]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    stop: Sequence[str] | None = None,
    adapter: str | None = None,
    seed: int | None = None,
    progress: bool = True,
    on_result: Callable[[int, Generation], None] | None = None,
    share_prefix: bool = True,
    loop_stop: bool = False,
    seeds: Sequence[int] | None = None,
    calculator: bool = False,
    slots: bool | None = None,
    stream: Mapping[int, Callable[[str], None]] | None = None,
) -> list[Generation]:
    """Complete each already-rendered prompt; return one `Generation` per prompt, in input order.

    temperature 0 is greedy decoding; > 0 samples (with `top_p`, no top-k). `num_samples`
    completions per prompt. Sampling is seeded per prompt: `seeds[i]` for prompt i, else
    `derive_seed(seed, i)` (`seed=None`: a fresh random one); sample k of prompt i is the same
    text whatever else is in the call (see the module doc). `stop` strings end a completion
    and are cut from its text.
    `on_result(i, generation)` is called as soon as all samples of prompt `i` are done (at the
    end of its batch), e.g. to save partial results. `share_prefix=False` copies the shared
    prefix's KV cache into every row instead of using the shared-prefix attention (same text; batches only).
    `loop_stop=True` ends a completion that repeats itself (see `ends_in_loop`) instead of letting
    it run to `max_new_tokens`; `Generation.looped` says which ones.
    `calculator=True` forces the value of every arithmetic step a completion writes (`2 * 3 =`,
    `<<48/2=`; see `student.calculator`) and generation continues from there;
    `Generation.interventions` counts them per completion (empty when off).
    `slots`: run on the slot engine (`student.engine`: continuous batching over a static KV cache)
    instead of `student.batches`; None: `engine_run.use_slots` decides (device, MATHDISTILL_SLOTS).
    `stream` ({prompt index: on_text}): prompt i's (first) completion is handed to `stream[i]` piece by piece
    as it is written, beside the other rows; the pieces join to its text (`generation.TextStream`).
    """
    check_settings(max_new_tokens=max_new_tokens, batch_size=batch_size, num_samples=num_samples,
                   temperature=temperature, top_p=top_p)
    prompts = list(prompts)
    if not prompts:
        return []
    if seeds is not None and len(seeds) != len(prompts):
        raise InputError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if temperature > 0 and seeds is None:
        base = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        seeds = [derive_seed(base, i) for i in range(len(prompts))]
    wrong = [i for i in stream or {} if not (isinstance(i, int) and 0 <= i < len(prompts))]
    if wrong:
        raise InputError(f"stream: {wrong[0]!r} is not the index of one of the {len(prompts)} prompts")
    kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature, top_p=top_p,
              num_samples=num_samples, stop=[s for s in (stop or []) if s], adapter=adapter, seeds=seeds,
              progress=progress, on_result=on_result, loop_stop=loop_stop, calculator=calculator, streams=stream)
    if engine_run.use_slots(slots, model):
        return engine_run.generate_slots(model, tokenizer, prompts, **kw)
    return generate_batches(model, tokenizer, prompts, share_prefix=share_prefix, **kw)
