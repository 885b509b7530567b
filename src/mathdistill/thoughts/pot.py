"""Program of thought: Python that computes the answer, executed in the sandbox.

The program may store the answer in `ans` / `answer` / `result`, define `solution()`
returning it, or print it. Student output is cleaned first: ```python fences, a leading
"Here is the program:" line, trailing chatter ("The answer is 5.") and `>>>` prompts are
removed (`extract_code`).
"""

from __future__ import annotations

import re
from typing import Sequence

from mathdistill.sandbox import Limits, run_python
from mathdistill.thoughts import exemplars as ex
from mathdistill.thoughts.base import Extracted, Thought
from mathdistill.thoughts.text import few_shot, strip_fences

MAX_CHARS = 50_000
_CODEISH = re.compile(r"[=()\[\]{}:]|^\s*(import|from|def|return|print|for|while|if|elif|else|try|except|with|class)\b")


def _looks_like_prose(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith("#") and not _CODEISH.search(s.split("#")[0]) or (
        bool(re.match(r"^[A-Z][a-z]+(\s+\w+){2,}.*[.:!?]$", s)) and " = " not in s)


def extract_code(text: str) -> str:
    """The program in a model's output: fenced blocks if any, minus prose lines at either end
    (and minus a leading format tag such as "[PoT]", written by self-choosing students)."""
    from mathdistill.thoughts import strip_tag

    code = strip_fences(strip_tag(text), langs=("", "python", "py", "python3"))
    lines = [re.sub(r"^(>>>|\.\.\.) ?", "", ln) for ln in code.splitlines()]
    for _ in range(len(lines)):
        try:
            compile("\n".join(lines), "<program>", "exec")
            break
        except SyntaxError as e:
            i = (e.lineno or 1) - 1
            if 0 <= i < len(lines) and _looks_like_prose(lines[i]):
                if i >= len(lines) - 1 or all(_looks_like_prose(x) or not x.strip() for x in lines[i:]):
                    lines = lines[:i]  # trailing chatter
                else:
                    del lines[i]
                continue
            break
        except (ValueError, RecursionError, MemoryError, OverflowError):
            break
    return "\n".join(lines).strip("\n")


class ProgramOfThought(Thought):
    name = "pot"
    trigger = "[PoT]"
    instruction = "Write a Python program that computes the answer and stores it in `ans`."
    executes = True
    offline_teacher = {"kind": "reference"}  # offline: the GSM8K gold solution converted, verified in the sandbox
    system = ("You solve grade-school math word problems by writing a short Python program. Use "
              "descriptive variable names for the quantities in the problem, compute step by step, "
              "and store the final numeric answer in a variable named `ans`. Write only the code: "
              "no explanations, no printing, no markdown.")

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits(timeout=5.0)

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        return few_shot(self.system, list(zip(ex.QUESTIONS, ex.POT)), question.strip())

    def reference(self, problem) -> str | None:
        """The gold solution's steps as assignments, each after its sentence as a `#` comment."""
        from mathdistill.thoughts.reference import assignments

        return assignments(problem, comment="#")

    def extract(self, rationale: str) -> Extracted:
        return self.extract_batch([rationale])[0]

    def extract_batch(self, rationales: Sequence[str]) -> list[Extracted]:
        codes, out = [], []
        for r in rationales:
            code = extract_code(r or "")
            out.append(Extracted(None, "empty program" if not code.strip() else
                                 "program too long" if len(code) > MAX_CHARS else None))
            codes.append(code)
        todo = [i for i, e in enumerate(out) if e.error is None]
        for i, res in zip(todo, run_python([codes[i] for i in todo], self.limits)):
            out[i] = Extracted(res.value, res.error if res.error or res.value is not None else "no answer")
        return out
