"""Equation-of-thought solver: lines `name = expression`, solved as a system with sympy.

    % Natalia sold 48 clips in April and half as many in May
    april = 48
    may = april / 2
    ans = april + may

Rules: one equation per line (`a = b = c` chains; a leading "Step 2:" label is dropped);
`%` and `#` start comments; unknowns are allowed anywhere (`x + 2*x = 30`); the target
variable is `ans`. `^` is power, `2x` is `2*x`, `1,000` is 1000, `$`, `×`, `÷` are understood.
Lines without `=` and sentences (two words in a row, or non-ASCII text) are skipped as chatter.
Expressions are parsed with a whitelist (numbers, names, + - * / // % ** and a few
functions) — never `eval`. Errors say what is wrong: unparsable line, no `ans`, no solution
(inconsistent), several values for `ans`, or `ans` not determined.

`solve_text` is pure; the teacher/student pipeline runs it in the sandbox (`solve_in_sandbox`)
so that a pathological system hits a timeout instead of hanging the caller.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

import sympy

from mathdistill.answers import format_number

TARGETS = ("ans",)
_FUNCS = {
    "sqrt": sympy.sqrt, "abs": sympy.Abs, "Abs": sympy.Abs, "floor": sympy.floor,
    "ceil": sympy.ceiling, "ceiling": sympy.ceiling, "round": lambda x, n=0: sympy.Float(round(float(x), int(n))) if n else sympy.Integer(round(float(x))),
    "min": sympy.Min, "max": sympy.Max, "exp": sympy.exp, "log": sympy.log, "ln": sympy.log,
}
_BINOPS = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b, ast.BitXor: lambda a, b: a**b,
    ast.FloorDiv: lambda a, b: sympy.floor(a / b), ast.Mod: lambda a, b: sympy.Mod(a, b),
}


_PROSE = re.compile(r"[A-Za-z_]\w*\s+[A-Za-z_]\w*|[^\x00-\x7f×÷−·]")


class EoTError(ValueError):
    """An equation system that cannot give one value for `ans`; the message says why."""


def _preprocess(expr: str) -> str:
    s = expr.strip().rstrip(".;,").strip()
    s = s.replace("$", "").replace("×", "*").replace("÷", "/").replace("−", "-").replace("·", "*")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    s = re.sub(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?=[A-Za-z_(])", r"\1*", s)  # 2x, 3(a+b) -> 2*x, 3*(a+b)
    s = re.sub(r"\)\s*(?=[\w(])", ")*", s)  # (a+b)(c) -> (a+b)*(c)
    return s


def _to_sympy(node: ast.AST, symbols: dict):
    if isinstance(node, ast.Expression):
        return _to_sympy(node.body, symbols)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return sympy.Rational(str(node.value)) if isinstance(node.value, float) else sympy.Integer(node.value)
    if isinstance(node, ast.Name):
        return symbols.setdefault(node.id, sympy.Symbol(node.id))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _to_sympy(node.left, symbols), _to_sympy(node.right, symbols)
        if isinstance(node.op, (ast.Pow, ast.BitXor)) and right.is_Number and abs(right) > 1000:
            raise EoTError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _to_sympy(node.operand, symbols)
        return -v if isinstance(node.op, ast.USub) else v
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        return _FUNCS[node.func.id](*[_to_sympy(a, symbols) for a in node.args])
    raise EoTError(f"unsupported syntax: {ast.dump(node)[:60]}")


def parse_equations(text: str) -> list[tuple[int, sympy.Expr, sympy.Expr]]:
    """(line number, lhs, rhs) for every equation line of `text`."""
    from mathdistill.thoughts.text import strip_fences

    symbols: dict = {}
    equations = []
    for lineno, raw in enumerate(strip_fences(text).splitlines(), 1):
        line = re.split(r"[%#]", raw, maxsplit=1)[0].strip()
        if "=" not in line:
            continue
        line = line.rsplit(":", 1)[-1]  # "Equation 2: x + y = 10" (no equation contains a colon)
        if _PROSE.search(line):  # "So she eats 48 * 3 = 156 eggs": a sentence, not an equation
            continue
        line = line.replace("==", "=")
        if re.search(r"[<>!]=", line):
            raise EoTError(f"line {lineno}: inequalities are not supported: {raw.strip()!r}")
        sides = [p for p in line.split("=")]
        if any(not p.strip() for p in sides):
            raise EoTError(f"line {lineno}: empty side in {raw.strip()!r}")
        try:
            exprs = [_to_sympy(ast.parse(_preprocess(p), mode="eval"), symbols) for p in sides]
        except (SyntaxError, EoTError, TypeError, ValueError, RecursionError) as e:
            msg = e.msg if isinstance(e, SyntaxError) else str(e)
            raise EoTError(f"line {lineno}: cannot parse {raw.strip()!r} ({msg})") from None
        for a, b in zip(exprs, exprs[1:]):
            equations.append((lineno, a, b))
    return equations


def _value_text(v: sympy.Expr) -> str:
    if v.is_Rational:
        return format_number(Fraction(int(v.p), int(v.q)))
    return format_number(float(v.evalf()))


def solve_text(text: str) -> str:
    """The value of `ans` in the equation system `text`, as an answer string; EoTError otherwise."""
    equations = parse_equations(text)
    if not equations:
        raise EoTError("no equations (lines of the form `name = expression`)")
    names = {s.name: s for _, a, b in equations for s in (a.free_symbols | b.free_symbols)}
    target = next((names[t] for t in TARGETS if t in names), None)
    if target is None:
        raise EoTError("no `ans` variable: write the final quantity as `ans = ...`")
    # fast path: straight-line definitions `x = <expression of known names>`, in any order
    known: dict = {}
    pending = list(equations)
    progress = True
    while progress:
        progress = False
        for eq in list(pending):
            _, a, b = eq
            for lhs, rhs in ((a, b), (b, a)):
                if lhs.is_Symbol and lhs not in known and rhs.free_symbols <= set(known):
                    known[lhs] = sympy.nsimplify(rhs.subs(known)) if rhs.has(sympy.Float) else rhs.subs(known)
                    pending.remove(eq)
                    progress = True
                    break
    # the remaining equations: check the fully known ones, solve the rest as a system
    system = []
    for lineno, a, b in pending:
        diff = (a - b).subs(known)
        if not diff.free_symbols:
            if not (diff == 0 or diff.equals(0)):
                raise EoTError(f"line {lineno}: inconsistent system ({a} = {b} does not hold)")
            continue
        system.append(diff)
    if system:
        unknowns = sorted(set().union(*(d.free_symbols for d in system)), key=lambda s: s.name)
        try:
            solutions = sympy.solve(system, unknowns, dict=True)
        except NotImplementedError:
            raise EoTError("sympy cannot solve this system") from None
        if not solutions:
            raise EoTError("no solution: the equations are inconsistent")
        values = set()
        for sol in solutions:
            v = known[target] if target in known else sol.get(target, target)
            v = v.subs(sol).subs(known)
            if v.free_symbols:
                raise EoTError(f"`ans` is not determined (depends on {', '.join(sorted(map(str, v.free_symbols)))})")
            if v.is_real is False:
                continue
            values.add(v)
        if not values:
            raise EoTError("no real solution for `ans`")
        if len(values) > 1:
            shown = ", ".join(sorted(_value_text(v) for v in values))
            raise EoTError(f"several values for `ans`: {shown}")
        value = values.pop()
    elif target in known:
        value = known[target]
    else:
        raise EoTError("`ans` is not determined")
    if not value.is_number:
        raise EoTError(f"`ans` is not a number: {value}")
    if value.is_real is False:
        raise EoTError(f"`ans` is not real: {value}")
    return _value_text(sympy.nsimplify(value) if value.has(sympy.Float) else value)


def warm_up() -> None:
    """Solve a few systems once, so that sympy's lazily imported parts and caches are loaded
    in the sandbox worker before it forks (each task then starts warm)."""
    for text in ("a = 2\nb = a / 3\nans = a + b", "x + y = 10\nx - y = 2\nans = x * y",
                 "x**2 = 49\nx = 7\nans = sqrt(x) + floor(x / 2)", "2x + 3 = 11\nans = x"):
        solve_text(text)


def solve_in_sandbox(text: str) -> dict:
    """Sandbox entry point (zygote.FUNCS['eot'])."""
    try:
        return {"value": solve_text(text), "error": None}
    except EoTError as e:
        return {"value": None, "error": f"EoT: {e}"}
    except (ZeroDivisionError, TypeError, ValueError, AttributeError, RecursionError, OverflowError) as e:
        return {"value": None, "error": f"EoT: {type(e).__name__}: {e}"[:500]}
