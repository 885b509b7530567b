"""The slot engine's model runner: a static KV cache of fixed slots, run through the model's own layers.

    runner = SlotModel(model, slots=64, capacity=640)        # K/V [64, kv_heads, 640, head_dim] per layer
    logits = runner.prefill(ids, lengths, dst, src)          # new rows into their slots (right-padded ids)
    logits = runner.decode(last, pos, window)                # one token for every slot at its own position

Each slot holds one row's own tokens from position 0; a prompt prefix shared by every row (a k-shot
prompt) can be stored once (`set_prefix`) and every query attends to it, as `student.batches` does.
The runner calls the model's own modules (embedding, rotary embedding, decoder layers, final norm, LM
head) with this cache in place of transformers' own, so LoRA layers of a PeftModel act as usual; only
its outer loop is written here, which is why it takes the decoder families whose layers follow
transformers' standard interface (`supported`). Decode has fixed shapes (the window is a multiple of
WINDOW_ALIGN), so it compiles and captures as a CUDA graph.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

from mathdistill.models import base_of

__all__ = ["SlotModel", "supported", "capacity", "ATTENTION", "WINDOW_ALIGN"]

ATTENTION = "mathdistill_slots"  # the attention implementation registered while the runner runs
WINDOW_ALIGN = 64  # decode attends to the first `window` positions of each slot, a multiple of this
FAMILIES = ("llama", "mistral", "qwen2", "qwen3")  # decoder layers with the standard cache/attention interface


def capacity(tokens: int) -> int:
    """Positions a slot needs for rows of up to `tokens` own tokens (prompt after the prefix + new tokens):
    `tokens` rounded up to a multiple of WINDOW_ALIGN, so every decode window fits."""
    return -(-tokens // WINDOW_ALIGN) * WINDOW_ALIGN


def supported(model) -> str | None:
    """Why the slot engine cannot run `model` (None: it can)."""
    base = base_of(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "model_type", None) not in FAMILIES:
        return f"model type {getattr(config, 'model_type', type(model).__name__)!r} is not one of {', '.join(FAMILIES)}"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if getattr(config, "_attn_implementation", "sdpa") not in ("sdpa", "eager", None):
        return f"attention implementation {config._attn_implementation!r}"
    return None


class _Attend:
    """What the attention of one forward pass needs besides q/k/v: `mask` (bool [B, 1, S, T], True =
    attend) or None for causal, and the shared prefix's keys/values per layer (or None)."""

    def __init__(self, mask, prefix):
        self.mask, self.prefix = mask, prefix


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention for the slot runner (registered as ATTENTION): query [B, Hq, S, D] over the prefix (if
    any, visible to every query) and the row's own keys [B, Hkv, T, D]. Returns [B, S, Hq, D]."""
    import torch

    attend: _Attend = attention_mask
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    prefix = attend.prefix[module.layer_idx] if attend.prefix is not None else None
    if prefix is None:
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attend.mask, is_causal=attend.mask is None, scale=scale, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    return prefix_attention(query, key, value, attend.mask, prefix[0], prefix[1], scale), None


def prefix_attention(query, key, value, mask, pk, pv, scale: float):
    """Softmax attention over [prefix | own tokens] without copying the prefix per row: the prefix part
    ([1, Hkv, P, D], visible to every query) is one batched matmul per KV head for all rows; the two
    partial softmaxes merge by their maxima and sums (statistics in fp32, matmuls in the model's dtype).
    `mask`: bool [B, 1, S, T] over the own tokens, or None for causal. Returns [B, S, Hq, D]."""
    import torch

    b, hq, s, d = query.shape
    hkv, t = key.shape[1], key.shape[2]
    g, dtype = hq // hkv, query.dtype
    q = query.reshape(b, hkv, g * s, d)  # rows (group, position) per KV head
    qp = q.transpose(0, 1).reshape(hkv, b * g * s, d)
    sp = torch.bmm(qp, pk[0].transpose(1, 2)).float().mul_(scale)  # [Hkv, B*G*S, P]
    mp = sp.amax(-1, keepdim=True)
    ep = torch.exp_(sp.sub_(mp))
    lp = ep.sum(-1, keepdim=True)
    op = torch.bmm(ep.to(dtype), pv[0]).float()

    def rows(x):  # [Hkv, B*G*S, n] -> [B, Hkv, G*S, n]
        return x.view(hkv, b, g * s, x.shape[-1]).transpose(0, 1)

    op, mp, lp = rows(op), rows(mp), rows(lp)
    ss = torch.matmul(q, key.transpose(-1, -2)).float().mul_(scale)  # [B, Hkv, G*S, T]
    if mask is None:
        mask = torch.ones(s, t, dtype=torch.bool, device=q.device).tril(t - s)[None, None]
    if s > 1:  # rows are (group, position): the mask repeats per group
        mask = mask.expand(b, 1, s, t)[:, :, None].expand(b, 1, g, s, t).reshape(b, 1, g * s, t)
    ss = ss.masked_fill_(~mask, float("-inf"))
    m = torch.maximum(mp, ss.amax(-1, keepdim=True))  # finite: the prefix is never masked
    es = torch.exp_(ss.sub_(m))
    wp = torch.exp_(mp.sub_(m))
    out = (op.mul_(wp) + torch.matmul(es.to(dtype), value).float()) / (lp.mul_(wp) + es.sum(-1, keepdim=True))
    return out.reshape(b, hq, s, d).transpose(1, 2).contiguous().to(dtype)


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _attention)


class _SlotCache:
    """The cache the decoder layers write to: `update` stores a layer's new keys/values in the slots
    (prefill: rows `src` of the batch into slots `dst` from position 0; decode: slots `rows` (the first
    m) at `pos`) and returns what attention reads (prefill: the new keys themselves; decode: the first
    `window` positions of those slots)."""

    def __init__(self, keys, values):
        self.keys, self.values = keys, values
        self.mode, self.dst, self.src, self.pos, self.window = "decode", None, None, None, 0
        self.rows = None

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if self.mode == "prefill":
            n = key_states.shape[2]
            k[self.dst, :, :n] = key_states[self.src]
            v[self.dst, :, :n] = value_states[self.src]
            return key_states, value_states
        k[self.rows, :, self.pos] = key_states[:, :, 0]
        v[self.rows, :, self.pos] = value_states[:, :, 0]
        m = key_states.shape[0]  # slots [:m] run
        return k[:m, :, : self.window], v[:m, :, : self.window]


class SlotModel:
    """`slots` rows of at most `capacity` own tokens each (prompt after the shared prefix + generated)."""

    def __init__(self, model, slots: int, capacity: int):
        import torch

        reason = supported(model)
        if reason:
            raise ValueError(f"the slot engine cannot run this model: {reason}")
        base = base_of(model)
        self.model, self.config = model, base.config
        decoder = base.get_decoder()
        self.embed, self.layers, self.norm = decoder.embed_tokens, decoder.layers, decoder.norm
        self.rotary, self.head = decoder.rotary_emb, base.get_output_embeddings()
        params = next(base.parameters())
        self.device, self.dtype = params.device, params.dtype
        c = self.config
        self.kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.slots, self.capacity = slots, capacity
        shape = (slots, self.kv_heads, capacity, self.head_dim)
        # zeros: a position no row has written yet is masked, but must be finite (0 x NaN is NaN)
        keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.cache = _SlotCache(keys, values)
        self.cache.rows = torch.arange(slots, device=self.device)
        self.prefix, self.prefix_len = None, 0
        params_of = inspect.signature(self.layers[0].forward).parameters
        self._cache_kw = "cache" if "cache" in params_of else "past_key_values"
        _register()

    def kv_bytes(self) -> int:
        k = self.cache.keys[0]
        return 2 * len(self.cache.keys) * k.numel() * k.element_size()

    def set_prefix(self, ids: list[int]) -> None:
        """Run the prefix `ids` (shared by every row) once and keep its keys/values; [] for none."""
        import torch
        from transformers import DynamicCache

        self.prefix, self.prefix_len = None, len(ids)
        if not ids:
            return
        cache = DynamicCache(config=self.config)
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True)
        self.prefix = [(layer.keys, layer.values) for layer in cache.layers]

    @contextlib.contextmanager
    def running(self):
        """While the runner runs: the model's attention is this runner's (restored after)."""
        previous = self.config._attn_implementation
        self.config._attn_implementation = ATTENTION
        try:
            yield
        finally:
            self.config._attn_implementation = previous

    def _forward(self, ids, positions, attend: _Attend, last=None):
        """Logits (fp32) of the last position of every row (`last[r]`: its index, else -1)."""
        import torch

        hidden = self.embed(ids)
        cos_sin = self.rotary(hidden, positions)
        for layer in self.layers:
            out = layer(hidden, attention_mask=attend, position_ids=positions, position_embeddings=cos_sin,
                        **{self._cache_kw: self.cache})
            hidden = out[0] if isinstance(out, tuple) else out
        if last is None:
            hidden = hidden[:, -1]
        else:
            hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(self.norm(hidden)).float()

    def prefill(self, ids, lengths, dst, src):
        """Prefill rows `ids` [n, L] (right-padded; row r has `lengths[r]` tokens) into slots `dst` (row
        `src[j]` into slot `dst[j]`: one prompt may fill several slots). Returns the logits [n, V] of each
        row's last token. Positions past a row's length hold padding, masked until overwritten."""
        import torch

        positions = (torch.arange(ids.shape[1], device=ids.device) + self.prefix_len)[None].expand_as(ids)
        self.cache.mode, self.cache.dst, self.cache.src = "prefill", dst, src
        try:
            return self._forward(ids, positions, _Attend(None, self.prefix), last=lengths - 1)
        finally:
            self.cache.mode = "decode"

    def decode(self, last, pos, window: int):
        """One step for every slot: token `last[s]` at own position `pos[s]` (its keys/values are written
        there), attending to the first `window` positions. Returns logits [slots, V]."""
        import torch

        self.cache.pos, self.cache.window = pos, window
        mask = torch.arange(window, device=pos.device)[None, :] <= pos[:, None]
        return self._forward(last[:, None], (pos + self.prefix_len)[:, None], _Attend(mask[:, None, None], self.prefix))
