"""The slot engine's per-step decisions, all tensor operations on the device (no host sync):
which token each row takes (greedy, or seeded sampling with its own temperature and top-p), and
whether it has finished (EOS, token budget, stop string, loop stop).

    u = uniform(seeds, counters)                      # splitmix64, bit for bit `draws.uniform`
    tokens = pick(logits, temperature, top_p, seeds, counters)
    hit = stop_hit(criteria, window)                  # transformers' StopStringCriteria tables

Sampling is seeded per row and per token position, never by a generator shared by the batch, so a
row's sample depends on its seed, its prompt and its own tokens only. Without top-p the draw is
`batch_hooks.RowSampler`'s (inverse CDF of softmax(logits / T) in vocabulary order, uniform
`draws.uniform(seed, position)`). With top-p the nucleus (the most probable tokens whose probabilities,
before each is added, sum to less than top_p) is sampled without sorting the vocabulary: candidates
are drawn from the whole distribution with the uniforms of NUCLEUS_DRAWS sub-streams and the first
one inside the nucleus is taken, which is exactly a draw from the renormalised nucleus (each candidate
is inside with probability >= top_p; if all NUCLEUS_DRAWS miss, (1 - top_p)^8 or less, the most
probable token is taken).
"""

from __future__ import annotations

__all__ = ["uniform", "pick", "stop_hit", "stop_window", "token_table", "NUCLEUS_DRAWS", "SENTINEL"]

NUCLEUS_DRAWS = 8
SENTINEL = 1 << 40  # a token id that matches no stop string (out of every vocabulary)
_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_STREAM = 0xD1B54A32D192ED03  # sub-stream j of a row's seed: seed + j * _STREAM


def _signed(x: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(z, bits: int):
    """Logical right shift of int64 bits (torch's >> on int64 is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def uniform(seeds, counters):
    """Uniforms in [0, 1) (fp64), one per row: splitmix64 of (seed, counter) with int64 arithmetic
    wrapping around as uint64 does; equals `draws.uniform(seed, counter)` bit for bit."""
    import torch

    z = seeds + (counters + 1) * _signed(_GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    z = _shr(z ^ _shr(z, 31), 11)
    return z.to(torch.float64) / 2.0**53


def as_int64(seed: int) -> int:
    """A seed of `derive_seed` (unsigned 64 bits) as the int64 the device works with."""
    return _signed(seed)


def _inverse_cdf(cum, u):
    """Token of each row at uniform `u` [R] (cast to fp32, as `RowSampler` does), from the cumulative
    probabilities `cum` [R, V] in vocabulary order."""
    import torch

    at = torch.searchsorted(cum, (u.to(cum.dtype) * cum[:, -1])[:, None], right=True)[:, 0]
    return at.clamp(max=cum.shape[1] - 1)


def pick(logits, temperature, top_p, seeds, counters, sampling: bool = True):
    """The next token of every row: argmax where `temperature[r]` is 0, else a seeded draw (see the
    module doc) with `top_p[r]`. `sampling=False`: every row is greedy (nothing else is computed)."""
    import torch

    greedy = logits.argmax(-1)
    if not sampling:
        return greedy
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    probs = torch.softmax(logits / t[:, None], dim=-1)
    cum = probs.cumsum(-1)
    drawn = _inverse_cdf(cum, uniform(seeds, counters))
    nucleus = top_p < 1
    chosen, found = greedy, ~nucleus
    chosen = torch.where(found, drawn, chosen)
    for j in range(NUCLEUS_DRAWS):  # top-p: the first candidate inside the nucleus
        cand = drawn if j == 0 else _inverse_cdf(cum, uniform(seeds + _signed(j * _STREAM), counters))
        p = probs.gather(1, cand[:, None])
        above = (probs * (probs > p)).sum(-1)  # mass of the tokens more probable than the candidate
        ok = ~found & (above < top_p)
        chosen, found = torch.where(ok, cand, chosen), found | ok
        if not logits.is_cuda and not torch.compiler.is_compiling() and bool(found.all()):
            break  # eager CPU: a host check is free, the remaining draws are not
    return torch.where(temperature > 0, chosen, greedy)


def stop_window(history, generated, width: int):
    """The last `width` generated tokens of every row ([R, width]; SENTINEL before its first one), from
    `history` [R, N] (row r's generated tokens) and `generated` [R] (how many)."""
    import torch

    idx = generated[:, None] - width + torch.arange(width, device=history.device)[None, :]
    got = history.gather(1, idx.clamp(min=0, max=history.shape[1] - 1))
    return torch.where(idx >= 0, got, torch.full_like(got, SENTINEL))


def stop_hit(criteria, window):
    """Whether a stop string ends in the last token of each row: transformers' `StopStringCriteria`
    (tensor-only string matching over its precomputed token tables) on the row's generated tokens."""
    return criteria(window, None)


def token_table(vocab: int, ids, device):
    """bool [vocab]: True at `ids` (those inside the vocabulary): a token -> bool lookup for the step (graph-safe,
    unlike `isin`), e.g. which tokens end a row (EOS) or trigger the calculator."""
    import torch

    table = torch.zeros(vocab, dtype=torch.bool)
    table[[i for i in ids if 0 <= i < vocab]] = True
    return table.to(device)
