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
Generation itself is Hugging Face `model.generate`, greedy. Sampling (temperature / top-p) is
done by a logits processor (`_RowSampler`) that draws each row's next token from its own
random stream and leaves only that token for greedy decoding to pick. A row's stream is
seeded by (its prompt's seed, its sample index) and its draws are indexed by token position,
so a seeded completion is the same whatever the batch size, the order, the other rows, a
hand-over to a later batch or a resumed run (`seeds=` gives each prompt its own seed, e.g.
from its problem id). Greedy decoding with `num_samples > 1` generates once and repeats it.

Sampling batches (k samples per prompt, mostly long) go further (`_sampling_cache`): a
prompt's samples share one prefill; a row handed on keeps its keys/values and continues in
the very next batch without a second prefill, so a batch is refilled as soon as a quarter of
its rows is done; a short shared prefix (< SHARE_ATTENTION_FROM tokens, e.g. the chat header)
is copied into each row and the model's own attention runs. Greedy decoding keeps the plain
path above, whose output tests pin byte for byte.

Adapters: `adapter="name"` runs that adapter of a PeftModel for this call (and restores the
active one after), `adapter=BASE` ("base") runs the base model with adapters disabled,
`adapter=None` runs the model as it is.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mathdistill.io import InputError
from mathdistill.student.calculator import TAIL_TOKENS
from mathdistill.student.chat import prompt_token_ids

__all__ = ["Generation", "generate", "ends_in_loop", "check_settings", "derive_seed", "BASE",
           "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_BATCH_SIZE", "batch_size_for_memory", "auto_batch_size"]

BASE = "base"  #: adapter sentinel: the base model with every adapter disabled
DEFAULT_MAX_NEW_TOKENS = 320
DEFAULT_BATCH_SIZE = 16
MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward pass
SHARE_ATTENTION_FROM = 256  # sampling: shorter shared prefixes are copied into every row (see _sampling_cache)
PREEMPT_MIN_STEPS = 32  # a batch runs at least this many steps before handing its last rows on
PREEMPT_FRACTION = 0.25  # ... once no more than this fraction of its rows are still running
# sampling (rows keep their keys/values when handed on): refill a batch once this fraction of its
# rows is done, after at least REFILL_MIN_STEPS steps
REFILL_FRACTION, REFILL_MIN_STEPS = 0.125, 16
# loop stop: a row whose last tokens are one block repeated LOOP_REPEATS times back to back
# (block <= LOOP_MAX_PERIOD tokens, repeats spanning >= LOOP_MIN_SPAN tokens) is finished: greedy
# decoding that repeats itself like that runs to the token limit. Checked every LOOP_EVERY steps.
LOOP_REPEATS, LOOP_MAX_PERIOD, LOOP_MIN_SPAN, LOOP_EVERY = 3, 64, 48, 4
NUCLEUS_TRIES = (64, 1024)  # top-p: candidates looked at before sorting the whole vocabulary
_MASK64 = (1 << 64) - 1


@dataclass
class Generation:
    """The completion(s) of one prompt: `texts[k]` has `num_tokens[k]` generated tokens."""

    texts: list[str] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    looped: list[bool] = field(default_factory=list)  # stopped by the loop stop
    interventions: list[int] = field(default_factory=list)  # calculator results forced (empty: calculator off)

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
        # peft's set_adapter makes the adapter trainable unless inference_mode: switch frozen, and
        # give every parameter back the requires_grad it had (a model being trained keeps training)
        previous, grads = model.active_adapter, {n: p.requires_grad for n, p in model.named_parameters()}
        model.set_adapter(adapter, inference_mode=True)
        try:
            yield
        finally:
            model.set_adapter(previous, inference_mode=True)
            for n, p in model.named_parameters():
                p.requires_grad_(grads[n])

    return switch()


# --- seeded sampling, independent of batching ----------------------------------------------

def derive_seed(*parts) -> int:
    """A 64-bit seed from any parts (ints, strings): the same parts give the same seed, e.g.
    `derive_seed(seed, problem_id)` for a problem, `derive_seed(that, k)` for its k-th sample."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _uniform(seed: int, step: int) -> float:
    """The draw in [0, 1) for token `step` of the row seeded `seed`: splitmix64 of (seed, step),
    a function of the two alone (no generator state to carry across batches or runs)."""
    z = (seed + (step + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / 2.0**53


def _nucleus_pick(probs, u, top_p: float):
    """Inverse-CDF draw (`u` in [0, 1), one per row) from each row of `probs` [R, V], restricted
    to its top-p nucleus: the most probable tokens whose probabilities, before each is added,
    sum to less than `top_p`. Looks at the top 64 / 1024 tokens first and sorts the whole
    vocabulary only for the rows whose nucleus is wider."""
    import torch

    rows, vocab = probs.shape
    picks = torch.empty(rows, dtype=torch.long, device=probs.device)
    left = torch.arange(rows, device=probs.device)
    for n in (*(t for t in NUCLEUS_TRIES if t < vocab), vocab):
        vals, ids = probs[left].topk(n, dim=-1) if n < vocab else probs[left].sort(dim=-1, descending=True)
        cum = vals.cumsum(-1)
        covered = cum[:, -1] >= top_p if n < vocab else torch.ones(len(left), dtype=torch.bool, device=probs.device)
        keep = (cum - vals) < top_p  # always the first token
        vals = vals * keep
        cum = vals.cumsum(-1)
        kept = keep.sum(-1, keepdim=True)
        at = torch.searchsorted(cum, u[left, None] * cum[:, -1:], right=True).clamp_(max=kept - 1)
        chosen = ids.gather(1, at)[:, 0]
        picks[left[covered]] = chosen[covered]
        left = left[~covered]
        if not len(left):
            break
    return picks


class _RowSampler:
    """Logits processor for seeded sampling independent of batching: draws each running row's
    next token from softmax(scores / temperature) (top-p nucleus) with the uniform `_uniform(seed,
    position)` of its row, and leaves only that token (all others -inf), so greedy decoding picks
    it. `offset[r]`: tokens row r generated in earlier batches; `width`: the batch's input width;
    `done[r]` (the stopping criterion's list, or a function giving it) is not None once row r has finished."""

    def __init__(self, seeds, offset, width, temperature, top_p, done):
        self.seeds, self.offset, self.width = seeds, offset, width
        self.temperature, self.top_p, self.done = temperature, top_p, done

    def __call__(self, input_ids, scores):
        import torch

        step = input_ids.shape[1] - self.width
        done = self.done() if callable(self.done) else self.done
        rows = [r for r, d in enumerate(done) if d is None]
        out = torch.full_like(scores, float("-inf"))
        if not rows:
            return out
        u = torch.tensor([_uniform(self.seeds[r], self.offset[r] + step) for r in rows])
        probs = torch.softmax(scores[rows] / self.temperature, dim=-1)
        if self.top_p < 1:
            tokens = _nucleus_pick(probs, u.to(probs.device), self.top_p)
        else:
            cum = probs.cumsum(-1)
            tokens = torch.searchsorted(cum, u.to(probs.device)[:, None] * cum[:, -1:], right=True)[:, 0]
            tokens = tokens.clamp_(max=probs.shape[1] - 1)
        out[torch.tensor(rows, device=scores.device), tokens] = 0.0
        return out


# --- shared-prefix attention ------------------------------------------------------------

ATTENTION = "mathdistill_shared_prefix"


@functools.cache
def _shared_prefix_layer():
    """The cache layer class (built on first use: transformers is imported lazily)."""
    import torch
    from transformers.cache_utils import CacheLayerMixin

    class SharedPrefixLayer(CacheLayerMixin):
        """KV cache of one layer: the batch-wide prefix once ([1, H, P, D]) plus each row's own
        tokens in a preallocated buffer. Returns the rows' own keys with the prefix attached.
        `copy_prefix=True` instead copies the prefix into every row's buffer (the model's own
        attention then runs on it: faster for a short prefix)."""

        is_sliding = False
        is_compileable = False

        def __init__(self, keys, values, capacity: int, copy_prefix: bool = False):
            super().__init__()
            self.prefix_keys, self.prefix_values, self.capacity, self.length = keys, values, capacity, 0
            self.copy_prefix, self.start = copy_prefix, keys.shape[2] if copy_prefix else 0  # own tokens from `start`

        def lazy_initialization(self, key_states, value_states) -> None:
            self.allocate(key_states.shape[0])

        def allocate(self, rows: int) -> None:
            """Buffers for `rows` rows, left uninitialised (`update` or `_sampling_cache` fills them)."""
            _, h, p, d = self.prefix_keys.shape
            shape, like = (rows, h, self.start + self.capacity, d), self.prefix_keys
            self.keys, self.values = (torch.empty(shape, dtype=like.dtype, device=like.device) for _ in range(2))
            if self.copy_prefix:
                self.keys[:, :, :p], self.values[:, :, :p] = self.prefix_keys, self.prefix_values
            self.own_keys, self.own_values = self.keys[:, :, self.start :], self.values[:, :, self.start :]
            self.dtype, self.device, self.is_initialized = like.dtype, like.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = self.length + key_states.shape[2]
            self.own_keys[:, :, self.length : n] = key_states
            self.own_values[:, :, self.length : n] = value_states
            self.length = n
            keys = self.keys[:, :, : self.start + n]
            if not self.copy_prefix:
                keys.shared_prefix = (self.prefix_keys, self.prefix_values)  # read by _shared_prefix_attention
            return keys, self.values[:, :, : self.start + n]

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
    ([1, Hkv, P, D] each); attention_mask: bool [B, 1, S, P + T] (True = attend), additive float, or
    None (= causal). The prefix is visible to every query: `engine_kv.prefix_attention` (one batched
    matmul per KV head for the prefix, the two partial softmaxes merged by their maxima and sums).
    """
    import torch

    from mathdistill.student.engine_kv import prefix_attention

    prefix = getattr(key, "shared_prefix", None)
    if prefix is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    pk, pv = prefix
    own = None
    if attention_mask is not None:
        own = attention_mask[..., pk.shape[2]:]
        if own.dtype != torch.bool:  # additive: 0 where attended
            own = own == 0
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return prefix_attention(query, key, value, own, pk, pv, scale), None


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
    """Stopping criterion for one batch, checked on the device (no host copy per step).

    Row r is finished at EOS, at a stop string in what it generated (`gen_start[r]` is where its
    generated text starts in the batch's input, earlier segments included), or when it used up
    its token `budget[r]`, or (`loop_stop`) when what it generated ends in a loop (`ends_in_loop`,
    here `_loops` for the whole batch every LOOP_EVERY steps).
    Once at least `min_steps` (PREEMPT_MIN_STEPS) steps are done and no more than `preempt_at`
    rows are still running, the whole batch stops early (`preempted`): the running rows go back
    to the queue and continue in a later, fuller batch.
    EOS, budget, loop and preemption are tensor operations; a stop string is looked for (in the
    decoded tail, as before) only in the rows whose last token can have completed one
    (`_stop_candidates`), so with no such token there is no per-row Python. `length[r]` (tokens
    generated in this batch once done, else None) and `looped[r]` are host copies, made when read:
    after generation (and every step by `_RowSampler`, whose sampling is per-row Python anyway);
    `finished` is the rows' state on the device during it.
    """

    def __init__(self, tokenizer, width, gen_start, budget, eos, stop, preempt_at=0, loop_stop=False,
                 min_steps=None):
        self.tokenizer, self.width, self.gen_start, self.budget = tokenizer, width, gen_start, budget
        self.eos, self.stop = list(eos), list(stop)
        self.preempt_at, self.loop_stop = preempt_at, loop_stop
        self.min_steps = PREEMPT_MIN_STEPS if min_steps is None else min_steps
        self.tail = max((len(s) for s in self.stop), default=0) + 2  # tokens are >= 1 character
        self.candidates = _stop_candidates(tokenizer, tuple(self.stop)) if self.stop else None
        self.finished = None  # bool [rows] on the device, from the first step on
        self._lists = None

    def _setup(self, device) -> None:
        import torch

        rows = len(self.budget)
        self.finished = torch.zeros(rows, dtype=torch.bool, device=device)
        self.at = torch.full((rows,), -1, dtype=torch.long, device=device)  # step a row finished at
        self.looped_rows = torch.zeros(rows, dtype=torch.bool, device=device)
        self.eos_ids = torch.tensor(self.eos, dtype=torch.long, device=device)
        self.budget_t = torch.tensor(self.budget, dtype=torch.long, device=device)
        self.gen_start_t = torch.tensor(self.gen_start, dtype=torch.long, device=device)
        if self.candidates is not None:
            self.candidates = self.candidates.to(device)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        cur = input_ids.shape[1]
        steps = cur - self.width
        if self.finished is None:
            self._setup(input_ids.device)
        last, running = input_ids[:, -1], ~self.finished
        hit = (torch.isin(last, self.eos_ids) | (self.budget_t <= steps)) & running
        if self.stop:
            maybe = running & ~hit
            if self.candidates is not None:
                maybe &= torch.isin(last, self.candidates)
            for i in maybe.nonzero()[:, 0].tolist():
                tail = self.tokenizer.decode(input_ids[i, max(self.gen_start[i], cur - self.tail) :])
                if any(s in tail for s in self.stop):
                    hit[i] = True
        if self.loop_stop and steps % LOOP_EVERY == 0:
            width = min(cur, LOOP_WINDOW)
            looped = _loops(input_ids[:, cur - width :], cur - self.gen_start_t) & running & ~hit
            self.looped_rows |= looped
            hit |= looped
        self.at = torch.where(hit, steps, self.at)
        self.finished |= hit
        self._lists = None
        if self.preempt_at and steps >= self.min_steps:
            left = (~self.finished).sum()
            return self.finished | ((left > 0) & (left <= self.preempt_at))
        return self.finished.clone()

    def _collect(self) -> tuple[list, list]:
        if self._lists is None:
            if self.finished is None:
                self._lists = [None] * len(self.budget), [False] * len(self.budget)
            else:
                self._lists = [n if n >= 0 else None for n in self.at.tolist()], self.looped_rows.tolist()
        return self._lists

    @property
    def length(self) -> list[int | None]:
        return self._collect()[0]

    @property
    def looped(self) -> list[bool]:
        return self._collect()[1]

    @property
    def preempted(self) -> bool:
        """Whether the batch stopped with rows still running (read after generation)."""
        return any(n is None for n in self.length)


LOOP_WINDOW = max(LOOP_REPEATS * LOOP_MAX_PERIOD, LOOP_MIN_SPAN)  # tokens `_loops` looks at


def _loops(ids, generated):
    """`ends_in_loop` for every row of `ids` [rows, W] (a batch's last W <= LOOP_WINDOW columns) at
    once, on its device; `generated[r]`: how many of row r's tokens were generated (only those count)."""
    import torch

    rows, width = ids.shape
    device = ids.device
    period = torch.arange(1, LOOP_MAX_PERIOD + 1, device=device)[:, None]  # [P, 1]
    span = (period * LOOP_REPEATS).clamp(min=LOOP_MIN_SPAN)  # [P, 1]
    col = torch.arange(width, device=device)[None, :]  # [1, W]
    compared = col >= width - span + period  # ids[j] == ids[j - p] for j in the last span - p columns
    same = ids[:, (col - period).clamp(min=0)] == ids[:, None, :]  # [rows, P, W]
    periodic = (same | ~compared).all(-1) & (span[:, 0] <= width)  # [rows, P]
    return (periodic & (span[:, 0] <= generated[:, None])).any(-1)


_PER_TOKENIZER: dict = {}  # (id(tokenizer), what) -> (tokenizer, value)


def _per_tokenizer(tokenizer, what, build):
    """`build()`, computed once per tokenizer and `what` (the tokenizer is kept beside it, so a new
    tokenizer that reuses a freed one's id is not given the old value)."""
    key = (id(tokenizer), what)
    cached = _PER_TOKENIZER.get(key)
    if cached is None or cached[0] is not tokenizer:
        cached = _PER_TOKENIZER[key] = (tokenizer, build())
    return cached[1]


def _token_texts(tokenizer) -> list[str]:
    """Each vocabulary token's text as it reads after other text (`decode([a, t])` less `decode([a])`,
    so a SentencePiece token keeps its leading space), special tokens included; once per tokenizer."""

    def build() -> list[str]:
        ref = tokenizer.encode("a", add_special_tokens=False)[-1:]
        base = tokenizer.decode(ref)
        pairs = tokenizer.batch_decode([ref + [i] for i in range(len(tokenizer))])
        return [t[len(base):] if t.startswith(base) else t for t in pairs]

    return _per_tokenizer(tokenizer, "texts", build)


def calculator_for(tokenizer):
    """The `student.calculator.Calculator` of `tokenizer` (it reads the whole vocabulary: ~0.3 s), once per
    tokenizer, for every generate call and served request."""
    from mathdistill.student.calculator import Calculator

    return _per_tokenizer(tokenizer, "calculator", lambda: Calculator(tokenizer))


def _stop_candidates(tokenizer, stop: tuple[str, ...]):
    """The token ids after which a stop string can newly appear in a row's decoded tail: a new
    occurrence needs a character the last token added, so its text shares a character with a stop
    string, or is empty or a partial UTF-8 sequence (`\ufffd`, completing an earlier one). None
    (every token) for a tokenizer that cleans up spaces in decoding (text can change further back)."""
    import torch

    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return None

    def build():
        chars = set("".join(stop))
        ids = [i for i, t in enumerate(_token_texts(tokenizer)) if not t or "\ufffd" in t or chars.intersection(t)]
        return torch.tensor(ids, dtype=torch.long)

    return _per_tokenizer(tokenizer, ("stop", stop), build)


class _CalculatorHook:
    """Logits processor for calculator decoding (`student.calculator`): when a running row's last
    token ends with `=` (checked on the device for the whole batch: `Calculator.triggers`), the
    row's last generated tokens are decoded and, if they end in an arithmetic expression, the
    tokens of its value are forced one per step (all other tokens -inf); the step after the value
    (and after a "." or "," right behind it) may not write a digit (`Calculator.continuations`),
    so the value is not extended. Python runs only for the rows that triggered, are being forced
    or just were; the others are untouched. `state[r]` is row r's
    [tokens still to force, interventions so far] (kept across a hand-over to a later batch);
    `gen_start[r]` is where its generated tokens start; `finish.finished` (a `_Finish`; None
    before its first step) marks the rows that are done (a finished row's token is padding)."""

    def __init__(self, calculator, gen_start, state, finish):
        self.calculator, self.gen_start, self.state, self.finish = calculator, gen_start, state, finish
        self.forcing = {r for r, (pending, _) in enumerate(state) if pending}  # rows with tokens to force
        self.guard: dict[int, bool] = {}  # rows whose value ended: True the step after it, False one more
        self.triggers = self.continuations = None

    def __call__(self, input_ids, scores):
        import torch

        if self.triggers is None:
            self.triggers = torch.tensor(self.calculator.triggers, dtype=torch.long, device=input_ids.device)
            self.continuations = torch.tensor(self.calculator.continuations, dtype=torch.long, device=scores.device)
        if self.guard:  # a forced value was just written (or its "." / ","): no digit may extend it
            guard, self.guard = self.guard, {}
            for r, first in guard.items():
                if first or int(input_ids[r, -1]) in self.calculator.joins:
                    scores[r, self.continuations] = float("-inf")
                    if first:
                        self.guard[r] = False
        cur = input_ids.shape[1]
        hit = torch.isin(input_ids[:, -1], self.triggers)
        if self.finish.finished is not None:
            hit &= ~self.finish.finished
        for r in hit.nonzero()[:, 0].tolist():  # one small copy per step: the rows that wrote `=`
            if self.state[r][0]:
                continue
            start = max(self.gen_start[r], cur - TAIL_TOKENS)
            forced = self.calculator.forced(input_ids[r, start:].tolist(), at_start=start == self.gen_start[r])
            if forced:
                self.state[r][0], self.state[r][1] = list(forced), self.state[r][1] + 1
                self.forcing.add(r)
        if self.forcing:
            rows = sorted(self.forcing)
            tokens = [self.state[r][0].pop(0) for r in rows]
            self.forcing = {r for r in rows if self.state[r][0]}
            self.guard.update({r: True for r in rows if r not in self.forcing})
            at = torch.tensor(rows, device=scores.device)
            scores[at] = float("-inf")
            scores[at, torch.tensor(tokens, device=scores.device)] = 0.0
        return scores


def _progress(total: int, enabled: bool):
    """The progress bar, on stderr (stdout carries only results)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=not enabled, transient=False,
        console=Console(stderr=True),
    )


_COUNT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
_RULES = {  # setting -> (check, the rule as errors state it)
    "max_new_tokens": _COUNT, "batch_size": _COUNT, "num_samples": _COUNT, "samples": _COUNT, "k": _COUNT,
    "temperature": (lambda v: isinstance(v, (int, float)) and v >= 0, ">= 0"),
    "top_p": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "in (0, 1]"),
}


MAX_AUTO_BATCH = 4096  # most rows `batch_size_for_memory` picks


def batch_size_for_memory(free_bytes: int, *, layers: int, kv_heads: int, heads: int, head_dim: int, vocab: int,
                          dtype_bytes: int, tokens_per_row: int, fraction: float = 0.8,
                          cap: int = MAX_AUTO_BATCH) -> int:
    """How many rows to generate together in `fraction` of `free_bytes` of accelerator memory.

    A row holds its keys and values (2 x layers x kv_heads x head_dim x dtype_bytes per token, for
    `tokens_per_row` tokens: its prompt suffix and its new tokens; a shared prefix is stored once),
    one step's logits and their processed copy (2 x vocab fp32) and, while its prompt is prefilled,
    one layer's attention scores (heads x tokens_per_row^2 fp32, an upper bound). Between 1 and `cap`.
    E.g. SmolLM2-135M in bf16 (30 layers, 3 KV heads, 9 heads, head_dim 64, vocab 49152), 640
    tokens a row, 60 GiB free: `batch_size_for_memory(60 * 2**30, layers=30, kv_heads=3, heads=9,
    head_dim=64, vocab=49152, dtype_bytes=2, tokens_per_row=640)`."""
    per_row = (2 * layers * kv_heads * head_dim * dtype_bytes * tokens_per_row + 2 * 4 * vocab
               + heads * tokens_per_row * tokens_per_row * 4)
    return max(1, min(cap, int(free_bytes * fraction) // per_row))


def auto_batch_size(model, tokens_per_row: int, free_bytes: int | None = None, fraction: float = 0.8) -> int:
    """`batch_size_for_memory` for `model` (its config and dtype) on its device: the free memory
    of its CUDA device (`free_bytes` overrides it); DEFAULT_BATCH_SIZE on a CPU (measured best
    there, see benchmarks/README.md) unless `free_bytes` is given."""
    if free_bytes is None:
        device = getattr(model, "device", None)
        if device is None or getattr(device, "type", "cpu") != "cuda":
            return DEFAULT_BATCH_SIZE
        import torch

        free_bytes = torch.cuda.mem_get_info(device)[0]
    config = model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    dtype_bytes = next(model.parameters()).element_size()
    return batch_size_for_memory(free_bytes, layers=config.num_hidden_layers,
                                 kv_heads=getattr(config, "num_key_value_heads", None) or heads, heads=heads,
                                 head_dim=head_dim, vocab=config.vocab_size, dtype_bytes=dtype_bytes,
                                 tokens_per_row=tokens_per_row, fraction=fraction)


def check_settings(**settings) -> None:
    """InputError naming the first generation setting out of range, e.g.
    `check_settings(batch_size=0)` -> "batch_size must be an integer >= 1 (got 0)"."""
    for name, value in settings.items():
        ok, rule = _RULES[name]
        if not ok(value):
            raise InputError(f"{name} must be {rule} (got {value!r})")


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
) -> list[Generation]:
    """Complete each already-rendered prompt; return one `Generation` per prompt, in input order.

    temperature 0 is greedy decoding; > 0 samples (with `top_p`, no top-k). `num_samples`
    completions per prompt. Sampling is seeded per prompt: `seeds[i]` for prompt i, else
    `derive_seed(seed, i)` (`seed=None`: a fresh random one); sample k of prompt i is the same
    text whatever else is in the call (see the module doc). `stop` strings end a completion
    and are cut from its text.
    `on_result(i, generation)` is called as soon as all samples of prompt `i` are done (at the
    end of its batch), e.g. to save partial results. `share_prefix=False` copies the shared
    prefix's KV cache into every row instead of using the shared-prefix attention (same text).
    `loop_stop=True` ends a completion that repeats itself (see `ends_in_loop`) instead of letting
    it run to `max_new_tokens`; `Generation.looped` says which ones.
    `calculator=True` forces the value of every arithmetic step a completion writes (`2 * 3 =`,
    `<<48/2=`; see `student.calculator`) and generation continues from there;
    `Generation.interventions` counts them per completion (empty when off).
    `slots`: run on the slot engine (`student.engine`: continuous batching over a static KV cache)
    instead of this module's batches; None: `engine_run.use_slots` decides (device, MATHDISTILL_SLOTS).
    """
    import torch
    from transformers import Cache, DynamicCache, LogitsProcessorList, StoppingCriteriaList

    check_settings(max_new_tokens=max_new_tokens, batch_size=batch_size, num_samples=num_samples,
                   temperature=temperature, top_p=top_p)
    prompts = list(prompts)
    if not prompts:
        return []
    stop = [s for s in (stop or []) if s]
    sampling = temperature > 0
    if seeds is not None and len(seeds) != len(prompts):
        raise InputError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    if sampling and seeds is None:
        base = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        seeds = [derive_seed(base, i) for i in range(len(prompts))]
    from mathdistill.student import engine_run

    if engine_run.use_slots(slots, model):
        return engine_run.generate_slots(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature,
            top_p=top_p, num_samples=num_samples, stop=stop, adapter=adapter, seeds=seeds, progress=progress,
            on_result=on_result, loop_stop=loop_stop, calculator=calculator)
    wanted, num_samples = num_samples, num_samples if sampling else 1  # greedy: once, then repeated
    device = model.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos)

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
    calc = None
    if calculator:
        calc = calculator_for(tokenizer)
    calc_state: dict[tuple[int, int], list] = {}  # (prompt, sample) -> [tokens still to force, interventions]
    interventions: list[list[int]] = [[0] * num_samples for _ in prompts]
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
        # sampling: a preempted row keeps its keys/values (kept[i, k]) and continues without a
        # second prefill; samples of one prompt share its prefill (greedy keeps the plain path,
        # whose text is pinned by tests)
        carry, kept = sampling and shared_attention, {}
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
                copy_prefix = carry and shared < SHARE_ATTENTION_FROM
                layers = [_shared_prefix_layer()(l.keys, l.values, capacity, copy_prefix) for l in prefix_cache.layers]
                if carry:
                    _sampling_cache(model, layers, batch, input_ids, mask, shared, kept)
                kwargs["past_key_values"] = Cache(layers=layers)
                attention = _attention(model, ATTENTION)
            elif prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                kwargs["past_key_values"] = cache
            if carry:  # continuing is cheap: refill (or, with nothing left to start, shrink) a
                # batch as soon as a few rows are done
                free = max(1, int(batch_size * REFILL_FRACTION))
                preempt_at = len(batch) - free if len(batch) > free else 0
            else:  # hand the last few long runners to a later, fuller batch while others wait
                preempt_at = int(batch_size * PREEMPT_FRACTION) if len(queue) >= batch_size // 2 else 0
            finish = _Finish(
                tokenizer, width, [width - len(done) for _, _, done in batch], budget, eos, stop,
                preempt_at=preempt_at, loop_stop=loop_stop,
                min_steps=REFILL_MIN_STEPS if carry else PREEMPT_MIN_STEPS,
            )
            if sampling:
                kwargs["logits_processor"] = LogitsProcessorList([_RowSampler(
                    [derive_seed(seeds[i], k) for i, k, _ in batch], [len(done) for _, _, done in batch], width,
                    temperature, top_p, lambda: finish.length)])
            if calc is not None:
                state = [calc_state.setdefault((i, k), [[], 0]) for i, k, _ in batch]
                hook = _CalculatorHook(calc, finish.gen_start, state, finish)
                kwargs["logits_processor"] = LogitsProcessorList([*kwargs.get("logits_processor", []), hook])
            with attention:
                out = model.generate(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device),
                    stopping_criteria=StoppingCriteriaList([finish]), **kwargs,
                )
            new = out[:, width:].cpu().tolist()
            bar.advance(task, sum(n is not None for n in finish.length))
            handed = []
            for r, (i, k, done) in enumerate(batch):
                n = finish.length[r]
                if n is None:  # preempted: continue later from here
                    handed.append((i, k, done + new[r]))
                    if carry:  # with its keys/values for every token but the last one
                        start = width - shared - len(suffixes[r])
                        end = width - shared + len(new[r]) - 1
                        kept[i, k] = [(l.own_keys[r, :, start:end], l.own_values[r, :, start:end])
                                      for l in kwargs["past_key_values"].layers]
                    continue
                ids = done + new[r][:n]
                text = tokenizer.decode(ids, skip_special_tokens=True)
                texts[i][k], counts[i][k], looped[i][k] = _cut_at_stop(text, stop), len(ids), finish.looped[r]
                if calc is not None:
                    interventions[i][k] = calc_state.pop((i, k))[1]
                generated += len(ids)
                left[i] -= 1
                if left[i] == 0 and on_result is not None:
                    on_result(i, _result(texts[i], counts[i], looped[i], wanted, interventions[i] if calc else []))
            if carry:  # next batch first: their keys/values are held in memory
                queue.extendleft(reversed(handed))
            else:
                queue.extend(handed)
            speed = generated / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, speed=f"{speed:.0f} tok/s")
    return [_result(t, c, lp, wanted, n if calc else []) for t, c, lp, n in zip(texts, counts, looped, interventions)]


def _sampling_cache(model, layers, batch, input_ids, mask, shared: int, kept: dict) -> None:
    """Fill the shared-prefix cache `layers` of a sampling batch with every row's keys/values but
    for its last token (which `model.generate` then runs): a continued row's from `kept` (popped),
    the others by one forward pass per prompt, copied to each of its samples."""
    import torch

    rows, width = input_ids.shape
    own = width - shared  # the rows' own positions: [left padding | suffix]
    for layer in layers:
        layer.allocate(rows)
        layer.length = own - 1
    fresh = [r for r, (i, k, _) in enumerate(batch) if (i, k) not in kept]
    for r, (i, k, _) in enumerate(batch):
        if (i, k) in kept:
            carried = kept.pop((i, k))
            n = carried[0][0].shape[1]
            for layer, (keys, values) in zip(layers, carried):
                layer.own_keys[r, :, own - 1 - n : own - 1] = keys
                layer.own_values[r, :, own - 1 - n : own - 1] = values
                layer.own_keys[r, :, : own - 1 - n] = 0  # padding: masked, but must be finite
                layer.own_values[r, :, : own - 1 - n] = 0
    if not fresh:
        return
    first: dict[int, int] = {}  # prompt -> the fresh row that is prefilled for it
    for r in fresh:
        first.setdefault(batch[r][0], r)
    ones = list(first.values())
    begin = min(int(mask[r, shared:].argmax()) for r in ones) + shared  # first non-padding column
    at = torch.tensor(fresh, device=layers[0].prefix_keys.device)
    for layer in layers:
        layer.own_keys[at, :, : begin - shared] = 0
        layer.own_values[at, :, : begin - shared] = 0
    if begin >= width - 1:
        return
    device = layers[0].prefix_keys.device
    positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 0)
    temp = [_shared_prefix_layer()(l.prefix_keys, l.prefix_values, width - 1 - begin, l.copy_prefix) for l in layers]
    from transformers import Cache

    with _attention(model, ATTENTION):
        model(input_ids=input_ids[ones, begin:-1].to(device), position_ids=positions[ones, begin:-1].to(device),
              attention_mask=torch.cat([mask[ones, :shared], mask[ones, begin:-1]], 1).to(device),
              past_key_values=Cache(layers=temp), use_cache=True, logits_to_keep=1)
    index = torch.tensor([ones.index(first[batch[r][0]]) for r in fresh], device=device)
    for layer, t in zip(layers, temp):
        layer.own_keys[at, :, begin - shared : own - 1] = t.own_keys[index, :, : t.length]
        layer.own_values[at, :, begin - shared : own - 1] = t.own_values[index, :, : t.length]


def _result(texts, counts, looped, wanted: int, interventions=()) -> Generation:
    """A prompt's Generation, its one greedy completion repeated when `wanted` > 1 were asked for."""
    repeat = wanted // len(texts)
    return Generation(list(texts) * repeat, list(counts) * repeat, list(looped) * repeat, list(interventions) * repeat)
