"""Batched generation for a student: many prompts in, one (or n) completions per prompt out.

    gens = generate(model, tokenizer, prompts, max_new_tokens=256, batch_size=16)
    gens[i].text, gens[i].num_tokens[0]          # in the order of `prompts`

What makes it fast on a CPU:
  * the token prefix shared by every prompt (chat-template header, k-shot exemplars) is run
    through the model once; each batch starts from a copy of that KV cache;
  * rows are sorted by length (longest first) and left-padded, so batches hold similar lengths;
  * a batch ends as soon as every row in it hit EOS or a stop string (checked on the decoded
    tail of each row only); when only a few long runners are left while other prompts wait,
    the batch stops early and those rows continue (from their tokens so far) in a later batch,
    so batches stay full instead of decoding 2 rows for 200 steps;
  * while decoding, that prefix's keys/values are stored once, not once per row: a small
    attention function (`_shared_prefix_attention`) attends to the shared prefix with one matmul
    for the whole batch and to each row's own tokens separately, and merges the two softmaxes.
    With a 4-shot GSM8K prompt (~650 shared tokens) this is most of the decoding time saved.
Generation itself is Hugging Face `model.generate` (greedy, or temperature / top-p sampling).

Adapters: `adapter="name"` runs that adapter of a PeftModel for this call (and restores the
active one after), `adapter=BASE` ("base") runs the base model with adapters disabled,
`adapter=None` runs the model as it is.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mathdistill.io import InputError
from mathdistill.student.chat import prompt_token_ids

__all__ = ["Generation", "generate", "ends_in_loop", "BASE", "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_BATCH_SIZE"]

BASE = "base"  #: adapter sentinel: the base model with every adapter disabled
DEFAULT_MAX_NEW_TOKENS = 320
DEFAULT_BATCH_SIZE = 16
MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward pass
PREEMPT_MIN_STEPS = 32  # a batch runs at least this many steps before handing its last rows on
PREEMPT_FRACTION = 0.25  # ... once no more than this fraction of its rows are still running
# loop stop: a row whose last tokens are one block repeated LOOP_REPEATS times back to back
# (block <= LOOP_MAX_PERIOD tokens, repeats spanning >= LOOP_MIN_SPAN tokens) is finished: greedy
# decoding that repeats itself like that runs to the token limit. Checked every LOOP_EVERY steps.
LOOP_REPEATS, LOOP_MAX_PERIOD, LOOP_MIN_SPAN, LOOP_EVERY = 3, 64, 48, 4


@dataclass
class Generation:
    """The completion(s) of one prompt: `texts[k]` has `num_tokens[k]` generated tokens."""

    texts: list[str] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    looped: list[bool] = field(default_factory=list)  # stopped by the loop stop

    @property
    def text(self) -> str:
        return self.texts[0]


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the token prefix shared by all `seqs`, leaving every sequence at least one token."""
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def _adapter_context(model, adapter: str | None):
    """Context that makes `adapter` active for its duration (see module doc)."""
    if adapter is None:
        return contextlib.nullcontext()
    peft_config = getattr(model, "peft_config", None)
    if adapter == BASE:
        return model.disable_adapter() if peft_config else contextlib.nullcontext()
    if not peft_config or adapter not in peft_config:
        known = ", ".join(peft_config or []) or "none (not a PeftModel)"
        raise InputError(f"adapter '{adapter}' is not loaded on this model; loaded adapters: {known}")

    @contextlib.contextmanager
    def switch():
        previous = model.active_adapter
        model.set_adapter(adapter)
        try:
            yield
        finally:
            model.set_adapter(previous)

    return switch()


# --- shared-prefix attention ------------------------------------------------------------

ATTENTION = "mathdistill_shared_prefix"


@functools.cache
def _shared_prefix_layer():
    """The cache layer class (built on first use: transformers is imported lazily)."""
    import torch
    from transformers.cache_utils import CacheLayerMixin

    class SharedPrefixLayer(CacheLayerMixin):
        """KV cache of one layer: the batch-wide prefix once ([1, H, P, D]) plus each row's own
        tokens in a preallocated buffer. Returns the rows' own keys with the prefix attached."""

        is_sliding = False
        is_compileable = False

        def __init__(self, keys, values, capacity: int):
            super().__init__()
            self.prefix_keys, self.prefix_values, self.capacity, self.length = keys, values, capacity, 0

        def lazy_initialization(self, key_states, value_states) -> None:
            b, h, _, d = key_states.shape
            self.dtype, self.device = key_states.dtype, key_states.device
            self.keys = torch.empty((b, h, self.capacity, d), dtype=key_states.dtype, device=key_states.device)
            self.values = torch.empty_like(self.keys)
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.length + key_states.shape[2]
            self.keys[:, :, self.length : n] = key_states
            self.values[:, :, self.length : n] = value_states
            self.length = n
            keys = self.keys[:, :, :n]
            keys.shared_prefix = (self.prefix_keys, self.prefix_values)  # read by _shared_prefix_attention
            return keys, self.values[:, :, :n]

        def get_seq_length(self) -> int:
            return self.prefix_keys.shape[2] + self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def get_max_length(self) -> int:
            return -1

    return SharedPrefixLayer


def _shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention over [shared prefix | own tokens] without copying the prefix per row.

    query [B, Hq, S, D]; key/value [B, Hkv, T, D] (own tokens) carrying `shared_prefix`
    ([1, Hkv, P, D] each); attention_mask: bool [B, 1, S, P + T] (True = attend) or None
    (= causal). The prefix is visible to every query, so its scores for all B*S queries are one
    batched matmul per KV head; the two partial softmaxes are merged by their maxima and sums.
    """
    import torch

    prefix = getattr(key, "shared_prefix", None)
    if prefix is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    pk, pv = prefix
    b, hq, s, d = query.shape
    hkv, t, p = key.shape[1], key.shape[2], pk.shape[2]
    g = hq // hkv
    scale = scaling if scaling is not None else d**-0.5
    dtype = query.dtype
    q = query.float().reshape(b, hkv, g * s, d)  # rows (group, position) per KV head
    # the shared prefix: [Hkv, B*G*S, P]
    qp = q.transpose(0, 1).reshape(hkv, b * g * s, d)
    sp = torch.bmm(qp, pk[0].float().transpose(1, 2)).mul_(scale)
    mp = sp.amax(-1, keepdim=True)
    ep = torch.exp_(sp.sub_(mp))
    lp = ep.sum(-1, keepdim=True)
    op = torch.bmm(ep, pv[0].float())

    def rows(x):  # [Hkv, B*G*S, n] -> [B, Hkv, G*S, n]
        return x.view(hkv, b, g * s, x.shape[-1]).transpose(0, 1)

    op, mp, lp = rows(op), rows(mp), rows(lp)
    # each row's own tokens: [B, Hkv, G*S, T]
    ss = torch.matmul(q, key.float().transpose(-1, -2)).mul_(scale)
    if attention_mask is not None:
        own = attention_mask[..., p:]
        if own.dtype == torch.bool:
            own = own[:, :, None].expand(b, 1, g, s, t).reshape(b, 1, g * s, t)
            ss = ss.masked_fill(~own, float("-inf"))
        else:
            ss = ss + own[:, :, None].expand(b, 1, g, s, t).reshape(b, 1, g * s, t).float()
    elif s > 1:
        causal = torch.ones(s, t, dtype=torch.bool, device=q.device).tril(t - s)
        ss = ss.masked_fill(~causal.repeat(g, 1), float("-inf"))
    m = torch.maximum(mp, ss.amax(-1, keepdim=True))  # finite: the prefix is never masked
    es = torch.exp(ss - m)
    wp = torch.exp(mp - m)
    out = (op * wp + torch.matmul(es, value.float())) / (lp * wp + es.sum(-1, keepdim=True))
    return out.reshape(b, hq, s, d).transpose(1, 2).contiguous().to(dtype), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, _shared_prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def _can_share_prefix(model, prefix_cache) -> bool:
    """Full-attention layers only (no sliding windows / linear attention), sdpa or eager attention."""
    from transformers.cache_utils import DynamicLayer

    impl = getattr(model.config, "_attn_implementation", None)
    return impl in ("sdpa", "eager", ATTENTION) and all(type(layer) is DynamicLayer for layer in prefix_cache.layers)


@contextlib.contextmanager
def _attention(model, name: str):
    """Run `model` with attention implementation `name` for the duration."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def ends_in_loop(ids: Sequence[int], repeats: int = LOOP_REPEATS, max_period: int = LOOP_MAX_PERIOD,
                 min_span: int = LOOP_MIN_SPAN) -> bool:
    """Whether `ids` ends with one block of <= max_period tokens repeated `repeats` times in a
    row, the repeats covering at least `min_span` tokens."""
    ids = list(ids)
    n = len(ids)
    for p in range(1, max_period + 1):
        span = max(repeats * p, min_span)
        if span > n:
            break
        if ids[n - span + p :] == ids[n - span : n - p]:  # periodic with period p over the span
            return True
    return False


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)] if cuts else text


class _Finish:
    """Stopping criterion for one batch.

    Row r is finished at EOS, at a stop string in what it generated (`gen_start[r]` is where its
    generated text starts in the batch's input, earlier segments included), or when it used up
    its token `budget[r]`, or (`loop_stop`) when what it generated ends in a loop (`ends_in_loop`).
    Once at least PREEMPT_MIN_STEPS steps are done and no more than `preempt_at`
    rows are still running, the whole batch stops early (`preempted`): the running rows go back
    to the queue and continue in a later, fuller batch.
    """

    def __init__(self, tokenizer, width, gen_start, budget, eos, stop, on_done, preempt_at=0, loop_stop=False):
        self.tokenizer, self.width, self.gen_start, self.budget = tokenizer, width, gen_start, budget
        self.eos, self.stop, self.on_done = set(eos), list(stop), on_done
        self.preempt_at, self.loop_stop = preempt_at, loop_stop
        self.looped = [False] * len(budget)
        self.tail = max((len(s) for s in self.stop), default=0) + 2  # tokens are >= 1 character
        self.length: list[int | None] = [None] * len(budget)  # tokens generated in this batch, once done
        self.preempted = False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        rows, cur = input_ids.shape
        steps = cur - self.width
        last = input_ids[:, -1].tolist()
        for i in range(rows):
            if self.length[i] is not None:
                continue
            hit = last[i] in self.eos or steps >= self.budget[i]
            if not hit and self.stop:
                tail = self.tokenizer.decode(input_ids[i, max(self.gen_start[i], cur - self.tail) :])
                hit = any(s in tail for s in self.stop)
            if not hit and self.loop_stop and steps % LOOP_EVERY == 0:
                hit = self.looped[i] = ends_in_loop(input_ids[i, self.gen_start[i] :].tolist())
            if hit:
                self.length[i] = steps
                self.on_done(1)
        running = sum(n is None for n in self.length)
        if running and steps >= PREEMPT_MIN_STEPS and running <= self.preempt_at:
            self.preempted = True
            return torch.ones(rows, dtype=torch.bool, device=input_ids.device)
        return torch.tensor([n is not None for n in self.length], dtype=torch.bool, device=input_ids.device)


def _progress(total: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=not enabled, transient=False,
    )


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
) -> list[Generation]:
    """Complete each already-rendered prompt; return one `Generation` per prompt, in input order.

    temperature 0 is greedy decoding; > 0 samples (with `top_p`, no top-k). `num_samples`
    completions per prompt. `stop` strings end a completion and are cut from its text.
    `on_result(i, generation)` is called as soon as all samples of prompt `i` are done (at the
    end of its batch), e.g. to save partial results. `share_prefix=False` copies the shared
    prefix's KV cache into every row instead of using the shared-prefix attention (same text).
    `loop_stop=True` ends a completion that repeats itself (see `ends_in_loop`) instead of letting
    it run to `max_new_tokens`; `Generation.looped` says which ones.
    """
    import torch
    from transformers import Cache, DynamicCache, StoppingCriteriaList

    if max_new_tokens < 1 or batch_size < 1 or num_samples < 1:
        raise InputError("max_new_tokens, batch_size and num_samples must all be >= 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise InputError(f"need temperature >= 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
    prompts = list(prompts)
    if not prompts:
        return []
    stop = [s for s in (stop or []) if s]
    if seed is not None:
        torch.manual_seed(seed)
    device = model.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    sampling = temperature > 0
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=sampling, pad_token_id=pad, eos_token_id=eos)
    if sampling:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)

    tokens = [prompt_token_ids(tokenizer, p) for p in prompts]
    shared = _common_prefix(tokens)
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    # queue of rows (prompt, sample, tokens generated so far), longest prompt first: the slowest
    # batch runs while the ETA still has time to settle
    queue = collections.deque(
        (i, k, []) for i in sorted(range(len(prompts)), key=lambda i: -len(tokens[i])) for k in range(num_samples)
    )
    texts: list[list[str | None]] = [[None] * num_samples for _ in prompts]
    counts: list[list[int]] = [[0] * num_samples for _ in prompts]
    looped: list[list[bool]] = [[False] * num_samples for _ in prompts]
    left = [num_samples] * len(prompts)
    generated = 0
    t0 = time.perf_counter()
    with _adapter_context(model, adapter), torch.inference_mode(), _progress(len(queue), progress) as bar:
        task = bar.add_task("generate", total=len(queue), speed="")
        prefix_cache, shared_attention = None, False
        if shared:
            prefix_cache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([tokens[0][:shared]], device=device), past_key_values=prefix_cache, use_cache=True)
            shared_attention = share_prefix and _can_share_prefix(model, prefix_cache)
            if shared_attention:
                _register_attention()
        while queue:
            batch = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
            suffixes = [tokens[i][shared:] + done for i, _, done in batch]
            width = shared + max(len(s) for s in suffixes)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, s in enumerate(suffixes):
                # [shared prefix | left padding | own suffix]: positions come from the mask, so the
                # padding in the middle changes nothing
                input_ids[r, :shared] = torch.tensor(tokens[batch[r][0]][:shared])
                input_ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, :shared] = 1
                mask[r, width - len(s) :] = 1
            budget = [max_new_tokens - len(done) for _, _, done in batch]
            kwargs = dict(gen_kwargs, max_new_tokens=max(budget))
            attention = contextlib.nullcontext()
            if prefix_cache is not None and shared_attention:
                capacity = width - shared + max(budget)
                kwargs["past_key_values"] = Cache(
                    layers=[_shared_prefix_layer()(l.keys, l.values, capacity) for l in prefix_cache.layers]
                )
                attention = _attention(model, ATTENTION)
            elif prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                kwargs["past_key_values"] = cache
            finish = _Finish(
                tokenizer, width, [width - len(done) for _, _, done in batch], budget, eos, stop,
                lambda n: bar.advance(task, n),
                # hand the last few long runners to a later, fuller batch while others wait
                preempt_at=int(batch_size * PREEMPT_FRACTION) if len(queue) >= batch_size // 2 else 0,
                loop_stop=loop_stop,
            )
            with attention:
                out = model.generate(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device),
                    stopping_criteria=StoppingCriteriaList([finish]), **kwargs,
                )
            new = out[:, width:].cpu().tolist()
            for r, (i, k, done) in enumerate(batch):
                n = finish.length[r]
                if n is None:  # preempted: continue later from here
                    queue.append((i, k, done + new[r]))
                    continue
                ids = done + new[r][:n]
                text = tokenizer.decode(ids, skip_special_tokens=True)
                texts[i][k], counts[i][k], looped[i][k] = _cut_at_stop(text, stop), len(ids), finish.looped[r]
                generated += len(ids)
                left[i] -= 1
                if left[i] == 0 and on_result is not None:
                    on_result(i, Generation(list(texts[i]), list(counts[i]), list(looped[i])))
            speed = generated / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, speed=f"{speed:.0f} tok/s")
    return [Generation(list(t), list(c), list(lp)) for t, c, lp in zip(texts, counts, looped)]
