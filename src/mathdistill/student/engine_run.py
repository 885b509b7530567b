"""`student.generate.generate` on the slot engine (`student.engine`): prompts in, `Generation`s out.

    gens = generate_slots(model, tok, prompts, max_new_tokens=256, batch_size=64, temperature=0.7, seeds=seeds)

The same contract as `generate` (texts, token counts, loop stops, calculator interventions, `on_result`
as soon as all samples of a prompt are done, stop strings cut from the text): every (prompt, sample)
is one engine row; the token prefix every prompt shares (a k-shot prompt) is run once and attended to
by every row when it is at least MIN_SHARED_PREFIX tokens long; sample k of prompt i draws from
`derive_seed(seeds[i], k)` exactly as `generate` does. Greedy decoding with num_samples > 1 generates
once and repeats it.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Callable, Mapping, Sequence

from mathdistill.student.chat import prompt_token_ids
from mathdistill.student.draws import derive_seed
from mathdistill.student.engine import Engine, Row
from mathdistill.student.engine_kv import capacity, supported
from mathdistill.student.generation import MIN_SHARED_PREFIX, Completions, adapter_context, common_prefix
from mathdistill.student.generation import progress as progress_bar
from mathdistill.student.stopping import eos_ids

__all__ = ["generate_slots", "use_slots"]

ENV = "MATHDISTILL_SLOTS"  # "1": the slot engine wherever it can run; "0": never (generate's batches)
COMPILE_ENV = "MATHDISTILL_COMPILE"  # "1": torch.compile the engine's decode step (benchmarks/gpu_speed.py)


def use_slots(setting: bool | None, model) -> bool:
    """Whether `generate` runs on the slot engine: `setting` (True / False), else the environment
    variable MATHDISTILL_SLOTS, else yes: the measured best on CUDA and on this CPU too (as fast at
    16 rows, faster with a long shared prefix or more rows: benchmarks/engine.md); never for a model
    the engine cannot run (`engine_kv.supported`)."""
    if setting is None:
        env = os.environ.get(ENV, "").strip()
        setting = env != "0"
    return bool(setting) and supported(model) is None


def generate_slots(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
                   temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1, stop=(),
                   adapter: str | None = None, seeds: Sequence[int] | None = None, progress: bool = True,
                   on_result: Callable | None = None, loop_stop: bool = False, calculator: bool = False,
                   streams: Mapping[int, Callable[[str], None]] | None = None):
    """See the module doc; arguments as `generate`'s (`seeds`: one per prompt when sampling, `streams`:
    {prompt: on_text}, its first sample's text streamed as the engine collects its tokens)."""
    sampling = temperature > 0
    k = num_samples if sampling else 1
    stop = [s for s in stop if s]
    results = Completions(tokenizer, len(prompts), k, num_samples, stop, calculator, on_result, streams)
    tokens = [prompt_token_ids(tokenizer, p) for p in prompts]
    shared = common_prefix(tokens, MIN_SHARED_PREFIX) if len(tokens) > 1 else 0
    order = sorted(range(len(prompts)), key=lambda i: -len(tokens[i]))  # longest first, as the batches
    rows = [Row(key=(i, j), ids=tokens[i][shared:], budget=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=derive_seed(seeds[i], j) if sampling else 0, loop_stop=loop_stop, calculator=calculator,
                on_tokens=functools.partial(results.stream, i) if j == 0 and i in results.streams else None)
            for i in order for j in range(k)]
    longest = max(len(r.ids) for r in rows)
    with adapter_context(model, adapter), progress_bar(len(rows), progress) as bar:
        task = bar.add_task("generate", total=len(rows), speed="")
        engine = Engine(model, tokenizer, slots=min(batch_size, len(rows)), capacity=capacity(longest + max_new_tokens),
                        max_new_tokens=max_new_tokens, eos=eos_ids(model, tokenizer), stop=stop,
                        prefix=tokens[0][:shared], sampling=sampling, loop_stop=loop_stop, calculator=calculator,
                        compile=os.environ.get(COMPILE_ENV) == "1")
        engine.submit(rows)
        t0 = time.perf_counter()

        def done(row, ids, looped, interventions) -> None:
            results.done(*row.key, ids, looped, interventions)
            bar.advance(task)
            bar.update(task, speed=f"{results.tokens / max(time.perf_counter() - t0, 1e-9):.0f} tok/s")

        engine.run(done)
    return results.generations()
