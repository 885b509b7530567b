"""What runs inside a sandboxed task process: execute a PoT program and find its answer.

Conventions accepted, in this order: a `def solution()` whose return value is the answer;
a variable `ans`, `answer` or `result`; else the last printed line. Values become answer
strings here (ints, floats, fractions, Decimals, sympy numbers, numpy scalars, one-element
lists/sets/dicts, strings).
"""

from __future__ import annotations

import builtins
import io
import math
import traceback
from decimal import Decimal
from fractions import Fraction

from mathdistill.answers import extract_answer, format_number, normalize_answer

ANSWER_NAMES = ("ans", "answer", "result")
FUNCTION_NAMES = ("solution",)


class OutputLimit(Exception):
    """Raised inside the program when it prints more than the sandbox allows."""


class BoundedStdout(io.TextIOBase):
    """sys.stdout for a task: keeps the last `keep` characters, stops the program past `limit`."""

    def __init__(self, limit: int, keep: int = 4096):
        self.limit, self.keep, self.total, self.tail = limit, keep, 0, ""

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = str(s)
        self.total += len(s)
        if self.total > self.limit:
            raise OutputLimit(f"program printed more than {self.limit} characters")
        self.tail = (self.tail + s)[-self.keep :]
        return len(s)


def to_answer(value) -> str | None:
    """The answer string of a Python value, or None when there is no usable value."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (list, tuple)):
        try:  # numpy scalars / 0-d arrays, torch scalars
            value = value.item()
        except Exception:
            pass
    if isinstance(value, (list, tuple, set, frozenset)) and len(value) == 1:
        return to_answer(next(iter(value)))
    if isinstance(value, dict) and len(value) == 1:
        return to_answer(next(iter(value.values())))
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, Fraction)):
        return format_number(value)
    if isinstance(value, Decimal):
        return format_number(Fraction(value)) if value.is_finite() else str(value)
    if isinstance(value, float):
        return format_number(value) if math.isfinite(value) else str(value)
    if isinstance(value, complex):
        return to_answer(value.real) if value.imag == 0 else str(value)
    try:
        import sympy

        if isinstance(value, sympy.Basic):
            if value.is_Rational:
                return format_number(Fraction(int(value.p), int(value.q)))
            if value.is_number and value.is_real:
                return format_number(float(value.evalf()))
            return str(value)
    except Exception:
        pass
    if isinstance(value, str):
        return normalize_answer(value)
    return normalize_answer(str(value))


def warm_sympy() -> None:
    """Run sympy's common paths once in the worker, so forked programs start warm."""
    import sympy

    x, y = sympy.symbols("x y")
    sympy.solve([x + y - 10, x - y - 2], [x, y], dict=True)
    sympy.solve(sympy.Eq(x**2, 4), x)
    sympy.simplify((x**2 - 1) / (x - 1))
    sympy.Rational(1, 3).evalf()


def _error(exc: BaseException) -> str:
    """`ZeroDivisionError: division by zero (line 3)` — the line is the program's own."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<program>":
            line = frame.lineno
    where = f" (line {line})" if line else ""
    return f"{type(exc).__name__}: {exc}{where}"[:500]


def run_program(code: str) -> dict:
    """Execute `code` (already in a locked-down process) and return {value, error, stdout}."""
    out = BoundedStdout(limit=1_000_000)
    import sys

    sys.stdout = sys.stderr = out
    env = {"__name__": "__main__", "__builtins__": builtins}
    value, error, found = None, None, False
    try:
        exec(compile(code, "<program>", "exec"), env)
        for name in FUNCTION_NAMES:
            if callable(env.get(name)):
                value, found = env[name](), True
                break
        if not found:
            for name in ANSWER_NAMES:
                if name in env:
                    value, found = env[name], True
                    break
    except SyntaxError as e:
        error = f"SyntaxError: {e.msg} (line {e.lineno})"
    except (Exception, SystemExit, KeyboardInterrupt, OutputLimit) as e:
        error = _error(e)
    answer = to_answer(value) if found else None
    printed = [ln for ln in out.tail.splitlines() if ln.strip()]
    if answer is None and error is None and printed:
        answer = extract_answer(printed[-1])
    if answer is None and error is None:
        error = ("no answer: define ans/answer/result, a solution() that returns it, or print it"
                 if not found else "the answer is None")
    return {"value": answer, "error": error, "stdout": out.tail[-1000:]}
