"""Calculator decoding inside the real generation loop (default student, greedy): off changes
nothing, on forces the right values, rows intervene independently, batching does not matter,
and the option reaches `sample` / `evaluate` (metrics) and is refused by the vLLM engine."""

from __future__ import annotations

import re

import pytest

from mathdistill.io import InputError
from mathdistill.student.calculator import calculation
from mathdistill.student.generate import generate

SHOTS = "Q: What is 3 * 4?\nA: 3 * 4 = 12.\n\nQ: What is 25 + 17?\nA: 25 + 17 = 42.\n\n"
QUESTIONS = ["What is 17 * 23?", "What is 1,200 / 16?", "Who wrote Hamlet?", "What is 3.5 * 12.4?",
             "What is 987 - 123 + 45?"]
PROMPTS = [f"{SHOTS}Q: {q}\nA:" for q in QUESTIONS]
STOP = ["\n\n"]


def consistent(text: str) -> bool:
    """Every `=` after which the calculator would force a value is followed by that value."""
    for m in re.finditer("=", text):
        value = calculation(text[: m.end()])
        if value is not None and not text[m.end():].startswith(value):
            return False
    return True


@pytest.fixture(scope="module")
def runs(student):
    model, tok = student
    kw = dict(max_new_tokens=24, stop=STOP, progress=False)
    return {
        "default": generate(model, tok, PROMPTS, batch_size=4, **kw),
        "off": generate(model, tok, PROMPTS, batch_size=4, calculator=False, **kw),
        "on": generate(model, tok, PROMPTS, batch_size=4, calculator=True, **kw),
        "on1": generate(model, tok, PROMPTS, batch_size=1, calculator=True, **kw),
    }


@pytest.mark.slow
def test_off_is_byte_identical(runs):
    assert runs["off"] == runs["default"]
    assert all(g.interventions == [] for g in runs["off"])


@pytest.mark.slow
def test_on_forces_the_computed_values(runs):
    on, off = runs["on"], runs["off"]
    assert all(consistent(g.text) for g in on), [g.text for g in on]
    assert not all(consistent(g.text) for g in off), "the model makes no slip here: the test shows nothing"
    assert on[0].text.lstrip().startswith("17 * 23 = 391"), on[0].text
    assert on[3].text.lstrip().startswith("3.5 * 12.4 = 43.4"), on[3].text
    assert all(len(g.interventions) == 1 for g in on)
    assert sum(g.interventions[0] for g in on) >= 3
    for g_on, g_off in zip(on, off):  # a row without intervention is what it was without the calculator
        if g_on.interventions == [0]:
            assert g_on.text == g_off.text


@pytest.mark.slow
def test_rows_intervene_independently_of_batching(runs):
    assert runs["on"] == runs["on1"]


@pytest.mark.slow
def test_sample_and_evaluate_carry_the_counts(student, tmp_path):
    from mathdistill.data import Problem
    from mathdistill.eval import evaluate
    from mathdistill.student.sample import sample

    model, tok = student
    problems = [Problem(id=f"p{i}", question=q, answer="1", source="toy") for i, q in enumerate(QUESTIONS[:2])]
    kw = dict(prompts=PROMPTS[:2], max_new_tokens=24, stop=STOP, progress=False, engine="hf")
    off = evaluate(model, tok, problems, out_dir=tmp_path / "off", weights="w", **kw)
    on = evaluate(model, tok, problems, out_dir=tmp_path / "on", weights="w", calculator=True, **kw)
    assert "interventions" not in off.rows[0] and "interventions_per_answer" not in off.metrics
    assert on.metrics["calculator"] is True and on.metrics["interventions"] == sum(r["interventions"] for r in on.rows)
    assert on.metrics["interventions_per_answer"] == on.metrics["interventions"] / 2 > 0
    assert on.metrics["key"] != off.metrics["key"]
    again = evaluate(model, tok, problems, out_dir=tmp_path / "on", weights="w", calculator=True, **kw)
    assert again.metrics["reused"] == 2 and again.metrics["interventions"] == on.metrics["interventions"]
    res = sample(model, tok, problems, "cot", out_dir=tmp_path / "s", weights="w", calculator=True, **kw)
    assert [r["interventions"] for r in res.rows] == [[r["interventions"]] for r in on.rows]
    assert res.stats["interventions_per_answer"] == on.metrics["interventions_per_answer"]
    assert sample(model, tok, problems, "cot", out_dir=tmp_path / "s", weights="w", calculator=True,
                  **kw).stats["generated"] == 0  # resumed, counts included


def test_vllm_engine_refuses_the_calculator(monkeypatch):
    from mathdistill.student import sample as smp
    from mathdistill.student import vllm_engine

    monkeypatch.setattr(vllm_engine, "installed", lambda: True)
    with pytest.raises(InputError, match="calculator decoding is only available with engine hf"):
        smp.pick_engine("vllm", "smollm2-135m", calculator=True)
    assert smp.pick_engine("auto", "smollm2-135m", calculator=True) == "hf"


@pytest.mark.parametrize("flag,want", [([], False), (["--calculator"], True)])
def test_eval_command_passes_the_option(flag, want, data_dir, tmp_path, monkeypatch, capsys):
    """`mathdistill eval --calculator` reaches `evaluate` (model loading and evaluation replaced)."""
    import sys
    import types

    from mathdistill.cli import main

    seen = {}

    def fake_evaluate(model, tok, problems, **kw):
        seen.update(kw)
        metrics = dict(dataset="svamp", n=1, correct=0, accuracy=0.0, ci95=[0.0, 1.0], seconds=0.0)
        return types.SimpleNamespace(metrics=metrics, rows=[])

    monkeypatch.setattr("mathdistill.student.adapters.load_merged", lambda model, adapter: (None, None))
    monkeypatch.setattr("mathdistill.eval.evaluate", fake_evaluate)
    monkeypatch.setattr("mathdistill.eval.weights_identity", lambda model, adapter: {"model": "x"})
    argv = ["mathdistill", "eval", "--dataset", "svamp", "--limit", "1", "--data-dir", str(data_dir),
            "--out", str(tmp_path / "out"), "--no-progress", *flag]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None), capsys.readouterr().err
    assert seen["calculator"] is want
    assert seen["batch_size"] == 16  # no --batch-size, no GPU: the CPU default
