"""Calculator-in-the-loop decoding: the value of an arithmetic step the student has just written.

    calculation("so 16 * 0.60 =")      -> " 9.6"     (the text to force next)
    calculation("<<48/2=")             -> "24"
    calculation("the 2 dogs =")        -> None      (not plain arithmetic: no intervention)
    evaluate("$1,200 / 4"), evaluate("25% of 80")   -> Fraction(300), Fraction(20)

Detection: the text ends with `=`; the expression is the longest run of arithmetic tokens just
before it (numbers with optional `$`, thousands separators and decimals, `+ - * / x × ÷ −`,
parentheses, `%`, `of`), which must start at a boundary (start of the text, a space, `<`, `=`,
`:` ...), not inside a word or after an operator this module does not know (`2^3 + 4 =` is left
alone, and so is `9**9**9 =`). An unmatched `(` or a word (`of`, `x`) in front is dropped.
Evaluation: a small recursive-descent parser over those tokens with exact fractions (never Python
`eval`). A percentage is a factor (`25% of 80`, `80 * 25%`); added to or subtracted from
something (`80 + 10%`) it is ambiguous, and so not evaluated.
Guards, each a reason to leave the text alone: not plain arithmetic (no operator, a word, `**`,
`^`), division by zero, a number literal of more than MAX_LITERAL characters, more than
MAX_TOKENS tokens or MAX_DEPTH nested parentheses, an intermediate value of more than MAX_BITS
bits, a result of magnitude >= MAX_RESULT or one that rounds to 0 without being 0. The cost of one
call is bounded by the text length (a caller passes a short tail) and these limits.
Formatting (`format_number`): integers without `.0`; otherwise rounded (half up) to at most
DECIMALS decimals, trailing zeros dropped; no thousands separators.
"""

from __future__ import annotations

from mathdistill.answers.arithmetic import (DECIMALS, MAX_LITERAL, MAX_RESULT, MAX_TOKENS, TAIL_TOKENS,  # noqa: F401
                                          calculation, evaluate, format_number)

__all__ = ["calculation", "evaluate", "format_number", "Calculator", "MAX_LITERAL", "MAX_TOKENS", "MAX_RESULT",
           "DECIMALS", "TAIL_TOKENS"]


class Calculator:
    """What a generation loop needs for one tokenizer: `triggers`, the token ids whose text ends
    with `=` (only rows whose last token is one of these are looked at), `forced(ids, at_start)`:
    the token ids to force after the generated tokens `ids` (their last TAIL_TOKENS are enough), or
    None; and `continuations` (tokens starting with a digit) and `joins` ("." and ","): right after
    a forced value, and after a "." or "," that follows it, a continuation is not allowed (else
    "500 * 0.05 = 25" goes on to "250", "16/4 = 4" to "4.5": the student writing its own number)."""

    def __init__(self, tokenizer):
        from mathdistill.student.generate import _token_texts

        self.tokenizer = tokenizer
        vocab = range(len(tokenizer))
        # each token's text as it reads after other text: a SentencePiece "▁5" is " 5" (a new number,
        # allowed after a value), not the "5" it decodes to alone (which would extend the value)
        texts = _token_texts(tokenizer)
        self.triggers = [i for i, text in zip(vocab, texts) if text.endswith("=")]
        # what may not follow a forced value (nor its "." or ","): a digit would change the number
        self.continuations = [i for i, text in zip(vocab, texts) if text[:1].isdigit()]
        self.joins = {i for i, text in zip(vocab, texts) if text in (".", ",")}

    def forced(self, ids: list[int], at_start: bool = True) -> list[int] | None:
        text = calculation(self.tokenizer.decode(ids, skip_special_tokens=True), at_start)
        if text is None:
            return None
        return self.tokenizer.encode(text, add_special_tokens=False)
