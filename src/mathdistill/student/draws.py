"""Seeded sampling that does not depend on batching: a row's draws come from its own seed and token
position, never from a generator shared by the batch, so sample k of a prompt is the same text whatever
else is generated beside it, in what order, in which batch, or after a resumed run.

    seed = derive_seed(run_seed, problem_id)        # a prompt's seed; derive_seed(seed, k) its k-th sample's
    u = uniform(derive_seed(seed, k), position)     # the uniform of that sample's token `position`
    tokens = nucleus_pick(probs, u_per_row, top_p)  # inverse-CDF draws inside each row's top-p nucleus

The batches (`student.batch_hooks.RowSampler`) draw on the host with these; the slot engine
(`student.engine_pick`) computes the same uniforms on the device, bit for bit.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed", "uniform", "nucleus_pick", "NUCLEUS_TRIES"]

NUCLEUS_TRIES = (64, 1024)  # top-p: candidates looked at before sorting the whole vocabulary
_MASK64 = (1 << 64) - 1


def derive_seed(*parts) -> int:
    """A 64-bit seed from any parts (ints, strings): the same parts give the same seed, e.g.
    `derive_seed(seed, problem_id)` for a problem, `derive_seed(that, k)` for its k-th sample."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def uniform(seed: int, step: int) -> float:
    """The draw in [0, 1) for token `step` of the row seeded `seed`: splitmix64 of (seed, step),
    a function of the two alone (no generator state to carry across batches or runs)."""
    z = (seed + (step + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / 2.0**53


def nucleus_pick(probs, u, top_p: float):
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

