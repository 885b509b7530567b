"""The prompts a student answers: a format's zero-shot student prompt through the chat template, or a k-shot
prompt whose exemplars (GSM8K *train* problems with their reference rationales in the same format) are earlier
turns; and which formats can be scored at all (`check_thought`). Evaluation, sampling and serving build their
prompts here.

    prompts = build_prompts(tok, "cot", questions, few_shot_exemplars("cot", 4, exclude=questions))
"""

from __future__ import annotations

from typing import Sequence

from mathdistill import thoughts
from mathdistill.io import InputError
from mathdistill.student.chat import render_few_shot, render_prompt

__all__ = ["THOUGHTS", "check_thought", "few_shot_exemplars", "build_prompts"]

#: formats an evaluation can score: their output ends in an answer (keypoints: its solution part)
THOUGHTS: tuple[str, ...] = thoughts.where("evaluable")
def check_thought(thought: str) -> str:
    """`thought` (lower case) if an evaluation can score it; else an InputError saying which can and why."""
    key = (thought or "").strip().lower()
    if key in THOUGHTS:
        return key
    can = f"evaluable formats: {', '.join(THOUGHTS)} (keypoints is scored on its solution's answer)"
    if key in thoughts.NAMES:
        raise InputError(f"--thought {thought}: this format gives no answer to score (it is an input to a later "
                         f"solving step, not a solution); {can}")
    raise InputError(f"unknown --thought '{thought}'; {can}")


def few_shot_exemplars(thought: str, k: int, data_dir=None, exclude: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """k exemplars (problem id, user message, assistant answer) in `thought`'s format.

    Taken in file order from GSM8K *train* (never a test split), using each problem's
    verified reference rationale (`mathdistill.thoughts.reference`); problems whose question
    is in `exclude` (the ones being evaluated) are skipped.
    """
    if k <= 0:
        return []
    from mathdistill import data
    from mathdistill.thoughts.reference import FORMATS, reference_rationale

    if thought not in FORMATS:
        raise InputError(f"--shots needs reference rationales, which exist for {', '.join(FORMATS)} (not '{thought}')")
    fmt = thoughts.get(thought)
    skip = {q.strip() for q in exclude}
    out = []
    for p in data.load("gsm8k", "train", data_dir=data_dir):
        if p.question.strip() in skip:
            continue
        rationale = reference_rationale(p, thought)
        if rationale is not None:
            out.append((p.id, fmt.student_prompt(p.question), fmt.student_target(rationale)))
        if len(out) == k:
            return out
    raise InputError(f"only {len(out)} GSM8K train problems have a {thought} reference rationale; asked for {k}")


def build_prompts(tokenizer, thought: str, questions: Sequence[str],
                  exemplars: Sequence[tuple[str, str, str]] = ()) -> list[str]:
    """Prompt text for each question: chat template, k-shot exemplars as earlier turns."""
    fmt = thoughts.get(thought)
    shots = [(user, answer) for _, user, answer in exemplars]
    if shots:
        return [render_few_shot(tokenizer, shots, fmt.student_prompt(q)) for q in questions]
    return [render_prompt(tokenizer, fmt.student_prompt(q)) for q in questions]

