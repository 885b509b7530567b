"""The interface every reasoning format implements.

A *thought* (reasoning format) knows three things:
  1. how to ask the teacher for it      -> `teacher_messages`
  2. how the student is prompted / what it learns to write -> `student_prompt`, `student_target`
  3. how to get an answer out of a rationale -> `extract`, `score`, `score_batch`
Formats that are inputs to later steps rather than answers (knowledge, key points) have
`gives_answer = False` and use `validate` instead of an answer check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence


@dataclass
class Extracted:
    prediction: str | None
    error: str | None = None


@dataclass
class Scored:
    prediction: str | None
    correct: bool
    error: str | None = None

    def as_dict(self) -> dict:
        return {"prediction": self.prediction, "correct": self.correct, "error": self.error}


class Thought(ABC):
    name: str = ""
    #: short tag that tells the student which format to write (ETD, SIKeD)
    trigger: str = ""
    gives_answer: bool = True

    @abstractmethod
    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        """Chat messages (OpenAI format) asking the teacher for this format on `question`.

        `context` carries extra inputs some formats need (e.g. {"rationale": ...} for knowledge).
        """

    def student_prompt(self, question: str, context: dict | None = None) -> str:
        """The user-message text the student sees (before the chat template)."""
        return f"{question.strip()}\n{self.trigger}".strip()

    def student_target(self, rationale: str) -> str:
        """The completion the student learns to write for a teacher rationale."""
        return rationale.strip()

    @abstractmethod
    def extract(self, rationale: str) -> Extracted:
        """Turn a rationale into a predicted answer (parse / execute / solve)."""

    def score(self, rationale: str, gold: str) -> Scored:
        return self.score_batch([rationale], [gold])[0]

    def score_batch(self, rationales: Sequence[str], golds: Sequence[str]) -> list[Scored]:
        """Score many rationales; formats that execute code override this to run them in parallel."""
        from mathdistill.answers import is_equivalent

        out = []
        for text, gold in zip(rationales, golds):
            ex = self.extract(text)
            ok = ex.prediction is not None and is_equivalent(ex.prediction, gold)
            out.append(Scored(ex.prediction, ok, ex.error))
        return out
