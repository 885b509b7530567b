"""benchmarks/arith_slips.py: the step counter on scripted text, the totals over prediction rows,
the comparison of two evaluations, and the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import arith_slips  # noqa: E402


@pytest.mark.parametrize("text,want", [
    ("16 * 0.60 = 9.6", [("16 * 0.60 = 9.6", True)]),
    ("16 * 0.60 = 9.8", [("16 * 0.60 = 9.8", False)]),
    ("$1,200 / 4 = $300 each", [("$1,200 / 4 = $300", True)]),
    ("2 + 3 = 5 + 4 = 9", [("2 + 3 = 5", True), ("5 + 4 = 9", True)]),
    ("2 + 3 = 6 + 4 = 10", [("2 + 3 = 6", False), ("6 + 4 = 10", True)]),
    ("2 + 3 * 4 = 14", []),  # part of a longer expression: not an `a op b = c` step
    ("(2 + 3) * 4 = 20", []),
    ("10 / 3 = 3.33, 10 / 3 = 3.4 and 10 / 3 = 3", [("10 / 3 = 3.33", True), ("10 / 3 = 3.4", False),
                                                    ("10 / 3 = 3", True)]),
    ("5 / 0 = 0", [("5 / 0 = 0", False)]),
    ("She had 12 - 5 = 8 apples.", [("12 - 5 = 8", False)]),
    ("3 x 4 = 12 and 6 × 7 = 42 and 84 ÷ 2 = 41", [("3 x 4 = 12", True), ("6 × 7 = 42", True), ("84 ÷ 2 = 41", False)]),
    ("<<48/2=24>> then 1,000 - 1 = 999", [("48/2=24", True), ("1,000 - 1 = 999", True)]),
    ("0.25 * 80 = 20%", [("0.25 * 80 = 20%", False)]),
    ("The answer is 42. x = 5", []),
    ("12 + 3 = 15.5", [("12 + 3 = 15.5", False)]),
])
def test_steps(text, want):
    assert arith_slips.steps(text) == want


ROWS = [
    {"id": "a", "output": "2 * 3 = 7. The answer is 7.", "prediction": "7", "correct": False},
    {"id": "b", "output": "2 * 3 = 6. The answer is 6.", "prediction": "6", "correct": True},
    {"id": "c", "output": "The answer is 5.", "prediction": "5", "correct": False},
    {"id": "d", "output": "4 + 4 = 9 and 1 + 1 = 2", "prediction": "2", "correct": True,
     "outputs": ["4 + 4 = 9 and 1 + 1 = 2", "1 + 1 = 3"]},
]


def test_count():
    got = arith_slips.count(ROWS)
    assert got == dict(answers=4, wrong_answers=2, steps=5, wrong_steps=3, wrong_answers_with_slip=1,
                       answers_with_slip=2, wrong_step_share=0.6)


def test_compare():
    other = [dict(r) for r in ROWS[:3]] + [{"id": "e", "output": "", "prediction": "1", "correct": False}]
    other[0].update(prediction="6", correct=True)
    other[2].update(prediction="4")
    assert arith_slips.compare(ROWS, other) == {"matched": 3, "answers_changed": 2, "answers_changed_share": 2 / 3,
                                                "now_right": 0, "now_wrong": 1}


def test_command_line(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    b.write_text(json.dumps({"id": "a", "output": "", "prediction": "6", "correct": True}) + "\n")
    assert arith_slips.main([str(a), "--compare", str(b)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["wrong_steps"] == 3 and out["compare"]["answers_changed"] == 1 and out["compare"]["now_wrong"] == 1
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    assert arith_slips.main([str(tmp_path / "bad.jsonl")]) == 2
    assert "output" in capsys.readouterr().err
