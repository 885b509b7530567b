"""Least-to-most: the problem broken into sub-questions, answered in order, then the answer.

    Sub-question 1: How many clips did Natalia sell in May?
    Answer 1: Half as many as in April: 48 / 2 = 24.
    Sub-question 2: ...
    The answer is 72.
"""

from __future__ import annotations

import re

from mathdistill.thoughts import exemplars as ex
from mathdistill.thoughts.base import Extracted, Thought
from mathdistill.thoughts.cot import answer_from_text
from mathdistill.thoughts.text import few_shot

# "Answer 1:" (this project's prompt) or "Answer to Sub-question 1:" (SIKeD's official prompt)
_STEP = re.compile(r"Sub[- ]?question\s*(\d+)\s*:\s*(.*?)\s*\n\s*Answer(?:\s+to\s+Sub[- ]?question)?\s*\1\s*:\s*(.*?)"
                   r"(?=\n\s*Sub[- ]?question|\n\s*The answer|\n\s*Final answer|\Z)", re.DOTALL | re.IGNORECASE)


def parse_steps(text: str) -> list[tuple[str, str]]:
    """[(sub-question, answer), ...] in order."""
    return [(m.group(2).strip(), m.group(3).strip()) for m in _STEP.finditer(text)]


class LeastToMost(Thought):
    name = "l2m"
    trigger = "[L2M]"
    instruction = ('Break the problem into sub-questions, answer them one by one, then write '
                   '"The answer is <number>".')
    system = ("You solve grade-school math word problems by least-to-most prompting: first reduce "
              "the problem to simpler sub-questions, then answer them in order, each answer using "
              "the previous ones. Write them as \"Sub-question k: ...\" / \"Answer k: ...\" lines and "
              'end with "The answer is <number>." (the number only).')

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        return few_shot(self.system, list(zip(ex.QUESTIONS, ex.L2M)), question.strip())

    def extract(self, rationale: str) -> Extracted:
        return answer_from_text(rationale)

    @classmethod
    def malformed(cls, text: str) -> str | None:
        """Least-to-most needs at least one sub-question with its answer; SIKeD's official code drops the
        samples without (`check_l2m_validity`), whatever their final answer."""
        return None if any(q and a for q, a in parse_steps(text or "")) else "no sub-question / answer pair"
