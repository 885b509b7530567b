"""How many rows a generation call runs together: DEFAULT_BATCH_SIZE on a CPU, and on an accelerator as many
as its free memory holds (`auto_batch_size`, from the model's shapes: `batch_size_for_memory`).

    auto_batch_size(model, tokens_per_row=256 + 512)     # DEFAULT_BATCH_SIZE on a CPU; on a GPU: its free memory
"""

from __future__ import annotations

__all__ = ["DEFAULT_BATCH_SIZE", "MAX_AUTO_BATCH", "batch_size_for_memory", "auto_batch_size"]

DEFAULT_BATCH_SIZE = 16
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

