"""Final-answer extraction from free text, and answer equivalence.

`extract_answer` finds the final answer a model wrote ("The answer is 18", "#### 18",
"\\boxed{18}", "A: 18", or the last number). `is_equivalent(pred, gold)` compares a prediction
with a gold answer; `vote` takes the majority of several answers (ETD's formats, or
self-consistency samples).

The equivalence rule. When both sides are plain numbers (`1,000`, `$5`, `5.00`, `5 apples`,
`1/2`, `\\frac{1}{2}`, `50%`), the prediction's exact value p is compared with the gold's
normalised form g (`normalize_answer`, which is what the data loaders store, so a gold means the
same before and after loading: trailing zeros carry no precision, `3.50` is read as `3.5` and
`3.0` as the integer 3, and at most 10 significant digits are kept):

- integer gold: equal when |p - g| <= 1e-9 * max(1, |g|), so PoT's `17.999999999999996` is 18
  while 123460 is not 123456; and two whole numbers are equal only when identical, also where
  1e-9 * |g| >= 1 (GSM-Hard golds reach 1e11: 109844510500 is not 109844510400).
- decimal gold: p rounded (half away from zero) to the gold's decimal places must equal it:
  gold `0.33` accepts `0.333` and `1/3` and refuses `0.34` and `0.3`; gold `3.5` accepts `3.50`
  and `7/2` (and, being one decimal, also `3.46`). A gold written as a float repr
  (`14053029.666666666`) is read to 10 significant digits (`14053029.67`), so it accepts the
  exact value and the same float computed in another order, not just its own last digits.
- fraction gold (`1/3`, `\\frac{14}{3}`, or a float the loaders recognise as one, GSM-Hard's
  388147.4117647059 = `6598506/17`): the exact value, the same 1e-9 relative tolerance for float
  noise (`0.3333333333333333` is 1/3; `0.333`, `0.33` and `4.666667` are not). `2/4` = `1/2` = `0.5`.
- percentages: `%` (or "percent") is a unit that is dropped, `50%` is the number 50: it equals
  50 either way round, and never 0.5. Gold answers ask for the number in percent.

Anything else (LaTeX, expressions, text) goes through math-verify, after a whitespace- and
case-insensitive text comparison. `vote` counts two answers as one only when each is equivalent
to the other as gold (equal values: `0.5` and `1/2`, `50%` and `50`; `0.33` and `1/3` stay two).
"""

from __future__ import annotations

import math
import re
import threading
from decimal import Decimal
from fractions import Fraction
from typing import Sequence

__all__ = [
    "extract_answer",
    "extract_boxed",
    "normalize_answer",
    "parse_number",
    "is_equivalent",
    "format_number",
    "vote",
]

# A number as people write it: optional sign, optional currency, thousands separators,
# decimals, or a simple fraction. Thousands groups must be exactly three digits so that
# "1, 2, 3" stays three numbers.
_NUM = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?|-?\$?\.\d+"
_NUM_RE = re.compile(_NUM)
_ANSWER_PATTERNS = [
    # GSM8K style
    re.compile(r"####\s*(.+)"),
    # "The answer is 18", "the final answer is: $18", "Answer: 18", "answer = 18"
    re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.IGNORECASE),
    # "A: 18" at the start of a line
    re.compile(r"(?:^|\n)\s*A\s*:\s*(.+)"),
]


def extract_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        # "\boxed 5" form
        m = re.match(r"\\boxed\s+([^\s$]+)", text[start:])
        return m.group(1) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _clean_latex_number(s: str) -> str:
    """Strip the LaTeX wrappers people put around plain numbers: \\$, \\text{}, \\!, ^\\circ, %."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mathrm|textbf|mbox)\{\s*([^{}]*)\}", r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\$", "").replace("\\%", "%")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "")
    return s.strip()


def parse_number(s: str | None) -> Fraction | float | None:
    """The value of `s` if it is a plain number (with currency, commas, units, %, a fraction,
    or a \\frac{a}{b}); None if it is anything more than that.

    "$1,000.00" -> 1000, "5 apples" -> 5, "3/4" -> 3/4, "\\frac{1}{2}" -> 1/2, "-7." -> -7.
    """
    if s is None:
        return None
    s = _clean_latex_number(str(s))
    m = re.fullmatch(r"(-)?\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}", s) or re.fullmatch(
        r"(-)?\\[dt]?frac(\d)(\d)", s
    )
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if den == 0:
            return None
        v = Fraction(num, den)
        return -v if m.group(1) else v
    s = s.rstrip(".").strip()
    # the number must start the string; words after it (units) are allowed, other symbols are not
    m = re.match(r"^(" + _NUM + r")\s*(%|percent)?\s*([A-Za-z][A-Za-z .'\-()]*)?$", s)
    if not m:
        # "(apples) 9"-like or "x = 5" are not plain numbers
        return None
    tok = m.group(1).replace("$", "").replace(",", "").replace(" ", "")
    try:
        if "/" in tok:
            a, b = tok.split("/")
            fa, fb = Fraction(a), Fraction(b)
            if fb == 0:
                return None
            return fa / fb
        return Fraction(tok)
    except (ValueError, ZeroDivisionError):
        return None


def _float_value(v: float) -> Fraction:
    """The number a float result stands for: the shortest decimal within 4 units in its last
    place, or the simplest fraction (denominator up to 1000) within that or 1e-10 (data files
    round to 10 decimals), whichever has the smaller denominator: 17.999999999999996 -> 18,
    0.1 + 0.2 -> 3/10, 12.333333333333334 -> 37/3, 0.3333333333 -> 1/3, 4795436.8 -> 23977184/5,
    2.0107e-06 -> 20107/10**10."""
    exact, tol = Fraction(v), Fraction(4 * math.ulp(v))
    dec = next(d for d in (Fraction(f"{v:.{s}g}") for s in range(1, 18)) if abs(d - exact) <= tol)
    frac = exact.limit_denominator(1000)
    near = abs(frac - exact) <= max(tol, Fraction(1, 10**10)) and (frac != 0 or v == 0)
    return frac if near and frac.denominator < dec.denominator else dec


def format_number(v: Fraction | float | int) -> str:
    """Canonical text of a number: integers without decimals, others as a short decimal (at most
    10 significant digits), or "a/b" when the decimal would not end."""
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        v = _float_value(v)
    v = Fraction(v)
    if v.denominator == 1:
        return str(v.numerator)
    den = v.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:  # no finite decimal: keep it exact, "14/3"
        return f"{v.numerator}/{v.denominator}"
    text = f"{float(v):.10g}"
    if "e" in text:  # below 1e-4: ten significant digits written out; from 1e10: every digit
        text = format(Decimal(text) if abs(v) < 1 else Decimal(v.numerator) / v.denominator, "f")
    return text


def normalize_answer(s: str | int | float | None) -> str | None:
    """Canonical form of an answer string: plain numbers become e.g. '1000' / '0.5';
    anything else is stripped of surrounding whitespace, `$` and a trailing period."""
    if s is None:
        return None
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return format_number(s)
    s = str(s).strip()
    if not s:
        return None
    v = parse_number(s)
    if v is not None:
        return format_number(v)
    s = s.strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s[1:-1].strip()
    return s.rstrip(".").strip() or None


def _tail_number(text: str) -> str | None:
    """The first number in a short answer span ("18 apples." -> "18")."""
    m = _NUM_RE.search(text)
    return m.group(0) if m else None


def _answer_from_span(span: str) -> str | None:
    span = span.strip()
    boxed = extract_boxed(span)
    if boxed is not None:
        return normalize_answer(boxed)
    # keep only the first line / sentence of what follows "The answer is"
    span = span.split("\n")[0].strip()
    span = re.split(r"(?<=[^\d])\.(?:\s|$)|\.\s", span)[0].strip()
    if not span:
        return None
    if parse_number(span) is not None:
        return normalize_answer(span)
    if "=" in span and parse_number(span.rsplit("=", 1)[1]) is not None:
        # "The answer is 5 + 3 = 8"
        return normalize_answer(span.rsplit("=", 1)[1])
    num = _tail_number(span)
    if num is not None:
        return normalize_answer(num)
    # non-numeric answer (LaTeX expression, a word): keep the span itself
    return normalize_answer(span.strip(" *"))


def extract_answer(text: str | None) -> str | None:
    """The final answer in a model's output, normalised; None if there is none.

    Order: the last \\boxed{}, then the last "#### X" / "The answer is X" / "Answer: X" /
    "A: X", then the last number anywhere in the text.
    """
    if not text:
        return None
    text = str(text)
    boxed = extract_boxed(text)
    if boxed is not None:
        return normalize_answer(boxed)
    for pattern in _ANSWER_PATTERNS:
        matches = list(pattern.finditer(text))
        if matches:
            ans = _answer_from_span(matches[-1].group(1))
            if ans is not None:
                return ans
    nums = _NUM_RE.findall(text)
    if nums:
        return normalize_answer(nums[-1])
    return None


def _round_half_away(x: Fraction, places: int) -> Fraction:
    scale = 10**places
    r = math.floor(abs(x) * scale + Fraction(1, 2))
    return Fraction(r if x >= 0 else -r, scale)


def _numbers_equal(p: Fraction, gold: str) -> bool:
    """The numeric rule of the module docstring; `gold` is a normalised plain number."""
    g = parse_number(gold)
    if "." in gold:  # decimal gold: round the prediction to its places
        return _round_half_away(p, len(gold.split(".")[1])) == g
    if p.denominator == 1 and g.denominator == 1:  # two whole numbers
        return p == g
    return abs(p - g) <= Fraction(1, 10**9) * max(1, abs(g))


def _value(x: str | int | float) -> Fraction | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Fraction(x) if math.isfinite(x) else None
    return parse_number(str(x))


def _math_verify(pred: str, gold: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is a core dependency
        return False
    # math-verify's timeouts use SIGALRM, which only works in the main thread
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    kw = {"parsing_timeout": timeout}
    try:
        g = parse(f"${gold}$", **kw) or parse(gold, **kw)
        p = parse(f"${pred}$", **kw) or parse(pred, **kw)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception:
        return False


def _loose_text(s: str) -> str:
    s = _clean_latex_number(s)
    s = re.sub(r"\\left|\\right|\\displaystyle", "", s)
    return re.sub(r"\s+", "", s).lower()


def is_equivalent(pred: str | int | float | None, gold: str | int | float | None) -> bool:
    """Whether prediction `pred` equals gold answer `gold`, by the rule in the module docstring:
    plain numbers by value (integer gold: 1e-9 relative, whole numbers exactly; decimal gold:
    the prediction rounded to its places; fraction gold: exact), anything else through a
    whitespace- and case-insensitive text comparison, then math-verify."""
    if pred is None or gold is None:
        return False
    pred_s, gold_s = str(pred).strip(), str(gold).strip()
    if not pred_s or not gold_s:
        return False
    pv, gold_n = _value(pred), normalize_answer(gold)
    if pv is not None and parse_number(gold_n) is not None:
        return _numbers_equal(pv, gold_n)
    if _loose_text(pred_s) == _loose_text(gold_s):
        return True
    # expressions, or a number against an expression ("\\frac{\\sqrt{2}}{2}" vs "0.7071")
    return _math_verify(pred_s, gold_s)


def vote(answers: dict[str, Sequence[str | None]], preference: Sequence[str]) -> tuple[str | None, str | None]:
    """Majority vote over the answers of every format (each may carry several samples).

    Answers equivalent both ways (`5` and `5.0`, `1/2` and `0.5`) count as one; a rounding and
    the value it rounds (`0.33`, `1/3`) count as two. Ties go to the answer given by the
    earliest format in `preference`; formats that produced no answer (failed to parse,
    execute or solve) do not vote. Returns (answer, format whose answer won) or (None, None).
    """
    order = list(preference) + [t for t in answers if t not in preference]
    groups: list[list] = []  # [representative, count, best preference rank, format]
    for fmt, values in answers.items():
        rank = order.index(fmt)
        for value in values:
            if value is None:
                continue
            for g in groups:
                if is_equivalent(value, g[0]) and is_equivalent(g[0], value):
                    g[1] += 1
                    if rank < g[2]:
                        g[2], g[3] = rank, fmt
                    break
            else:
                groups.append([value, 1, rank, fmt])
    if not groups:
        return None, None
    best = max(groups, key=lambda g: (g[1], -g[2]))
    return best[0], best[3]
