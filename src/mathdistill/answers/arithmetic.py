"""Calculator arithmetic: the exact value of a plain arithmetic step, and the text a calculator forces after it.

    calculation("so 16 * 0.60 =")      -> " 9.6"     (the text to force next)
    calculation("<<48/2=")             -> "24"
    calculation("the 2 dogs =")        -> None      (not plain arithmetic: no intervention)
    evaluate("$1,200 / 4"), evaluate("25% of 80")   -> Fraction(300), Fraction(20)

Beside the answers (below the reasoning formats and the student) because two layers use it: calculator
decoding (`student.calculator` forces the value while the student writes) and calculation marks in training
targets (`thoughts.calcmarks` marks the steps whose written value is exactly what the calculator forces).

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

import re
from fractions import Fraction

__all__ = ["calculation", "evaluate", "format_number", "MAX_LITERAL", "MAX_TOKENS", "MAX_RESULT", "DECIMALS",
           "TAIL_TOKENS"]

DECIMALS = 4
MAX_LITERAL = 24  # characters in one number, separators and `$` included
MAX_TOKENS = 64
MAX_DEPTH = 16
MAX_BITS = 512  # numerator / denominator of any intermediate value
MAX_RESULT = 10**15
TAIL_TOKENS = 48  # generated tokens a generation hook decodes to find the expression

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<num>\$?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+))"
    r"|(?P<op>[-+*/×÷−()%]|(?<![A-Za-z])(?:x|of)(?![A-Za-z]))"
    r")"
)
_OPS = {"×": "*", "x": "*", "÷": "/", "−": "-"}
_BOUNDARY = set("<=:;([{\"'")  # what may stand right before an expression besides a space


class _Refuse(Exception):
    """Not an expression this calculator evaluates (or a guard said no)."""


def _lex(text: str) -> tuple[list[tuple[str, str]], int] | None:
    """The tokens of the longest run of arithmetic tokens that ends `text` (trailing spaces
    allowed), and where that run starts; None if `text` does not end in one."""
    tokens, start, pos = [], 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            tokens, start, pos = [], pos + 1, pos + 1  # not arithmetic: the run starts again after it
            continue
        kind = "num" if m.group("num") is not None else "op"
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    if not tokens:
        return None
    return tokens, start


def _number(literal: str) -> Fraction:
    if len(literal) > MAX_LITERAL:
        raise _Refuse("number too long")
    return Fraction(literal.lstrip("$").replace(",", ""))


def _check(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise _Refuse("intermediate value too large")
    return value


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/'|'of') factor)* ;
    factor := '-' factor | (number | '(' expr ')') '%'? . Values are (Fraction, is_percent)."""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = [(k, _OPS.get(v, v)) for k, v in tokens]
        self.raw = [v for _, v in tokens]
        self.pos, self.depth, self.operators = 0, 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise _Refuse("unexpected end")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Fraction:
        value, percent = self.expr()
        if self.pos != len(self.tokens):
            raise _Refuse("trailing tokens")
        if percent or not self.operators:
            raise _Refuse("a lone number or percentage")
        return value

    def expr(self) -> tuple[Fraction, bool]:
        value, percent = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            right, right_percent = self.term()
            if percent or right_percent:
                raise _Refuse("percentage added or subtracted")
            self.operators += 1
            value = _check(value + right if op == "+" else value - right)
        return value, percent

    def term(self) -> tuple[Fraction, bool]:
        value, percent = self.factor()
        while self.peek() in ("*", "/", "of"):
            raw, op = self.raw[self.pos], self.take()[1]
            if op == "of" and not percent:
                raise _Refuse("'of' after something that is not a percentage")
            if raw == "x" and self.peek() in ("+", "-"):
                raise _Refuse("'x' before a sign: a variable, not a product")
            right, _ = self.factor()
            if op == "/" and right == 0:
                raise _Refuse("division by zero")
            self.operators += 1
            value, percent = _check(value / right if op == "/" else value * right), False
        return value, percent

    def factor(self) -> tuple[Fraction, bool]:
        kind, tok = self.take()
        if kind == "op" and tok == "-":
            value, percent = self.factor()
            return -value, percent
        if kind == "num":
            value = _number(tok)
        elif tok == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Refuse("too deeply nested")
            value, percent = self.expr()
            if self.take()[1] != ")":
                raise _Refuse("unbalanced parentheses")
            self.depth -= 1
            if percent:
                raise _Refuse("percentage in parentheses")
        else:
            raise _Refuse(f"unexpected {tok!r}")
        if self.peek() == "%":
            self.take()
            return value / 100, True
        return value, False


def _evaluate_tokens(tokens: list[tuple[str, str]]) -> Fraction | None:
    if len(tokens) > MAX_TOKENS:
        return None
    while True:
        try:
            value = _Parser(tokens).parse()
        except _Refuse:
            if len(tokens) > 1 and tokens[0][1] in ("(", "of", "x"):
                tokens = tokens[1:]  # "so (5 + 3 =", "half of 3 + 4 =": the sentence's, not the sum's
                continue
            return None
        if abs(value) >= MAX_RESULT or (value != 0 and format_number(value) in ("0", "-0")):
            return None
        return value


def evaluate(expression: str) -> Fraction | None:
    """The exact value of `expression` if it is nothing but plain arithmetic (see the module
    doc) with at least one operation, within the guards; else None."""
    lexed = _lex(expression)
    if lexed is None or expression[: lexed[1]].strip():
        return None
    return _evaluate_tokens(lexed[0])


def format_number(value: Fraction) -> str:
    """`value` as the calculator writes it: "24", "9.6", "3.3333", "-0.5" (half up, no separators)."""
    sign = "-" if value < 0 else ""
    scaled = (abs(value.numerator) * 10**DECIMALS * 2 + value.denominator) // (2 * value.denominator)
    whole, frac = divmod(scaled, 10**DECIMALS)
    frac_text = f"{frac:0{DECIMALS}d}".rstrip("0")
    return f"{sign}{whole}" + (f".{frac_text}" if frac_text else "")


def calculation(text: str, at_start: bool = True) -> str | None:
    """The text to force after `text` if it ends with an arithmetic expression and `=` (a space
    first when the `=` has one before it: "2 + 3 =" -> " 5", "<<2+3=" -> "5"); None to leave it.
    `at_start=False`: `text` is a cut-off tail, so an expression that runs back to its very first
    character (leading spaces included: " 5 + 6 =" may be the end of "123 + 5 + 6 =") may be cut
    too and is left alone."""
    if not text.endswith("="):
        return None
    body = text[:-1]
    lexed = _lex(body)
    if lexed is None:
        return None
    tokens, start = lexed
    first = len(body) - len(body[start:].lstrip())  # where the expression's first token starts
    if start == 0 and not at_start:
        return None
    before = body[first - 1] if first > 0 else None
    if before is not None and not before.isspace() and before not in _BOUNDARY:
        return None
    value = _evaluate_tokens(tokens)
    if value is None:
        return None
    return (" " if body[-1:].isspace() else "") + format_number(value)
