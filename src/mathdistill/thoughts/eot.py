"""Equation of thought: equations (unknowns allowed) solved as a system by sympy.

See `eot_solver` for the syntax. Solving runs in the sandbox: parsing is a whitelist (no
eval), and the sandbox's timeout bounds sympy on pathological systems.
"""

from __future__ import annotations

from typing import Sequence

from mathdistill.sandbox import Limits, run
from mathdistill.thoughts import exemplars as ex
from mathdistill.thoughts.base import Extracted, Thought
from mathdistill.thoughts.text import few_shot

MAX_CHARS = 20_000


class EquationOfThought(Thought):
    name = "eot"
    trigger = "[EoT]"
    instruction = "Write equations, one per line (name = expression), with the answer in `ans`."
    executes = True
    offline_teacher = {"kind": "reference"}  # offline: the GSM8K gold solution converted, verified in the sandbox
    system = ("You solve grade-school math word problems by writing a system of equations. Write one "
              "equation per line in the form `expression = expression`, using descriptive variable "
              "names; unknown quantities may appear on either side. Put a `%` comment before an "
              "equation to say what it states. The variable `ans` must be the final answer. Do not "
              "solve the equations yourself and write nothing else.")

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits(timeout=10.0)

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        return few_shot(self.system, list(zip(ex.QUESTIONS, ex.EOT)), question.strip())

    def reference(self, problem) -> str | None:
        """The gold solution's steps as equations, each after its sentence as a `%` comment."""
        from mathdistill.thoughts.reference import assignments

        return assignments(problem, comment="%")

    def extract(self, rationale: str) -> Extracted:
        return self.extract_batch([rationale])[0]

    def extract_batch(self, rationales: Sequence[str]) -> list[Extracted]:
        out = [Extracted(None, "empty" if not (r or "").strip() else
                         "too long" if len(r) > MAX_CHARS else None) for r in rationales]
        todo = [i for i, e in enumerate(out) if e.error is None]
        for i, res in zip(todo, run("eot", [rationales[i] for i in todo], self.limits)):
            out[i] = Extracted(res.value, res.error)
        return out
