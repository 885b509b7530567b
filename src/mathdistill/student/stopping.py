"""When a completion ends: at an end-of-sequence token (`eos_ids`), at a stop string (the text is cut there:
`cut_at_stop`), or, with the loop stop, when it repeats itself (`ends_in_loop`; `loops` for a batch of rows at
once on their device). Both generation paths (`student.batches` and the slot engine, `student.engine`) end
rows by these rules, so they give the same text.

    ends_in_loop(ids)                   # its last tokens are one block of <= 64 tokens repeated 3 times
    cut_at_stop("18.\\nQuestion: next", ["\\nQuestion:"])   -> "18."
"""

from __future__ import annotations

from typing import Sequence

from mathdistill.student.vocab import per_tokenizer, token_texts

__all__ = ["eos_ids", "cut_at_stop", "ends_in_loop", "loops", "stop_candidates", "LOOP_REPEATS", "LOOP_MAX_PERIOD",
           "LOOP_MIN_SPAN", "LOOP_EVERY", "LOOP_WINDOW"]

# loop stop: a row whose last tokens are one block repeated LOOP_REPEATS times back to back
# (block <= LOOP_MAX_PERIOD tokens, repeats spanning >= LOOP_MIN_SPAN tokens) is finished: greedy
# decoding that repeats itself like that runs to the token limit. Checked every LOOP_EVERY steps.
LOOP_REPEATS, LOOP_MAX_PERIOD, LOOP_MIN_SPAN, LOOP_EVERY = 3, 64, 48, 4
LOOP_WINDOW = max(LOOP_REPEATS * LOOP_MAX_PERIOD, LOOP_MIN_SPAN)  # tokens `loops` looks at


def eos_ids(model, tokenizer) -> list[int]:
    """The token ids that end a completion: the model's generation config's and the tokenizer's EOS."""
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


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first of the `stop` strings it holds (all of it when none)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(cuts)] if cuts else text


def loops(ids, generated):
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


def stop_candidates(tokenizer, stop: tuple[str, ...]):
    """The token ids after which a stop string can newly appear in a row's decoded tail: a new
    occurrence needs a character the last token added, so its text shares a character with a stop
    string, or is empty or a partial UTF-8 sequence (`\ufffd`, completing an earlier one). None
    (every token) for a tokenizer that cleans up spaces in decoding (text can change further back)."""
    import torch

    if getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return None

    def build():
        chars = set("".join(stop))
        ids = [i for i, t in enumerate(token_texts(tokenizer)) if not t or "\ufffd" in t or chars.intersection(t)]
        return torch.tensor(ids, dtype=torch.long)

    return per_tokenizer(tokenizer, ("stop", stop), build)

