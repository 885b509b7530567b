"""`mathdistill score` (contract 5 of DESIGN.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ROWS = [
    {"question": "q1", "answer": "Natalia sold 48/2 = <<48/2=24>>24.\n#### 72", "rationale": "ans = 48 + 48 / 2", "id": 1},
    {"question": "q2", "answer": 5, "rationale": "```python\nprint(2 + 3)\n```\nThat prints 5."},
    {"question": "q3", "answer": "5", "rationale": "x = (1"},
    {"question": "q4", "answer": "1,000", "rationale": "def solution():\n    return 10 ** 3"},
]


def run(*args):
    return subprocess.run([sys.executable, "-m", "mathdistill.cli", "score", *args],
                          capture_output=True, text=True, timeout=120)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_score_pot(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write(inp, ROWS)
    r = run("--thought", "pot", "--input", str(inp), "--output", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["n"] == 4 and summary["correct"] == 3 and summary["errors"] == 1
    assert summary["accuracy"] == pytest.approx(0.75)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for row, src in zip(rows, ROWS):
        assert {k: row[k] for k in src} == src  # input rows kept as they were
    assert [r["prediction"] for r in rows] == ["72", "5", None, "1000"]
    assert [r["correct"] for r in rows] == [True, True, False, True]
    assert rows[2]["error"].startswith("SyntaxError") and rows[0]["error"] is None


def test_score_cot_and_eot(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write(inp, [{"question": "q", "answer": 72, "rationale": "48/2 = 24, 48 + 24 = 72. The answer is 72."},
                {"question": "q", "answer": 7, "rationale": "The answer is 8."}])
    r = run("--thought", "cot", "--input", str(inp), "--output", str(out))
    assert json.loads(r.stdout.splitlines()[-1])["correct"] == 1
    write(inp, [{"question": "q", "answer": 4, "rationale": "x + 3 = 7\nans = x"}])
    r = run("--thought", "eot", "--input", str(inp), "--output", str(out))
    assert json.loads(r.stdout.splitlines()[-1]) | {"output": None} == {
        "n": 1, "correct": 1, "accuracy": 1.0, "errors": 0, "thought": "eot", "output": None}


@pytest.mark.parametrize("rows,message", [
    ([{"question": "q", "answer": 5}], "in.jsonl:1: missing key 'rationale'"),
    ([ROWS[0], {"question": "q", "answer": None, "rationale": "ans = 1"}], "in.jsonl:2: key 'answer'"),
    ([{"question": "q", "answer": 1, "rationale": 5}], "in.jsonl:1: key 'rationale' must be a string"),
])
def test_bad_input(tmp_path, rows, message):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write(inp, rows)
    r = run("--thought", "pot", "--input", str(inp), "--output", str(out))
    assert r.returncode == 2 and message in r.stderr and not out.exists()


def test_bad_thought(tmp_path):
    inp = tmp_path / "in.jsonl"
    write(inp, ROWS)
    r = run("--thought", "tot", "--input", str(inp), "--output", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and "unknown format" in r.stderr
