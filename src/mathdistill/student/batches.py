"""Generation in batches through Hugging Face `model.generate` (greedy; sampling by a logits processor): the
path `student.generate.generate` takes for a model the slot engine cannot run, or when told (`slots=False`).

    gens = generate_batches(model, tok, prompts, max_new_tokens=256, batch_size=16)

What makes it fast on a CPU:
  * the token prefix shared by every prompt (chat-template header, k-shot exemplars) is run through the model
    once; each batch starts from that KV cache, which decoding attends to once for the whole batch
    (`student.prefix_cache`);
  * rows are sorted by length (longest first) and left-padded, so batches hold similar lengths;
  * a batch ends as soon as every row in it hit EOS or a stop string (checked on the decoded tail of each row
    only); when only a few long runners are left while other prompts wait, the batch stops early and those
    rows continue (from their tokens so far) in a later batch, so batches stay full instead of decoding 2 rows
    for 200 steps (`batch_hooks.Finish`).
Sampling (temperature / top-p) is done by a logits processor (`batch_hooks.RowSampler`) that draws each row's
next token from its own random stream (`student.draws`) and leaves only that token for greedy decoding to pick,
so a seeded completion is the same whatever the batch size, the order, the other rows, a hand-over to a later
batch or a resumed run. Sampling batches (k samples per prompt, mostly long) share one prefill per prompt and
keep a handed-on row's keys/values, so a batch is refilled as soon as a few of its rows are done
(`prefix_cache.sampling_cache`). Greedy decoding keeps the plain path, whose output tests pin byte for byte.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import time
from typing import Callable, Mapping, Sequence

from mathdistill.student.batch_hooks import PREEMPT_MIN_STEPS, CalculatorHook, Finish, RowSampler, TokenTap
from mathdistill.student.calculator import calculator_for
from mathdistill.student.chat import prompt_token_ids
from mathdistill.student.draws import derive_seed
from mathdistill.student.generation import (MIN_SHARED_PREFIX, Completions, Generation, adapter_context,
                                            common_prefix)
from mathdistill.student.generation import progress as progress_bar
from mathdistill.student.prefix_cache import (ATTENTION, attention_impl, can_share_prefix, register_attention,
                                              sampling_cache, shared_prefix_layer)
from mathdistill.student.stopping import eos_ids

__all__ = ["generate_batches", "SHARE_ATTENTION_FROM"]

SHARE_ATTENTION_FROM = 256  # sampling: shorter shared prefixes are copied into every row (see sampling_cache)
PREEMPT_FRACTION = 0.25  # a batch hands its last rows on once no more than this fraction of them are running
# sampling (rows keep their keys/values when handed on): refill a batch once this fraction of its
# rows is done, after at least REFILL_MIN_STEPS steps
REFILL_FRACTION, REFILL_MIN_STEPS = 0.125, 16


def generate_batches(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
                     temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1, stop: Sequence[str] = (),
                     adapter: str | None = None, seeds: Sequence[int] | None = None, progress: bool = True,
                     on_result: Callable[[int, Generation], None] | None = None, share_prefix: bool = True,
                     loop_stop: bool = False, calculator: bool = False,
                     streams: Mapping[int, Callable[[str], None]] | None = None) -> list[Generation]:
    """See the module doc; arguments as `student.generate.generate`'s (`seeds`: one per prompt when sampling,
    `stop`: non-empty strings, `streams`: {prompt: on_text})."""
    import torch

    samples = num_samples if temperature > 0 else 1  # greedy: once, then repeated
    results = Completions(tokenizer, len(prompts), samples, num_samples, stop, calculator, on_result, streams)
    run = _Batches(model, tokenizer, prompts, results, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   temperature=temperature, top_p=top_p, samples=samples, seeds=seeds, loop_stop=loop_stop,
                   calculator=calculator)
    t0 = time.perf_counter()
    with adapter_context(model, adapter), torch.inference_mode(), progress_bar(len(run.queue), progress) as bar:
        task = bar.add_task("generate", total=len(run.queue), speed="")
        run.prefill_prefix(share_prefix)
        while run.queue:
            bar.advance(task, run.batch())
            bar.update(task, speed=f"{results.tokens / max(time.perf_counter() - t0, 1e-9):.0f} tok/s")
    return results.generations()


class _Batches:
    """One call's queue of rows (prompt, sample, tokens generated so far), run batch by batch (`batch`);
    finished rows go to `results`, handed-on ones back to the queue."""

    def __init__(self, model, tokenizer, prompts, results: Completions, *, max_new_tokens, batch_size, temperature,
                 top_p, samples, seeds, loop_stop, calculator):
        self.model, self.tokenizer, self.results = model, tokenizer, results
        self.max_new_tokens, self.batch_size, self.loop_stop = max_new_tokens, batch_size, loop_stop
        self.temperature, self.top_p, self.seeds, self.sampling = temperature, top_p, seeds, temperature > 0
        self.stop = results.stop
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos = eos_ids(model, tokenizer)
        self.tokens = [prompt_token_ids(tokenizer, p) for p in prompts]
        self.shared = common_prefix(self.tokens, MIN_SHARED_PREFIX)
        # longest prompt first: the slowest batch runs while the ETA still has time to settle
        order = sorted(range(len(prompts)), key=lambda i: -len(self.tokens[i]))
        self.queue = collections.deque((i, k, []) for i in order for k in range(samples))
        self.calc = calculator_for(tokenizer) if calculator else None
        self.calc_state: dict[tuple[int, int], list] = {}  # (prompt, sample) -> [tokens still to force, interventions]
        self.prefix_cache, self.shared_attention = None, False
        # sampling: a handed-on row keeps its keys/values (kept[i, k]) and continues without a second prefill;
        # samples of one prompt share its prefill (greedy keeps the plain path, whose text is pinned by tests)
        self.carry, self.kept = False, {}

    def prefill_prefix(self, share_prefix: bool) -> None:
        """Run the shared prefix once; attend to it once per batch where the model allows (`share_prefix`)."""
        import torch
        from transformers import DynamicCache

        if not self.shared:
            return
        self.prefix_cache = DynamicCache(config=self.model.config)
        self.model(input_ids=torch.tensor([self.tokens[0][: self.shared]], device=self.model.device),
                   past_key_values=self.prefix_cache, use_cache=True)
        self.shared_attention = share_prefix and can_share_prefix(self.model, self.prefix_cache)
        if self.shared_attention:
            register_attention()
        self.carry = self.sampling and self.shared_attention

    def batch(self) -> int:
        """Run the next batch; return how many of its rows finished."""
        batch = [self.queue.popleft() for _ in range(min(self.batch_size, len(self.queue)))]
        suffixes, width, input_ids, mask = self._inputs(batch)
        budget = [self.max_new_tokens - len(done) for _, _, done in batch]
        cache, attention = self._cache(batch, input_ids, mask, width, budget)
        finish = self._finish(batch, width, budget)
        kwargs = dict(max_new_tokens=max(budget), do_sample=False, pad_token_id=self.pad, eos_token_id=self.eos,
                      **self._hooks(batch, width, finish), **({"past_key_values": cache} if cache is not None else {}))
        with attention:
            out = self.model.generate(input_ids=input_ids.to(self.model.device),
                                      attention_mask=mask.to(self.model.device), **kwargs)
        self._collect(batch, out[:, width:].cpu().tolist(), finish, width, suffixes, cache)
        return sum(n is not None for n in finish.length)

    def _inputs(self, batch):
        """(suffixes, width, input_ids, attention mask) of a batch: each row is [shared prefix | left padding |
        own suffix]; positions come from the mask, so the padding in the middle changes nothing."""
        import torch

        shared = self.shared
        suffixes = [self.tokens[i][shared:] + done for i, _, done in batch]
        width = shared + max(len(s) for s in suffixes)
        input_ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, s in enumerate(suffixes):
            input_ids[r, :shared] = torch.tensor(self.tokens[batch[r][0]][:shared])
            input_ids[r, width - len(s) :] = torch.tensor(s)
            mask[r, :shared] = 1
            mask[r, width - len(s) :] = 1
        return suffixes, width, input_ids, mask

    def _cache(self, batch, input_ids, mask, width: int, budget: list[int]):
        """(the batch's KV cache holding the shared prefix, or None; the attention to run it with)."""
        from transformers import Cache

        if self.prefix_cache is None:
            return None, contextlib.nullcontext()
        if not self.shared_attention:
            cache = copy.deepcopy(self.prefix_cache)
            cache.batch_repeat_interleave(len(batch))
            return cache, contextlib.nullcontext()
        capacity = width - self.shared + max(budget)
        copy_prefix = self.carry and self.shared < SHARE_ATTENTION_FROM
        layers = [shared_prefix_layer()(l.keys, l.values, capacity, copy_prefix) for l in self.prefix_cache.layers]
        if self.carry:
            sampling_cache(self.model, layers, batch, input_ids, mask, self.shared, self.kept)
        return Cache(layers=layers), attention_impl(self.model, ATTENTION)

    def _finish(self, batch, width: int, budget: list[int]) -> Finish:
        if self.carry:  # continuing is cheap: refill (or, with nothing left to start, shrink) a batch as soon
            # as a few rows are done
            free = max(1, int(self.batch_size * REFILL_FRACTION))
            preempt_at = len(batch) - free if len(batch) > free else 0
        else:  # hand the last few long runners to a later, fuller batch while others wait
            preempt_at = int(self.batch_size * PREEMPT_FRACTION) if len(self.queue) >= self.batch_size // 2 else 0
        return Finish(self.tokenizer, width, [width - len(done) for _, _, done in batch], budget, self.eos, self.stop,
                      preempt_at=preempt_at, loop_stop=self.loop_stop,
                      min_steps=REFILL_MIN_STEPS if self.carry else PREEMPT_MIN_STEPS)

    def _hooks(self, batch, width: int, finish: Finish) -> dict:
        """`model.generate`'s logits processors (sampling, calculator) and stopping criteria (finish, streams)."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        processors = []
        if self.sampling:
            processors.append(RowSampler([derive_seed(self.seeds[i], k) for i, k, _ in batch],
                                         [len(done) for _, _, done in batch], width, self.temperature, self.top_p,
                                         lambda: finish.length))
        if self.calc is not None:
            state = [self.calc_state.setdefault((i, k), [[], 0]) for i, k, _ in batch]
            processors.append(CalculatorHook(self.calc, finish.gen_start, state, finish))
        criteria = [finish]
        tapped = {r: functools.partial(self.results.stream, i) for r, (i, k, _) in enumerate(batch)
                  if k == 0 and i in self.results.streams}
        if tapped:
            criteria.append(TokenTap(tapped, width, finish))
        hooks = {"stopping_criteria": StoppingCriteriaList(criteria)}
        if processors:
            hooks["logits_processor"] = LogitsProcessorList(processors)
        return hooks

    def _collect(self, batch, new: list[list[int]], finish: Finish, width: int, suffixes, cache) -> None:
        """Finished rows to the results; the others back to the queue (sampling: first, with their keys/values
        for every token but the last one, as they are held in memory)."""
        handed = []
        for r, (i, k, done) in enumerate(batch):
            n = finish.length[r]
            if n is None:  # handed on: continues later from here
                handed.append((i, k, done + new[r]))
                if self.carry:
                    start = width - self.shared - len(suffixes[r])
                    end = width - self.shared + len(new[r]) - 1
                    self.kept[i, k] = [(l.own_keys[r, :, start:end], l.own_values[r, :, start:end])
                                       for l in cache.layers]
                continue
            calls = self.calc_state.pop((i, k))[1] if self.calc is not None else 0
            self.results.done(i, k, done + new[r][:n], finish.looped[r], calls)
        if self.carry:
            self.queue.extendleft(reversed(handed))
        else:
            self.queue.extend(handed)
