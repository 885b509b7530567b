"""Helpers for the teacher tests: synthetic problems the fake server can answer."""

from __future__ import annotations

import re

from mathdistill.data import Problem


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

