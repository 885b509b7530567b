"""Key points then solution (KPDD): core question, problem-solving key points, step-by-step solution.

KPDD splits solving into core-question extraction, problem-solving information extraction and
a step-by-step solution; the student learns to write all three in one pass:

    Core question: How many clips did Natalia sell in April and May together?
    Key points:
    - Natalia sold 48 clips in April.
    - In May she sold half as many clips as in April.
    Solution:
    In May she sold 48 / 2 = 24 clips. ... The answer is 72.

The solution is CoT (KPDD-CoT) or a program (KPDD-PoT): `KeyPoints(solution="pot")` or
`teacher_messages(q, context={"solution": "pot"})`. `parse` splits the parts. The key points
are an input to the solution, not an answer: `validate` checks that the core question and key
points are present and do not state the answer, and that the solution is there and correct
(`KeyPoints(solution=None)`: key points alone, no solution asked for); `score_batch` marks
correct = valid and reports the solution's answer as the prediction.

Offline, a recorded plan-only rationale stands in for the key points:
`KeyPoints.from_recorded(plan, question)` is the question's last sentence as the core question and
the plan's sentences, final answer sentence cut, as key points; `compose(key_points, solution)`
appends a verified solution.
"""

from __future__ import annotations

import re
from typing import Sequence

from mathdistill.thoughts import exemplars as ex
from mathdistill.thoughts.base import Extracted, Scored, Thought, gold_answer
from mathdistill.thoughts.text import few_shot, leaks_answer

_SECTIONS = re.compile(r"^\s*\**(core question|key points|solution)\**\s*:\s*", re.IGNORECASE | re.MULTILINE)


def parse(text: str) -> dict:
    """{"core_question": str, "key_points": [str], "solution": str} (missing parts empty)."""
    parts = {"core question": "", "key points": "", "solution": ""}
    matches = list(_SECTIONS.finditer(text or ""))
    for m, nxt in zip(matches, matches[1:] + [None]):
        parts[m.group(1).lower()] = text[m.end(): nxt.start() if nxt else len(text)].strip()
    points = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", ln).strip() for ln in parts["key points"].splitlines()]
    return {"core_question": parts["core question"], "key_points": [p for p in points if p],
            "solution": parts["solution"]}


def core_question(question: str) -> str:
    """The sentence of `question` that asks (its last one ending in "?", else its last sentence)."""
    from mathdistill.thoughts.knowledge import sentences

    parts = sentences(question)
    asking = [p for p in parts if p.endswith("?")]
    return (asking or parts or [question.strip()])[-1]


class KeyPoints(Thought):
    name = "keypoints"
    trigger = "[KeyPoints]"
    instruction = "State the core question and the key points, then solve the problem step by step."
    gives_answer = False  # an input to its solution part, which evaluation scores

    def __init__(self, solution: str | None = "cot"):
        if solution not in ("cot", "pot", None):
            raise ValueError("key points take a cot or pot solution (or None: key points alone)")
        self.solution = solution

    @staticmethod
    def from_recorded(text: str, question: str) -> str:
        """A recorded plan-only rationale as key points: the question's last sentence as the core
        question, the plan's sentences (final answer sentence cut) as the points; no solution."""
        from mathdistill.thoughts.knowledge import sentences, strip_answer

        points = "".join(f"\n- {s}" for s in sentences(strip_answer(text)))
        return f"Core question: {core_question(question)}\nKey points:{points}"

    @staticmethod
    def compose(key_points: str, solution: str) -> str:
        """Key points followed by a solution part."""
        return f"{key_points.strip()}\nSolution:\n{solution.strip()}"

    def _system(self, solution: str) -> str:
        how = ('solve it step by step and end with "The answer is <number>."' if solution == "cot" else
               "write a Python program that stores the answer in `ans` (code only)")
        return ("You solve grade-school math word problems in three parts. \"Core question:\" the "
                "question that must be answered, in one sentence. \"Key points:\" a bullet list of "
                "the facts and relations from the problem needed to answer it, without computing "
                f"anything or giving the answer. \"Solution:\" using the key points, {how}.")

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        solution = (context or {}).get("solution", self.solution or "cot")
        sols = ex.COT if solution == "cot" else ex.POT
        shots = [(q, k.split("Solution:\n")[0] + "Solution:\n" + s)
                 for q, k, s in zip(ex.QUESTIONS, ex.KEYPOINTS, sols)]
        return few_shot(self._system(solution), shots, question.strip())

    def _solver(self, solution_text: str):
        from mathdistill.thoughts import get

        code_like = re.search(r"^\s*(ans|answer|result)\s*=|^\s*def |```python", solution_text, re.MULTILINE)
        return get("pot" if self.solution == "pot" or code_like else "cot")

    def extract(self, rationale: str) -> Extracted:
        return self.extract_batch([rationale])[0]

    def extract_batch(self, rationales: Sequence[str]) -> list[Extracted]:
        """The answers of the solution parts (PoT solutions run in the sandbox, in parallel)."""
        sols = [parse(r)["solution"] for r in rationales]
        out = [Extracted(None, "no solution part") for _ in rationales]
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(sols):
            if s:
                groups.setdefault(self._solver(s).name, []).append(i)
        from mathdistill.thoughts import get

        for name, idx in groups.items():
            for i, e in zip(idx, get(name).extract_batch([sols[i] for i in idx])):
                out[i] = e
        return out

    def _structure_error(self, text: str, gold: str, question: str | None) -> str | None:
        p = parse(text)
        if not p["core_question"]:
            return "no core question"
        if not p["key_points"]:
            return "no key points"
        if leaks_answer(p["core_question"] + "\n" + "\n".join(p["key_points"]), gold, question):
            return "key points state the answer"
        return None

    def score_batch(self, rationales: Sequence[str], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[Scored]:
        from mathdistill.answers import is_equivalent

        questions = questions or [None] * len(rationales)
        golds = [gold_answer(g) for g in golds]
        out = []
        for text, ex_, gold, q in zip(rationales, self.extract_batch(rationales), golds, questions):
            err = self._structure_error(text, gold, q)
            if err is None and self.solution is not None and not parse(text)["solution"]:
                err = "no solution part"
            elif err is None and parse(text)["solution"]:
                if ex_.prediction is None:
                    err = ex_.error or "the solution gives no answer"
                elif not is_equivalent(ex_.prediction, gold):
                    err = f"wrong answer: {ex_.prediction} (gold {gold})"
            out.append(Scored(ex_.prediction, err is None, err))
        return out

    def validate(self, text: str, gold: str, question: str | None = None) -> str | None:
        return self.score_batch([text], [gold], [question])[0].error
