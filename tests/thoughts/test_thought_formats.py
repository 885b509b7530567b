"""The reasoning formats: registry, prompts, extraction, validation."""

from __future__ import annotations

import pytest

from mathdistill import thoughts
from mathdistill.data import Problem
from mathdistill.thoughts import exemplars as ex
from mathdistill.thoughts.keypoints import parse as parse_keypoints
from mathdistill.thoughts.l2m import parse_steps
from mathdistill.thoughts.pot import extract_code


def test_registry():
    assert thoughts.NAMES == ("cot", "pot", "eot", "l2m", "knowledge", "keypoints")
    tags = set()
    for name in thoughts.NAMES:
        t = thoughts.get(name)
        assert t.name == name and t.trigger and t.instruction
        assert t.gives_answer == (name in thoughts.ANSWER_NAMES)
        tags.add(t.trigger)
        prompt = t.student_prompt("What is 2 + 3?")
        assert prompt.startswith("What is 2 + 3?\n" + t.trigger) and len(prompt.splitlines()) == 2
        tagged = t.student_target("  body  ", tagged=True)
        assert thoughts.detect(tagged) == name and thoughts.strip_tag(tagged) == "body"
        assert t.student_target(" body ") == "body"
    assert len(tags) == len(thoughts.NAMES)
    assert thoughts.detect("no tag here") is None
    with pytest.raises(ValueError, match="unknown thought"):
        thoughts.get("tot")


def test_tags_come_from_the_classes():
    assert not hasattr(thoughts, "TRIGGERS")  # one source: each class's `trigger`
    for name in thoughts.NAMES:
        cls = thoughts.thought_class(name)
        assert cls.name == name
        assert thoughts.detect(f"  {cls.trigger.upper()} 2 + 3") == name  # leading space, any case
        assert thoughts.strip_tag(f"{cls.trigger}\nans = 5") == "ans = 5"
    assert thoughts.strip_tag("ans = 5 [PoT]") == "ans = 5 [PoT]"  # only a leading tag counts


def test_teacher_context_is_the_formats_own():
    solution = "She sold 48/2=<<48/2=24>>24 clips.\n#### 24"
    gsm8k = Problem("g", "How many clips?", "24", "gsm8k", {"solution": solution})
    svamp = Problem("s", "How many clips?", "24", "svamp", {})
    assert thoughts.get("knowledge").teacher_context(gsm8k) == {"rationale": solution}
    assert thoughts.get("knowledge").teacher_context(svamp) is None
    for name in set(thoughts.NAMES) - {"knowledge"}:
        assert thoughts.get(name).teacher_context(gsm8k) is None, name


@pytest.mark.parametrize("name", thoughts.NAMES)
def test_teacher_messages(name):
    t = thoughts.get(name)
    ctx = {"rationale": "48 / 2 = 24. The answer is 24."} if name == "knowledge" else None
    msgs = t.teacher_messages("How many apples?", ctx)
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
    assert "How many apples?" in msgs[-1]["content"]
    roles = [m["role"] for m in msgs[1:-1]]
    assert roles == ["user", "assistant"] * 4
    if name == "knowledge":
        assert "48 / 2 = 24" in msgs[-1]["content"]
        with pytest.raises(ValueError, match="rationale"):
            t.teacher_messages("How many apples?")


def test_keypoints_pot_variant():
    msgs = thoughts.get("keypoints").teacher_messages("Q?", {"solution": "pot"})
    assert "ans = " in msgs[2]["content"] and "Key points:" in msgs[2]["content"]


@pytest.mark.parametrize("name,texts", [("cot", ex.COT), ("pot", ex.POT), ("eot", ex.EOT), ("l2m", ex.L2M)])
def test_exemplars_score_correct(name, texts):
    """Our own few-shot exemplars must give the gold answer in their format (and not a wrong one)."""
    t = thoughts.get(name)
    assert all(s.correct for s in t.score_batch(texts, ex.ANSWERS)), t.score_batch(texts, ex.ANSWERS)
    assert not any(s.correct for s in t.score_batch(texts, ["999"] * len(texts)))


def test_knowledge_and_keypoints_exemplars_valid():
    k, kp = thoughts.get("knowledge"), thoughts.get("keypoints")
    for q, a, text, points in zip(ex.QUESTIONS, ex.ANSWERS, ex.KNOWLEDGE, ex.KEYPOINTS):
        assert k.validate(text, a, q) is None
        assert kp.validate(points, a, q) is None
    scored = kp.score_batch(ex.KEYPOINTS, ex.ANSWERS, ex.QUESTIONS)
    assert [s.prediction for s in scored] == ex.ANSWERS and all(s.correct for s in scored)
    assert all(s.correct for s in k.score_batch(ex.KNOWLEDGE, ex.ANSWERS, ex.QUESTIONS))


def test_knowledge_validation():
    k = thoughts.get("knowledge")
    q = "Tom has 3 bags of 4 apples. How many apples does he have?"
    assert k.validate("", "12", q) == "empty knowledge"
    assert k.validate("Knowledge:", "12", q) == "empty knowledge"
    good = "Knowledge:\n- The total of equal groups is the number of groups times the group size."
    assert k.validate(good, "12", q) is None
    assert k.validate(good + "\n- Here that makes 12 apples.", "12", q) == "knowledge states the answer"
    assert k.validate(good + "\nThe answer is twelve.", "12", q) == "knowledge states the answer"
    # a number that is in the question is not a leak, nor is a list marker
    assert k.validate(good + "\n- Multiply the 3 bags by 4.", "3", q) is None
    assert k.validate("Knowledge:\n1. Groups times group size gives the total.", "1", q) is None
    assert k.validate(good, "#### 12") is None and not k.score(good + " 12", "12", q).correct


def test_keypoints_parse_and_validate():
    q = "A pen costs $2 and a book costs $5. How much do 3 pens and a book cost?"
    text = ("Core question: How much do 3 pens and a book cost?\nKey points:\n- A pen costs $2.\n"
            "- A book costs $5.\nSolution:\n3 * 2 = 6; 6 + 5 = 11.\nThe answer is 11.")
    p = parse_keypoints(text)
    assert p["core_question"].startswith("How much") and p["key_points"] == ["A pen costs $2.", "A book costs $5."]
    kp = thoughts.get("keypoints")
    assert kp.validate(text, "11", q) is None
    assert kp.validate(text, "12", q).startswith("wrong answer")
    assert kp.validate(text.replace("- A book costs $5.", "- Together they cost $11."), "11", q) == "key points state the answer"
    assert kp.validate("Solution: 11", "11", q) == "no core question"
    assert kp.validate("Core question: x?\nKey points:\nSolution: 11", "11", q) == "no key points"
    pot = text.split("Solution:")[0] + "Solution:\n```python\nans = 3 * 2 + 5\n```"
    s = kp.score(pot, "11", q)
    assert s.correct and s.prediction == "11"


@pytest.mark.parametrize("text,answer", [
    ("So 3 + 4 = 7.\nThe answer is 7.", "7"),
    ("blah\n#### 1,250", "1250"),
    ("We get \\boxed{18}.", "18"),
    ("Q: ...\nA: 42", "42"),
    ("First 5, then 6, finally 11 apples", "11"),
])
def test_cot_extraction(text, answer):
    assert thoughts.get("cot").extract(text).prediction == answer
    assert thoughts.get("l2m").extract(text).prediction == answer


def test_cot_no_answer():
    e = thoughts.get("cot").extract("I do not know.")
    assert e.prediction is None and e.error


def test_l2m_steps():
    steps = parse_steps(ex.L2M[2])
    assert len(steps) == 4 and steps[0][0] == "How much money does Betty have?" and steps[-1][1].startswith("100 - 95")


@pytest.mark.parametrize("raw,code", [
    ("```python\nx = 2\nans = x * 3\n```\nThe answer is 6.", "x = 2\nans = x * 3"),
    ("Here is the program:\nx = 2\nans = x * 3\nThe answer is 6.", "x = 2\nans = x * 3"),
    (">>> x = 2\n>>> ans = x * 3", "x = 2\nans = x * 3"),
    ("[PoT]\nx = 2\nans = x * 3", "x = 2\nans = x * 3"),  # a self-chosen format's tag
    ("```python\nx = 2\nans = x * 3", "x = 2\nans = x * 3"),  # truncated generation
    ("Sure!\n```py\na = 1\n```\nand\n```python\nans = a + 1\n```\n```output\n2\n```", "a = 1\nans = a + 1"),
])
def test_extract_code(raw, code):
    assert extract_code(raw) == code


def test_pot_conventions_and_errors():
    pot = thoughts.get("pot")
    cases = [
        ("ans = 6 * 7", "42", None),
        ("answer = 10 / 4", "2.5", None),
        ("result = [5]", "5", None),
        ("def solution():\n    a = 3\n    return a * a\nprint('junk 1')", "9", None),
        ("import sympy\nx = sympy.Symbol('x')\nans = sympy.solve(2*x - 8, x)", "4", None),
        ("import math\nprint(f'The total is {math.sqrt(16):.0f} apples')", "4", None),
        ("from fractions import Fraction\nans = Fraction(3, 4) * 4", "3", None),
        ("import numpy as np\nans = np.float64(7.0)", "7", None),
        ("ans = 0.1 + 0.2", "0.3", None),
        ("def main():\n    print(5)\nif __name__ == '__main__':\n    main()", "5", None),
        ("x = (1", None, "SyntaxError"),
        ("x = 5", None, "no answer"),
        ("ans = 1 / 0", None, "ZeroDivisionError"),
        ("ans = None", None, "None"),
        ("", None, "empty"),
    ]
    out = pot.extract_batch([c for c, _, _ in cases])
    for (code, value, err), e in zip(cases, out):
        assert e.prediction == value, (code, e)
        assert (e.error is None) if err is None else (err in (e.error or "")), (code, e)
