"""Tables of a tokenizer's vocabulary, built once per tokenizer: each token's text as it reads after other
text (`token_texts`: what the calculator's triggers and the stop-string candidates are picked from), and
any other table a generation loop derives from a tokenizer (`per_tokenizer`).

    texts = token_texts(tok)                            # texts[i]: token i's text, e.g. " 5" for "▁5"
    table = per_tokenizer(tok, "mine", lambda: build(tok))   # built on the first call, then reused
"""

from __future__ import annotations

__all__ = ["per_tokenizer", "token_texts"]

_PER_TOKENIZER: dict = {}  # (id(tokenizer), what) -> (tokenizer, value)


def per_tokenizer(tokenizer, what, build):
    """`build()`, computed once per tokenizer and `what` (the tokenizer is kept beside it, so a new
    tokenizer that reuses a freed one's id is not given the old value)."""
    key = (id(tokenizer), what)
    cached = _PER_TOKENIZER.get(key)
    if cached is None or cached[0] is not tokenizer:
        cached = _PER_TOKENIZER[key] = (tokenizer, build())
    return cached[1]


def token_texts(tokenizer) -> list[str]:
    """Each vocabulary token's text as it reads after other text (`decode([a, t])` less `decode([a])`,
    so a SentencePiece token keeps its leading space), special tokens included; once per tokenizer."""

    def build() -> list[str]:
        ref = tokenizer.encode("a", add_special_tokens=False)[-1:]
        base = tokenizer.decode(ref)
        pairs = tokenizer.batch_decode([ref + [i] for i in range(len(tokenizer))])
        return [t[len(base):] if t.startswith(base) else t for t in pairs]

    return per_tokenizer(tokenizer, "texts", build)

