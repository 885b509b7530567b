"""The interface every reasoning format implements.

A *thought* (reasoning format) knows three things:
  1. how to ask the teacher for it      -> `teacher_messages`
  2. how the student is prompted / what it learns to write -> `student_prompt`, `student_target`
  3. how to get an answer out of a rationale -> `extract`, `score`, `score_batch`
and, where it applies, what the teacher needs besides the question (`teacher_context`) and how
a GSM8K gold solution is written in it (`reference`).
Formats that are inputs to later steps rather than answers (knowledge, key points) have
`gives_answer = False` and use `validate` instead of an answer check.

What the rest of the package needs to know about a format is a class attribute here (`gives_answer`,
`evaluable`, `executes`, `offline_teacher`), and every list of formats is derived from them
(`mathdistill.thoughts.where`): the formats a student answers in, the ones evaluation scores, the ones
whose answers run in the sandbox, the default teachers, a vote's tie-break order.
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
    #: one-line instruction after the trigger, for students that have not learnt the format yet
    instruction: str = ""
    #: its text ends in an answer (a student answers in it; `thoughts.ANSWER_NAMES`)
    gives_answer: bool = True
    #: evaluation can score it (`eval.THOUGHTS`): it gives an answer, or has a part that does (key points)
    evaluable: bool = True
    #: its answers come from running it in the sandbox (PoT programs, EoT systems): its constructor takes
    #: `limits`, a server warms the sandbox for it, and a vote prefers it on a tie (computed, not written)
    executes: bool = False
    #: the offline default teacher of this format (a `teacher.TeacherConfig` mapping: recorded or
    #: gold-derived rationales, so a recipe runs without a live endpoint); None: a recipe must name one
    offline_teacher: dict | None = None

    @abstractmethod
    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        """Chat messages (OpenAI format) asking the teacher for this format on `question`.

        `context` carries extra inputs some formats need (e.g. {"rationale": ...} for knowledge).
        """

    def teacher_context(self, problem) -> dict | None:
        """The `context` this format's `teacher_messages` needs for `problem` (a
        `mathdistill.data.Problem`) besides its question; None: nothing more."""
        return None

    def reference(self, problem) -> str | None:
        """`problem`'s GSM8K gold solution (`extra["solution"]`) written in this format, unverified;
        None when it does not convert. Formats with no conversion raise NotImplementedError
        (`mathdistill.thoughts.reference.reference_formats()` lists the others); the shared step
        extraction and the verification are in `mathdistill.thoughts.reference`."""
        raise NotImplementedError(f"no reference conversion for {self.name!r}")

    def student_prompt(self, question: str, context: dict | None = None) -> str:
        """The user-message text the student sees (before the chat template):
        the question, then the trigger tag and a one-line instruction."""
        return f"{question.strip()}\n{self.trigger} {self.instruction}".strip()

    def student_target(self, rationale: str, tagged: bool = False) -> str:
        """The completion the student learns to write for a teacher rationale.

        `tagged=True` starts it with the trigger tag, for students that choose their own
        format (SIKeD): see `mathdistill.thoughts.detect`.
        """
        text = rationale.strip()
        return f"{self.trigger}\n{text}" if tagged else text

    @abstractmethod
    def extract(self, rationale: str) -> Extracted:
        """Turn a rationale into a predicted answer (parse / execute / solve)."""

    @classmethod
    def malformed(cls, text: str) -> str | None:
        """Why `text`, right or not, is not this format's structure (None: it is). Checked where rationales
        become training data (the keep rule of teacher and student rows), not when answers are scored."""
        return None

    def extract_batch(self, rationales: Sequence[str]) -> list[Extracted]:
        """`extract` for many rationales; formats that execute code run them in parallel."""
        return [self.extract(r) for r in rationales]

    def score(self, rationale: str, gold: str, question: str | None = None) -> Scored:
        return self.score_batch([rationale], [gold], [question])[0]

    def score_batch(self, rationales: Sequence[str], golds: Sequence[str],
                    questions: Sequence[str | None] | None = None) -> list[Scored]:
        """Score many rationales against gold answers (a GSM8K `... #### N` solution also works).

        `questions` is only used by formats that validate instead of answering (leak checks).
        """
        from mathdistill.answers import is_equivalent

        if len(rationales) != len(golds):
            raise ValueError(f"{len(rationales)} rationales but {len(golds)} gold answers")
        out = []
        for ex, gold in zip(self.extract_batch(rationales), golds):
            ok = ex.prediction is not None and is_equivalent(ex.prediction, gold_answer(gold))
            out.append(Scored(ex.prediction, ok, ex.error))
        return out

    def validate(self, text: str, gold: str, question: str | None = None) -> str | None:
        """None if `text` is usable for this format and (if it gives an answer) correct; else why not."""
        s = self.score(text, gold, question)
        if s.correct:
            return None
        return s.error or f"wrong answer: {s.prediction} (gold {gold_answer(gold)})"


def gold_answer(gold) -> str:
    """A gold answer as text: numbers as they are, a GSM8K solution reduced to what follows ####."""
    from mathdistill.answers import normalize_answer

    if isinstance(gold, bool) or gold is None:
        raise ValueError(f"not a gold answer: {gold!r}")
    if isinstance(gold, (int, float)):
        return normalize_answer(gold)
    gold = str(gold)
    if "####" in gold:
        from mathdistill.data import gsm8k_gold

        return gsm8k_gold(gold)
    return gold.strip()
