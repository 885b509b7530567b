"""Chain of thought: natural-language steps ending "The answer is N"."""

from __future__ import annotations

from mathdistill.answers import extract_answer
from mathdistill.thoughts import exemplars as ex
from mathdistill.thoughts.base import Extracted, Thought
from mathdistill.thoughts.text import few_shot


def answer_from_text(text: str) -> Extracted:
    pred = extract_answer(text)
    return Extracted(pred, None if pred is not None else "no answer found in the text")


class CoT(Thought):
    name = "cot"
    trigger = "[CoT]"
    instruction = 'Think step by step, then finish with "The answer is <number>".'
    system = ("You solve grade-school math word problems. Reason step by step in short sentences, "
              "writing each calculation explicitly, and end with a final line of the form "
              '"The answer is <number>." (the number only, no units).')

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        return few_shot(self.system, list(zip(ex.QUESTIONS, ex.COT)), question.strip())

    def reference(self, problem) -> str | None:
        """The gold solution's sentences without calculator notes, then "The answer is N."."""
        from mathdistill.thoughts.reference import solution_sentences

        lines = solution_sentences(problem)
        return None if lines is None else "\n".join(lines) + f"\nThe answer is {problem.answer}."

    def extract(self, rationale: str) -> Extracted:
        return answer_from_text(rationale)
