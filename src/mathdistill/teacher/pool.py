"""The pool teacher: an offline, clearly labelled SIMULATION of FDD's problem generation.

There is no strong live teacher offline. FDD asks one for "a harder variation of this easy
problem" and "a new problem like this hard one"; the pool teacher instead draws problems that
already exist from a pool the student never trains on until they are drawn (GSM8K train after the
seed problems):

    pool = PoolTeacher(pool_problems)
    draws = pool.draw(problems, easy={"gsm8k-train-3"}, n=1, exclude=drawn_before)

- a hard problem gets the `n` pool problems most similar to it (TF-IDF cosine over words,
  `mathdistill.data.tfidf`);
- an easy one gets the `n` most similar pool problems whose gold solution has more steps (lines
  before `####`) than its own: the closest "more complex variation" the pool holds.

Each pool problem is drawn at most once (across calls too, through `exclude`). Their labels are
the pool's gold answers; their rationales come from the recorded teachers (Llama-3-70B and Gemini
CoT, verified against the gold answer) or the gold conversions for PoT/EoT, through the usual
`collect`. Every report of a run that used it says so (`DESCRIPTION`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Collection, Sequence

import numpy as np

from mathdistill.data import Problem
from mathdistill.data.tfidf import TfIdf
from mathdistill.io import InputError

__all__ = ["PoolTeacher", "Draw", "solution_steps", "DESCRIPTION"]

DESCRIPTION = ("pool teacher (offline SIMULATION of FDD's problem generation): instead of teacher-written "
               "problems, held-back GSM8K train problems are drawn by TF-IDF similarity (hard problems: the most "
               "similar; easy ones: a similar one with more solution steps); their labels are the pool's gold "
               "answers and their rationales the recorded teachers' that verify against them")


def solution_steps(problem: Problem) -> int:
    """The number of steps (lines before `####`) of a problem's GSM8K gold solution."""
    from mathdistill.thoughts.reference import solution_lines

    return len(solution_lines(problem))


@dataclass
class Draw:
    seed: str  # the problem it was drawn for
    kind: str  # "harder" (for an easy problem) or "similar" (for a hard one)
    problem: Problem  # the pool problem, with its gold answer
    similarity: float
    seed_steps: int
    steps: int

    def to_dict(self) -> dict:
        return {**asdict(self), "problem": self.problem.to_dict()}


class PoolTeacher:
    """Draws pool problems for easy and hard problems (see the module docstring)."""

    def __init__(self, pool: Sequence[Problem], ngrams: tuple[int, int] = (1, 1)):
        self.pool = list(pool)
        if not self.pool:
            raise InputError("the pool teacher needs a pool of problems (none left after the seed problems)")
        self.steps = np.array([solution_steps(p) for p in self.pool])
        self.index = TfIdf([p.question for p in self.pool], ngrams)

    def draw(self, problems: Sequence[Problem], easy: Collection[str], n: int = 1,
             exclude: Collection[str] = ()) -> list[Draw]:
        """Up to `n` pool problems for each of `problems`, in their order: for one whose id is in
        `easy`, the most similar with more solution steps; for the others, the most similar. Pool
        problems with an id in `exclude` or drawn earlier in this call are not drawn."""
        if n < 1:
            raise InputError(f"the pool teacher draws n >= 1 problems per problem (got {n})")
        problems = list(problems)
        exclude = set(exclude)
        taken = np.array([p.id in exclude for p in self.pool])
        out = []
        for start, block in self.index.blocks([p.question for p in problems]):
            for j, sims in enumerate(block):
                seed = problems[start + j]
                harder = seed.id in easy
                seed_steps = solution_steps(seed)
                allowed = ~taken & (self.steps > seed_steps) if harder else ~taken
                order = np.argsort(-np.where(allowed, sims, -1.0), kind="stable")[:n]
                for k in order[allowed[order]]:
                    taken[k] = True
                    out.append(Draw(seed.id, "harder" if harder else "similar", self.pool[k],
                                    round(float(sims[k]), 4), seed_steps, int(self.steps[k])))
        return out
