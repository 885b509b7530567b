"""Final-answer extraction from free text, and answer equivalence.

`extract_answer` finds the final answer a model wrote ("The answer is 18", "#### 18",
"\\boxed{18}", "A: 18", or the last number). `is_equivalent` compares a prediction with a
gold answer: numerically with a tolerance when both are numbers (`1,000`, `$5`, `5.00`,
`5 apples`, `1/2`), otherwise with math-verify (LaTeX / symbolic expressions). `vote` takes
the majority of several answers (ETD's formats, or self-consistency samples) by that equivalence.
"""

from __future__ import annotations

import math
import re
import threading
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


def format_number(v: Fraction | float | int) -> str:
    """Canonical text of a number: integers without decimals, others as a short decimal."""
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        v = Fraction(v).limit_denominator(10**9) if abs(v) < 1e15 else Fraction(round(v))
    v = Fraction(v)
    if v.denominator == 1:
        return str(v.numerator)
    den = v.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:  # no finite decimal: keep it exact, "14/3"
        return f"{v.numerator}/{v.denominator}"
    f = float(v)
    text = f"{f:.10g}"
    if "e" in text:
        text = f"{f:.10f}".rstrip("0").rstrip(".")
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


def _numbers_close(a: Fraction, b: Fraction, rel: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    if a == b:
        return True
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_tol)


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
    """Whether prediction `pred` equals gold answer `gold`.

    Plain numbers compare by value (relative tolerance 1e-4): `1,000` = `1000.0` = `$1000`.
    Anything else goes through math-verify (LaTeX / symbolic equality), then a
    whitespace- and case-insensitive text comparison.
    """
    if pred is None or gold is None:
        return False
    pred_s, gold_s = str(pred).strip(), str(gold).strip()
    if not pred_s or not gold_s:
        return False
    pv, gv = parse_number(pred_s), parse_number(gold_s)
    if pv is not None and gv is not None:
        return _numbers_close(pv, gv)
    if _loose_text(pred_s) == _loose_text(gold_s):
        return True
    # expressions, or a number against an expression ("\\frac{\\sqrt{2}}{2}" vs "0.7071")
    return _math_verify(pred_s, gold_s)


def vote(answers: dict[str, Sequence[str | None]], preference: Sequence[str]) -> tuple[str | None, str | None]:
    """Majority vote over the answers of every format (each may carry several samples).

    Equivalent answers (`5` and `5.0`) count as one. Ties go to the answer given by the
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
                if is_equivalent(value, g[0]):
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
