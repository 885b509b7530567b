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
    """`calc_marks`: "none" (default: targets as they always were), "keep" or "add" calculation marks
    in the student's targets, the pattern calculator decoding hooks into (`mathdistill.thoughts.calcmarks`)."""

    name = "cot"
    trigger = "[CoT]"
    instruction = 'Think step by step, then finish with "The answer is <number>".'
    #: offline: the recorded Llama-3-70B CoT on GSM8K train (public), verified against gold
    offline_teacher = {"kind": "replay", "replay": ["teacher/gsm8k_train_llama3-70b_cot.json"]}
    system = ("You solve grade-school math word problems. Reason step by step in short sentences, "
              "writing each calculation explicitly, and end with a final line of the form "
              '"The answer is <number>." (the number only, no units).')

    def __init__(self, calc_marks: str = "none"):
        from mathdistill.thoughts.calcmarks import check_mode

        self.calc_marks = check_mode(calc_marks)

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        return few_shot(self.system, list(zip(ex.QUESTIONS, ex.COT)), question.strip())

    def reference(self, problem) -> str | None:
        """The gold solution's sentences without calculator notes (or with calculation marks, as
        `calc_marks` says), then "The answer is N."."""
        from mathdistill.thoughts.calcmarks import apply
        from mathdistill.thoughts.reference import solution_sentences

        lines = solution_sentences(problem, keep_notes=self.calc_marks != "none")
        if lines is None:
            return None
        return apply("\n".join(lines), self.calc_marks) + f"\nThe answer is {problem.answer}."

    def student_target(self, rationale: str, tagged: bool = False) -> str:
        """The rationale as the student learns to write it; `calc_marks="add"`: with its right
        written steps marked (`calcmarks.add_marks`, which leaves the answer line alone)."""
        from mathdistill.thoughts.calcmarks import apply

        return super().student_target(apply(rationale, self.calc_marks), tagged)

    def extract(self, rationale: str) -> Extracted:
        return answer_from_text(rationale)
