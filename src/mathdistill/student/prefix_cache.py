"""The batches' KV cache (`student.batches`): the token prefix every prompt shares (chat-template header,
k-shot exemplars) is run once, and while decoding its keys/values are stored once for the whole batch, not
once per row: a small attention function (`shared_prefix_attention`) attends to the shared prefix with one
matmul for the whole batch and to each row's own tokens separately, and merges the two softmaxes
(`engine_kv.prefix_attention`). With a 4-shot GSM8K prompt (~650 shared tokens) this is most of the decoding
time saved.

    layers = [shared_prefix_layer()(l.keys, l.values, capacity) for l in prefix_cache.layers]
    with attention_impl(model, ATTENTION): model.generate(..., past_key_values=Cache(layers=layers))

Sampling batches (k samples per prompt, mostly long) go further (`sampling_cache`): a prompt's samples share
one prefill, and a row handed on to a later batch keeps its keys/values, so it continues without a second
prefill; a short shared prefix (< SHARE_ATTENTION_FROM tokens, e.g. the chat header) is copied into each row
(`copy_prefix`) and the model's own attention runs.
"""

from __future__ import annotations

import contextlib
import functools

__all__ = ["ATTENTION", "shared_prefix_layer", "shared_prefix_attention", "register_attention", "can_share_prefix",
           "attention_impl", "sampling_cache"]

ATTENTION = "mathdistill_shared_prefix"


@functools.cache
def shared_prefix_layer():
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
            """Buffers for `rows` rows, left uninitialised (`update` or `sampling_cache` fills them)."""
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
                keys.shared_prefix = (self.prefix_keys, self.prefix_values)  # read by shared_prefix_attention
            return keys, self.values[:, :, : self.start + n]

        def get_seq_length(self) -> int:
            return self.prefix_keys.shape[2] + self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def get_max_length(self) -> int:
            return -1

    return SharedPrefixLayer


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
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

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    pk, pv = prefix
    own = None
    if attention_mask is not None:
        own = attention_mask[..., pk.shape[2]:]
        if own.dtype != torch.bool:  # additive: 0 where attended
            own = own == 0
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return prefix_attention(query, key, value, own, pk, pv, scale), None


def register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, shared_prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def can_share_prefix(model, prefix_cache) -> bool:
    """Full-attention layers only (no sliding windows / linear attention), sdpa or eager attention."""
    from transformers.cache_utils import DynamicLayer

    impl = getattr(model.config, "_attn_implementation", None)
    return impl in ("sdpa", "eager", ATTENTION) and all(type(layer) is DynamicLayer for layer in prefix_cache.layers)


@contextlib.contextmanager
def attention_impl(model, name: str):
    """Run `model` with attention implementation `name` for the duration."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = previous



def sampling_cache(model, layers, batch, input_ids, mask, shared: int, kept: dict) -> None:
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
    temp = [shared_prefix_layer()(l.prefix_keys, l.prefix_values, width - 1 - begin, l.copy_prefix) for l in layers]
    from transformers import Cache

    with attention_impl(model, ATTENTION):
        model(input_ids=input_ids[ones, begin:-1].to(device), position_ids=positions[ones, begin:-1].to(device),
              attention_mask=torch.cat([mask[ones, :shared], mask[ones, begin:-1]], 1).to(device),
              past_key_values=Cache(layers=temp), use_cache=True, logits_to_keep=1)
    index = torch.tensor([ones.index(first[batch[r][0]]) for r in fresh], device=device)
    for layer, t in zip(layers, temp):
        layer.own_keys[at, :, begin - shared : own - 1] = t.own_keys[index, :, : t.length]
        layer.own_values[at, :, begin - shared : own - 1] = t.own_values[index, :, : t.length]
