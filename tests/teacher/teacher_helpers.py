"""Helpers for the teacher tests: synthetic problems the fake server can answer, a stand-in cot."""

from __future__ import annotations

import re

from mathdistill.answers import extract_answer
from mathdistill.data import Problem
from mathdistill.thoughts.base import Extracted, Thought


def problems(n: int) -> list[Problem]:
    """n synthetic problems; none's question is a substring of another's."""
    return [Problem(f"p{i}", f"Problem {i}: what is {i} plus 4?", str(i + 4), "synthetic") for i in range(n)]


def index_of(body: dict) -> int:
    """Which synthetic problem a request is about (the last one its user message names)."""
    user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    return int(re.findall(r"Problem (\d+): what is", user)[-1])


def solve(body: dict) -> str:
    """A correct chain of thought for the synthetic problem in `body`."""
    i = index_of(body)
    return f"We add {i} and 4, which gives {i + 4}. The answer is {i + 4}"


class LocalCot(Thought):  # TEMPORARY until mathdistill.thoughts lands
    name = "cot"

    def teacher_messages(self, question, context=None):
        return [{"role": "system", "content": "Solve step by step; end with 'The answer is N'."}, {"role": "user", "content": question}]

    def extract(self, rationale):
        return Extracted(extract_answer(rationale))
