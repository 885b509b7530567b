"""General solving knowledge (LoRID): what one needs to know to solve the problem, not the solution.

The teacher sees the question *and* a correct rationale (`context={"rationale": ...}`) and
writes the general knowledge behind it:

    Knowledge:
    - "Half as many" as a quantity means that quantity divided by 2.
    - A total over several periods is the sum of the amounts in each period.

A student learns question -> knowledge (`student_prompt`); a reasoning student then solves with
it (`reasoning_prompt`). Knowledge is an input, not an answer: `validate` checks that it is
non-empty and does not state the problem's answer; `score_batch` marks correct = valid.

Recorded plan-only rationales ("Calculate X by ..., then ... The answer is N") can stand in for a
teacher's knowledge offline: `Knowledge.from_recorded(plan)` cuts the final answer sentence and
lists the rest one sentence per item (problem-specific plans, not general rules: a report must say
so). `question_numbers(rows)` measures how specific knowledge is: the share of its items that quote
a number from the question (general rules quote none).
"""

from __future__ import annotations

import re
from typing import Sequence

from mathdistill.thoughts import exemplars as ex
from mathdistill.thoughts.base import Extracted, Scored, Thought, gold_answer
from mathdistill.thoughts.text import few_shot, leaks_answer, numbers_in

MIN_CHARS = 20
_ANSWER_SENTENCE = re.compile(r"(?:\bso,?\s+)?\bthe\s+(?:final\s+)?answer\s+is\b", re.IGNORECASE)


def strip_answer(text: str) -> str:
    """`text` without its final "The answer is N" sentence (and whatever follows it); unchanged
    when it has none."""
    found = list(_ANSWER_SENTENCE.finditer(text or ""))
    return (text[: found[-1].start()] if found else text or "").strip()


def sentences(text: str) -> list[str]:
    """The sentences of `text`: split after . ! ? followed by a space, or directly by a capital
    letter ("hours).The"); decimals such as 0.5 and titles such as "Mrs." stay whole. Trailing commas
    are dropped."""
    titles = r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)"  # "Mrs. Snyder" is one sentence
    parts = re.split(rf"{titles}(?:(?<=[.!?])\s+|(?<=[a-z0-9)][.!?])(?=[A-Z]))|\n+", text.strip())
    return [" ".join(p.split()).rstrip(",;: ") for p in parts if p.strip(" ,;:")]


def parse_items(text: str) -> list[str]:
    """The knowledge items: bullet / numbered lines after an optional "Knowledge:" header."""
    body = re.sub(r"^\s*\**knowledge\**\s*:?\s*", "", text.strip(), flags=re.IGNORECASE)
    items = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", ln).strip() for ln in body.splitlines()]
    return [it for it in items if it]


class Knowledge(Thought):
    name = "knowledge"
    trigger = "[Knowledge]"
    instruction = "List the general knowledge needed to solve this problem, without solving it."
    gives_answer = False
    evaluable = False
    system = ("You are given a math word problem and a correct solution. Write the general "
              "knowledge a student needs to solve problems like it: definitions, relations between "
              "quantities and solving strategies, as a short bullet list under \"Knowledge:\". Do "
              "not solve the problem, do not compute anything, and never state its answer.")

    @staticmethod
    def _user(question: str, rationale: str) -> str:
        return f"Problem: {question.strip()}\nSolution: {rationale.strip()}"

    @staticmethod
    def from_recorded(text: str) -> str:
        """A recorded plan-only rationale as knowledge: its final answer sentence cut, one item per
        remaining sentence under "Knowledge:" ("" when nothing is left; `validate` then refuses it)."""
        items = sentences(strip_answer(text))
        return "Knowledge:\n" + "\n".join(f"- {it}" for it in items) if items else ""

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        if not context or not context.get("rationale"):
            raise ValueError('knowledge needs context={"rationale": <a correct solution>}')
        shots = [(self._user(q, r), k) for q, r, k in zip(ex.QUESTIONS, ex.COT, ex.KNOWLEDGE)]
        return few_shot(self.system, shots, self._user(question, context["rationale"]))

    def teacher_context(self, problem) -> dict | None:
        """The problem's gold solution (GSM8K: `extra["solution"]`) as the rationale to generalise."""
        solution = (problem.extra or {}).get("solution")
        return {"rationale": solution} if solution else None

    def reasoning_prompt(self, question: str, knowledge: str, thought: str = "cot") -> str:
        """What a reasoning student sees: the question, the knowledge, then the format's trigger."""
        from mathdistill.thoughts import get

        t = get(thought)
        return f"{question.strip()}\n{knowledge.strip()}\n{t.trigger} {t.instruction}"

    def extract(self, rationale: str) -> Extracted:
        return Extracted(None, "knowledge gives no answer")

    def validate(self, text: str, gold: str, question: str | None = None) -> str | None:
        if not text or len(text.strip()) < MIN_CHARS or not parse_items(text):
            return "empty knowledge"
        if leaks_answer(text, gold_answer(gold), question):
            return "knowledge states the answer"
        return None

    def score_batch(self, rationales: Sequence[str], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[Scored]:
        questions = questions or [None] * len(rationales)
        out = []
        for text, gold, q in zip(rationales, golds, questions):
            err = self.validate(text, gold, q)
            out.append(Scored(None, err is None, err))
        return out


def quotes_question(item: str, question: str) -> bool:
    """Whether a knowledge item quotes a number that appears in the question (a sign that it is
    about this problem rather than a general rule)."""
    asked = set(numbers_in(question))
    return any(v in asked for v in numbers_in(item))


def question_numbers(rows) -> dict:
    """Over the kept knowledge of teach rows (`question`, `text`, `kept`): how many items there are,
    how many quote a number from their question, and that share."""
    items = [(it, r["question"]) for r in rows if r.get("kept") for it in parse_items(r["text"] or "")]
    quoting = sum(quotes_question(it, q) for it, q in items)
    return {"items": len(items), "quoting": quoting, "share": round(quoting / len(items), 4) if items else None}
