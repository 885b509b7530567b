"""Arithmetic slips in a student's written steps: how many `a op b = c` it wrote, how many are wrong,
and how many wrong answers contain at least one such slip.

    python benchmarks/arith_slips.py runs/x/eval/gsm8k/predictions.jsonl
    python benchmarks/arith_slips.py CALC/predictions.jsonl --compare PLAIN/predictions.jsonl

A step is a number, one of `+ - * / x × ÷`, a number, `=`, a number (`$`, thousands separators,
decimals and a trailing `%` on `c` allowed), not part of a longer expression (`2 + 3 * 4 = 14` is
not counted as `3 * 4 = 14`); steps may share numbers (`2 + 3 = 5 + 4 = 9` holds two). A step is
wrong when `c` differs from the exact value of `a op b` by more than half a unit of the last decimal
`c` writes (`10 / 3 = 3.33` is right, `16 * 0.60 = 9.8` is wrong), or `b` is 0 in a division.
Every output of a row counts (`outputs` with several samples); a wrong answer is a row with
`correct` false. `--compare OTHER` adds how many answers differ from OTHER's (rows matched by id),
e.g. the share of answers the calculator changed. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from fractions import Fraction
from pathlib import Path

from mathdistill.io import InputError, iter_jsonl

_NUM = r"\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
STEP = re.compile(rf"(?=(?<![\d.,$])({_NUM})\s*([-+*/×÷x])\s*({_NUM})\s*=\s*({_NUM})(%?)(?![\d]|\.\d))")
_BEFORE = set("+-*/×÷x(^")  # a step right after one of these is part of a longer expression
_OPS = {"+": "+", "-": "-", "*": "*", "x": "*", "×": "*", "/": "/", "÷": "/"}


def _value(literal: str) -> Fraction:
    return Fraction(literal.lstrip("$").replace(",", ""))


def steps(text: str) -> list[tuple[str, bool]]:
    """The `a op b = c` steps in `text`, each with whether it is right."""
    found = []
    for m in STEP.finditer(text):
        before = text[: m.start()].rstrip()[-1:]
        if before and before in _BEFORE:
            continue
        a, op, b, c, percent = m.groups()
        a, b, op = _value(a), _value(b), _OPS[op]
        if op == "/" and b == 0:
            right = False
        else:
            exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
            got = _value(c) / (100 if percent else 1)
            decimals = len(c.split(".")[1]) if "." in c else 0
            right = abs(exact - got) <= Fraction(1, 2 * 10**decimals) / (100 if percent else 1)
        found.append((text[m.start(1) : m.end(5)], right))
    return found


def count(rows) -> dict:
    """Totals over prediction rows (dicts with `output` or `outputs`, and `correct`)."""
    out = dict(answers=0, wrong_answers=0, steps=0, wrong_steps=0, wrong_answers_with_slip=0, answers_with_slip=0)
    for row in rows:
        texts = row.get("outputs") or [row["output"]]
        wrong = [sum(not ok for _, ok in steps(t)) for t in texts]
        out["answers"] += 1
        out["steps"] += sum(len(steps(t)) for t in texts)
        out["wrong_steps"] += sum(wrong)
        out["answers_with_slip"] += any(wrong)
        if not row.get("correct"):
            out["wrong_answers"] += 1
            out["wrong_answers_with_slip"] += any(wrong)
    out["wrong_step_share"] = out["wrong_steps"] / out["steps"] if out["steps"] else None
    return out


def compare(rows, other) -> dict:
    """How many answers of `rows` differ from `other`'s (by id), and how many turned right / wrong."""
    theirs = {r["id"]: r for r in other}
    both = [(r, theirs[r["id"]]) for r in rows if r["id"] in theirs]
    changed = [(a, b) for a, b in both if a.get("prediction") != b.get("prediction")]
    return {"matched": len(both), "answers_changed": len(changed),
            "answers_changed_share": len(changed) / len(both) if both else None,
            "now_right": sum(bool(a.get("correct")) and not b.get("correct") for a, b in changed),
            "now_wrong": sum(not a.get("correct") and bool(b.get("correct")) for a, b in changed)}


def _rows(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path, required=("id", "output"))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", type=Path, help="an evaluation's predictions.jsonl")
    ap.add_argument("--compare", type=Path, help="another predictions.jsonl of the same problems")
    args = ap.parse_args(argv)
    try:
        rows = _rows(args.predictions)
        result = {"predictions": str(args.predictions), **count(rows)}
        if args.compare is not None:
            result["compare"] = {"predictions": str(args.compare), **compare(rows, _rows(args.compare))}
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
