"""`student.generate.generate` on the slot engine (`student.engine`): prompts in, `Generation`s out.

    gens = generate_slots(model, tok, prompts, max_new_tokens=256, batch_size=64, temperature=0.7, seeds=seeds)

The same contract as `generate` (texts, token counts, loop stops, calculator interventions, `on_result`
as soon as all samples of a prompt are done, stop strings cut from the text): every (prompt, sample)
is one engine row; the token prefix every prompt shares (a k-shot prompt) is run once and attended to
by every row when it is at least SHARE_FROM tokens long; sample k of prompt i draws from
`derive_seed(seeds[i], k)` exactly as `generate` does. Greedy decoding with num_samples > 1 generates
once and repeats it.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

__all__ = ["generate_slots", "use_slots", "SHARE_FROM"]

SHARE_FROM = 8  # a shared prompt prefix at least this long is stored once for every row
ENV = "MATHDISTILL_SLOTS"  # "1": the slot engine wherever it can run; "0": never (generate's batches)
COMPILE_ENV = "MATHDISTILL_COMPILE"  # "1": torch.compile the engine's decode step (benchmarks/gpu_speed.py)


def use_slots(setting: bool | None, model) -> bool:
    """Whether `generate` runs on the slot engine: `setting` (True / False), else the environment
    variable MATHDISTILL_SLOTS, else yes: the measured best on CUDA and on this CPU too (as fast at
    16 rows, faster with a long shared prefix or more rows: benchmarks/engine.md); never for a model
    the engine cannot run (`engine_kv.supported`)."""
    from mathdistill.student.engine_kv import supported

    if setting is None:
        env = os.environ.get(ENV, "").strip()
        setting = env != "0"
    return bool(setting) and supported(model) is None


def generate_slots(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
                   temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1, stop=(),
                   adapter: str | None = None, seeds: Sequence[int] | None = None, progress: bool = True,
                   on_result: Callable | None = None, loop_stop: bool = False, calculator: bool = False,
                   on_tokens: Callable[[int, list[int]], None] | None = None):
    """See the module doc; arguments as `generate`'s (`seeds`: one per prompt when sampling).
    `on_tokens(i, ids)` receives prompt i's new tokens as they are collected (one sample)."""
    from mathdistill.student.chat import prompt_token_ids
    from mathdistill.student.engine import Engine, Row
    from mathdistill.student.engine_kv import WINDOW_ALIGN
    from mathdistill.student.generate import (_adapter_context, _common_prefix, _cut_at_stop, _eos_ids,
                                              _progress, _result, derive_seed)

    sampling = temperature > 0
    wanted, k = num_samples, (num_samples if sampling else 1)
    tokens = [prompt_token_ids(tokenizer, p) for p in prompts]
    shared = _common_prefix(tokens) if len(tokens) > 1 else 0
    shared = shared if shared >= SHARE_FROM else 0
    order = sorted(range(len(prompts)), key=lambda i: -len(tokens[i]))  # longest first, as `generate`
    rows = [Row(key=(i, j), ids=tokens[i][shared:], budget=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=derive_seed(seeds[i], j) if sampling else 0, loop_stop=loop_stop, calculator=calculator,
                on_tokens=(lambda ids, i=i: on_tokens(i, ids)) if on_tokens else None)
            for i in order for j in range(k)]
    longest = max(len(r.ids) for r in rows)
    capacity = -(-(longest + max_new_tokens) // WINDOW_ALIGN) * WINDOW_ALIGN
    texts = [[None] * k for _ in prompts]
    counts, looped, calls = ([[0] * k for _ in prompts] for _ in range(3))
    left = [k] * len(prompts)
    stop = [s for s in stop if s]
    with _adapter_context(model, adapter), _progress(len(rows), progress) as bar:
        task = bar.add_task("generate", total=len(rows), speed="")
        engine = Engine(model, tokenizer, slots=min(batch_size, len(rows)), capacity=capacity,
                        max_new_tokens=max_new_tokens, eos=_eos_ids(model, tokenizer), stop=stop,
                        prefix=tokens[0][:shared], sampling=sampling, loop_stop=loop_stop, calculator=calculator,
                        compile=os.environ.get(COMPILE_ENV) == "1")
        engine.submit(rows)
        t0, made = time.perf_counter(), [0]

        def done(row, ids, was_looped, interventions) -> None:
            i, j = row.key
            text = tokenizer.decode(ids, skip_special_tokens=True)
            texts[i][j], counts[i][j], looped[i][j], calls[i][j] = _cut_at_stop(text, stop), len(ids), was_looped, \
                interventions
            made[0] += len(ids)
            bar.advance(task)
            bar.update(task, speed=f"{made[0] / max(time.perf_counter() - t0, 1e-9):.0f} tok/s")
            left[i] -= 1
            if not left[i] and on_result is not None:
                on_result(i, _result(texts[i], counts[i], looped[i], wanted, calls[i] if calculator else []))

        engine.run(done)
    return [_result(t, c, lp, wanted, n if calculator else []) for t, c, lp, n in zip(texts, counts, looped, calls)]
