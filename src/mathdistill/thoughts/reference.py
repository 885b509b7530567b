"""Reference rationales converted from GSM8K gold solutions: an offline "reference teacher".

A GSM8K solution carries calculator notes, `Natalia sold 48/2 = <<48/2=24>>24 clips in May.`
This module reads them (`solution_sentences`, `solution_steps`); each format's class writes them
in its own form (`Thought.reference(problem)`):

  cot  the sentences without the notes, then "The answer is N." (None if a note's arithmetic
       is wrong); `calc_marks="keep"|"add"` keeps / adds calculation marks
       (`mathdistill.thoughts.calcmarks`);
  pot  one assignment per note (`clips_in_may = 48 / 2`, earlier results referred to by
       name), each after its sentence as a `#` comment, then `ans = ...`;
  eot  the same steps as equations with `%` comments.

A conversion is kept when the format's own scorer gives the gold answer (the text's answer for
cot, the program executed in the sandbox for pot, the EoT solver for eot).

    reference_formats() -> ("cot", "pot", "eot")     # the formats that implement `reference`
    reference_rationale(problem, "pot") -> str | None
    reference_rationales(problems, "pot") -> {problem.id: str | None}   (batched, cached)
    coverage(problems) -> {"pot": {"kept": 7210, "total": 7473, "rate": 0.965}, ...}

`python -m mathdistill.thoughts.reference [--limit N]` prints the coverage on GSM8K train.
"""

from __future__ import annotations

import ast
import hashlib
import json
import keyword
import re
from fractions import Fraction
from typing import Iterable, Sequence

from mathdistill.answers import parse_number
from mathdistill.io import InputError
from mathdistill.thoughts import NAMES, Thought, get, thought_class
from mathdistill.thoughts.calcmarks import NOTE as _NOTE  # a calculator note: <<48/2=24>>


def reference_formats() -> tuple[str, ...]:
    """The formats whose class implements `Thought.reference`, in registry order."""
    return tuple(n for n in NAMES if thought_class(n).reference is not Thought.reference)


FORMATS = reference_formats()
VERSION = 2  # bump when the conversion changes (invalidates the cache)
# arithmetic written out without a calculator note: "40 / 10 = 4 days", "$50 − $6 = $44"
_N = r"\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_INLINE = re.compile(rf"(?<![\w.])(\(?{_N}(?:\s*[-+*/x×÷−]\s*\(?{_N}\)?)+)\s*=\s*\$?(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))(?!\.?\d)")
_STOP = {"a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "is", "are", "was", "were",
         "be", "so", "that", "this", "it", "he", "she", "they", "we", "i", "you", "his", "her",
         "their", "there", "then", "which", "will", "would", "has", "have", "had", "with", "by"}
_RESERVED = set(keyword.kwlist) | {"ans", "answer", "result", "sum", "min", "max", "round", "int",
                                    "float", "list", "print", "len", "abs", "range", "pow", "type", "id"}


def _solution(problem) -> str:
    sol = (getattr(problem, "extra", None) or {}).get("solution")
    if not sol or "####" not in sol:
        raise InputError(f"problem {getattr(problem, 'id', '?')} has no GSM8K solution in extra['solution']")
    return sol


def solution_lines(problem) -> list[str]:
    """The step lines (before `####`) of `problem`'s GSM8K gold solution (an InputError without one)."""
    return _body_lines(_solution(problem))


def _body_lines(solution: str) -> list[str]:
    return [ln.strip() for ln in solution.split("####")[0].strip().splitlines() if ln.strip()]


def _clean(line: str) -> str:
    return _NOTE.sub("", line).strip()


def _value(expr: str) -> Fraction | None:
    """Exact value of a calculator note's arithmetic (numbers, + - * / and parentheses)."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.Div: lambda: a / b}
            return ops[type(node.op)]()
        raise ValueError("unsupported")
    try:
        return ev(ast.parse(_expr(expr), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def _notes(line: str) -> list[tuple[int, int, str, str]]:
    """(start, end, expression, result) of each calculation in a solution line: its calculator
    notes, or else arithmetic written out in the text whose stated result is right."""
    notes = [(m.start(), m.end(), m.group(1), m.group(2).strip()) for m in _NOTE.finditer(line)]
    if notes:
        return notes
    for m in _INLINE.finditer(line):
        v, r = _value(m.group(1)), parse_number(m.group(2))
        if v is not None and r is not None and _close(v, r):
            notes.append((m.start(), m.end(), m.group(1), m.group(2)))
    return notes


def _expr(expr: str) -> str:
    """A note's expression as Python: no `$`, no thousands commas, `x` as `*`."""
    s = expr.replace("$", "").replace(",", "").replace("−", "-").replace("÷", "/")
    s = re.sub(r"(?<=[\d)])\s*[xX×]\s*(?=[\d(.])", "*", s)
    return re.sub(r"(?<![\d.])0+(?=\d)", "", s).strip()  # 05 -> 5 (a syntax error in Python 3)


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= Fraction(1, 100) * max(1, abs(b))  # notes round: 1/3=.33


def _name(line: str, start: int, end: int, result: str, used: set, k: int) -> str:
    """A variable name for a step, from the words after the note (else before it)."""
    after = line[end:]
    after = after[len(result):] if after.startswith(result) else after
    words = [w for w in re.findall(r"[A-Za-z]+", re.split(r"[;,!?]|\.(?!\d)", after, maxsplit=1)[0]) if len(w) > 1]
    while words and words[0].lower() in _STOP:
        words.pop(0)
    words = words[:3]
    if not words:  # "she earned 0.2 x 50 = $<<...>>10." -> "earned"
        before = re.sub(r"[\d.\s+\-*/xX()=$%]*$", "", line[:start])
        before = re.split(r"[;,!?]|\.(?!\d)", before)[-1]
        words = [w for w in re.findall(r"[A-Za-z]+", before) if len(w) > 1 and w.lower() not in _STOP][-2:]
    while words and words[-1].lower() in _STOP:
        words.pop()
    name = "_".join(w.lower() for w in words) or f"step{k}"
    if name in _RESERVED or not name.isidentifier():
        name = f"{name}_value" if name.isidentifier() else f"step{k}"
    base, i = name, 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


def solution_steps(problem) -> tuple[list[tuple[str, str, str]], str] | None:
    """[(comment sentence, variable, python expression)], answer variable; None if unconvertible."""
    gold = parse_number(problem.answer)
    question_numbers = {parse_number(m) for m in re.findall(r"\d[\d,]*(?:\.\d+)?", problem.question)}
    steps, used, known = [], set(), []  # known: (value, variable)
    for line in _body_lines(_solution(problem)):
        for start, end, expr, result in _notes(line):
            value = _value(expr)
            if value is None:
                return None
            name = _name(line, start, end, result, used, len(steps) + 1)

            def ref(tok: re.Match) -> str:
                v = parse_number(tok.group(0))
                if v is None or v in question_numbers:
                    return tok.group(0)
                for kv, var in reversed(known):
                    if kv == v:
                        return var
                return tok.group(0)

            py = re.sub(r"(?<![\w.])\d+(?:\.\d+)?|(?<![\w\d])\.\d+", ref, _expr(expr))
            py = re.sub(r"\s*([-+*/])\s*", r" \1 ", py).replace("( ", "(").replace(" )", ")").strip()
            py = re.sub(r"^ ?- ", "-", py)
            steps.append((_clean(line), name, py))
            known.append((value, name))
    if not steps:
        return None
    target = next((var for v, var in reversed(known) if gold is not None and _close(v, gold)), steps[-1][1])
    return steps, target


def solution_sentences(problem, keep_notes: bool = False) -> list[str] | None:
    """The gold solution's lines without their calculator notes (`keep_notes`: with the notes the
    calculator agrees with, `calcmarks.keep_notes`); None when a note's arithmetic is wrong (the
    gold solution's own arithmetic)."""
    lines = _body_lines(_solution(problem))
    for line in lines:
        for m in _NOTE.finditer(line):
            v, r = _value(m.group(1)), parse_number(m.group(2).strip())
            if v is None or r is None or not _close(v, r):
                return None
    if keep_notes:
        from mathdistill.thoughts.calcmarks import keep_notes as keep

        return [keep(ln) for ln in lines]
    return [_clean(ln) for ln in lines]


def assignments(problem, comment: str) -> str | None:
    """The gold solution's steps as `name = expression` lines, each after its sentence as a
    `comment` line, then `ans = <the step whose value is the gold answer>`; None if unconvertible."""
    conv = solution_steps(problem)
    if conv is None:
        return None
    steps, target = conv
    out = []
    for sentence, name, py in steps:
        if sentence:
            out.append(f"{comment} {sentence}")
        out.append(f"{name} = {py}")
    out.append(f"ans = {target}")
    return "\n".join(out)


def _format(thought: str | Thought, calc_marks: str = "none") -> Thought:
    """The format called `thought` (or `thought` itself, a Thought); `calc_marks` other than "none"
    (see `mathdistill.thoughts.calcmarks`) only for cot."""
    name = thought.name if isinstance(thought, Thought) else thought
    if name not in FORMATS:
        raise InputError(f"no reference conversion for {name!r}; formats: {', '.join(FORMATS)}")
    if isinstance(thought, Thought):
        return thought
    if calc_marks == "none":
        return get(name)
    if name != "cot":
        raise InputError(f"calc_marks {calc_marks!r}: calculation marks apply to cot targets, not {name}")
    try:
        return get(name, calc_marks=calc_marks)
    except ValueError as e:
        raise InputError(str(e)) from None


def convert(problem, thought: str, calc_marks: str = "none") -> str | None:
    """The unverified conversion of `problem`'s gold solution into `thought` (None if impossible)."""
    return _format(thought, calc_marks).reference(problem)


def training_rows(n: int, thought: str = "cot", offset: int = 0, data_dir=None, calc_marks: str = "none") -> list[dict]:
    """The first `n` {prompt: question, completion: converted gold solution} rows of GSM8K train,
    after skipping `offset` problems: small real training sets for tests and benchmarks."""
    from mathdistill.data import load

    rows = []
    for p in load("gsm8k", split="train", data_dir=data_dir, limit=4 * (n + offset))[offset:]:
        text = convert(p, thought, calc_marks)
        if text:
            rows.append({"prompt": p.question, "completion": text})
        if len(rows) == n:
            return rows
    raise ValueError(f"fewer than {n} GSM8K train problems convert to {thought} after the first {offset}")


def _verify(problems: Sequence, fmt: Thought, texts: list[str | None]) -> list[str | None]:
    """`texts` where the format's scorer gives the problem's gold answer, else None."""
    idx = [i for i, t in enumerate(texts) if t is not None]
    scored = fmt.score_batch([texts[i] for i in idx], [problems[i].answer for i in idx])
    out: list[str | None] = [None] * len(texts)
    for i, s in zip(idx, scored):
        if s.correct:
            out[i] = texts[i]
    return out


def reference_rationale(problem, thought: str | Thought, calc_marks: str = "none") -> str | None:
    """The verified reference rationale of one GSM8K problem in `thought` (cot, pot, eot), or None."""
    fmt = _format(thought, calc_marks)
    return _verify([problem], fmt, [fmt.reference(problem)])[0]


def _key(problem) -> str:
    return hashlib.sha1(f"{VERSION}\n{problem.question}\n{_solution(problem)}".encode()).hexdigest()[:16]


def reference_rationales(problems: Iterable, thought: str | Thought, cache: bool = True,
                         progress: bool = False, calc_marks: str = "none") -> dict[str, str | None]:
    """{problem.id: verified rationale or None} for many problems, in sandbox batches. `thought`: a
    name, or a Thought (its own settings, e.g. `CoT(calc_marks="keep")`); `calc_marks` with a name.

    Results are cached in cache_dir()/reference/<thought>.jsonl (keyed by the problem's text;
    <thought>-marks-<mode>-v<calcmarks.VERSION>.jsonl with calculation marks)."""
    from mathdistill.io import write_jsonl
    from mathdistill.paths import cache_dir

    from mathdistill.thoughts import calcmarks

    fmt = _format(thought, calc_marks)
    marks = getattr(fmt, "calc_marks", "none")
    problems = list(problems)
    name = fmt.name if marks == "none" else f"{fmt.name}-marks-{marks}-v{calcmarks.VERSION}"
    path = cache_dir() / "reference" / f"{name}.jsonl"
    stored: dict[str, str | None] = {}
    if cache and path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                stored[row["key"]] = row["text"]
            except (ValueError, KeyError, TypeError):
                continue
    keys = [_key(p) for p in problems]
    todo = [i for i, k in enumerate(keys) if k not in stored]
    chunk = 512
    with _progress(progress, len(todo), f"reference {fmt.name}") as advance:
        for s in range(0, len(todo), chunk):
            part = todo[s: s + chunk]
            texts = _verify([problems[i] for i in part], fmt, [fmt.reference(problems[i]) for i in part])
            for i, text in zip(part, texts):
                stored[keys[i]] = text
            advance(len(part))
    if cache and todo:
        write_jsonl(path, ({"key": k, "text": t} for k, t in stored.items()))
    return {p.id: stored[k] for p, k in zip(problems, keys)}


class _progress:
    def __init__(self, on: bool, total: int, label: str):
        self.on, self.total, self.label = on and total > 0, total, label

    def __enter__(self):
        if not self.on:
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        self.p = Progress(transient=True, console=Console(stderr=True))
        self.p.start()
        task = self.p.add_task(self.label, total=self.total)
        return lambda n: self.p.advance(task, n)

    def __exit__(self, *exc):
        if self.on:
            self.p.stop()


def coverage(problems: Iterable, thoughts: Sequence[str] = FORMATS, cache: bool = True,
             progress: bool = False) -> dict:
    """{thought: {"kept": k, "total": n, "rate": k/n}} of verified reference rationales."""
    problems = list(problems)
    out = {}
    for t in thoughts:
        refs = reference_rationales(problems, t, cache=cache, progress=progress)
        kept = sum(v is not None for v in refs.values())
        out[t] = {"kept": kept, "total": len(problems), "rate": round(kept / max(1, len(problems)), 4)}
    return out


def main() -> None:
    import argparse

    from mathdistill.data import load

    ap = argparse.ArgumentParser(description="Coverage of reference rationales on GSM8K train.")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()
    problems = load("gsm8k", "train", data_dir=args.data_dir, limit=args.limit)
    print(json.dumps(coverage(problems, cache=not args.no_cache, progress=True)))


if __name__ == "__main__":
    main()
