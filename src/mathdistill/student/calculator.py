"""Calculator-in-the-loop decoding: the value of an arithmetic step the student has just written.

    calculation("so 16 * 0.60 =")      -> " 9.6"     (the text to force next)
    calculation("<<48/2=")             -> "24"
    calculation("the 2 dogs =")        -> None      (not plain arithmetic: no intervention)
    evaluate("$1,200 / 4"), evaluate("25% of 80")   -> Fraction(300), Fraction(20)

The arithmetic (what counts as a step, its exact value, the guards, how a value is written) is
`mathdistill.answers.arithmetic`'s, shared with the calculation marks of training targets; here is
what a generation loop needs of it for one tokenizer (`Calculator`, built once per tokenizer by
`calculator_for`).
"""

from __future__ import annotations

from mathdistill.answers.arithmetic import (DECIMALS, MAX_LITERAL, MAX_RESULT, MAX_TOKENS, TAIL_TOKENS,  # noqa: F401
                                          calculation, evaluate, format_number)
from mathdistill.student.vocab import per_tokenizer, token_texts

__all__ = ["calculation", "evaluate", "format_number", "Calculator", "calculator_for", "MAX_LITERAL", "MAX_TOKENS",
           "MAX_RESULT", "DECIMALS", "TAIL_TOKENS"]


class Calculator:
    """What a generation loop needs for one tokenizer: `triggers`, the token ids whose text ends
    with `=` (only rows whose last token is one of these are looked at), `forced(ids, at_start)`:
    the token ids to force after the generated tokens `ids` (their last TAIL_TOKENS are enough), or
    None; and `continuations` (tokens starting with a digit) and `joins` ("." and ","): right after
    a forced value, and after a "." or "," that follows it, a continuation is not allowed (else
    "500 * 0.05 = 25" goes on to "250", "16/4 = 4" to "4.5": the student writing its own number)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        vocab = range(len(tokenizer))
        # each token's text as it reads after other text: a SentencePiece "▁5" is " 5" (a new number,
        # allowed after a value), not the "5" it decodes to alone (which would extend the value)
        texts = token_texts(tokenizer)
        self.triggers = [i for i, text in zip(vocab, texts) if text.endswith("=")]
        # what may not follow a forced value (nor its "." or ","): a digit would change the number
        self.continuations = [i for i, text in zip(vocab, texts) if text[:1].isdigit()]
        self.joins = {i for i, text in zip(vocab, texts) if text in (".", ",")}

    def forced(self, ids: list[int], at_start: bool = True) -> list[int] | None:
        text = calculation(self.tokenizer.decode(ids, skip_special_tokens=True), at_start)
        if text is None:
            return None
        return self.tokenizer.encode(text, add_special_tokens=False)


def calculator_for(tokenizer) -> Calculator:
    """The `Calculator` of `tokenizer` (it reads the whole vocabulary: ~0.3 s), once per tokenizer, for every
    generate call and served request."""
    return per_tokenizer(tokenizer, "calculator", lambda: Calculator(tokenizer))
