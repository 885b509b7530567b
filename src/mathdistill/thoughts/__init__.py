"""Reasoning formats ("thoughts"): what the teacher writes and the student learns.

    from mathdistill import thoughts
    pot = thoughts.get("pot")
    pot.teacher_messages(question)          # few-shot chat messages for the teacher
    pot.student_prompt(question)            # question + "[PoT] <one-line instruction>"
    pot.score_batch(rationales, golds)      # programs run in the sandbox, in parallel

Formats: cot, pot, eot, l2m (give answers); knowledge, keypoints (inputs to later steps,
`gives_answer=False`, checked by `validate`). Reference rationales converted from GSM8K gold
solutions: `mathdistill.thoughts.reference`.
"""

from __future__ import annotations

import importlib

from mathdistill.thoughts.base import Extracted, Scored, Thought, gold_answer

_REGISTRY = {
    "cot": "mathdistill.thoughts.cot:CoT",
    "pot": "mathdistill.thoughts.pot:ProgramOfThought",
    "eot": "mathdistill.thoughts.eot:EquationOfThought",
    "l2m": "mathdistill.thoughts.l2m:LeastToMost",
    "knowledge": "mathdistill.thoughts.knowledge:Knowledge",
    "keypoints": "mathdistill.thoughts.keypoints:KeyPoints",
}
NAMES: tuple[str, ...] = tuple(_REGISTRY)
ANSWER_NAMES: tuple[str, ...] = ("cot", "pot", "eot", "l2m")
TRIGGERS = {"cot": "[CoT]", "pot": "[PoT]", "eot": "[EoT]", "l2m": "[L2M]",
            "knowledge": "[Knowledge]", "keypoints": "[KeyPoints]"}


def get(name: str, **kwargs) -> Thought:
    """The format called `name` (one of NAMES); kwargs go to its constructor (e.g. limits=...)."""
    key = (name or "").strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown thought {name!r}; choose one of {', '.join(NAMES)}")
    module, cls = _REGISTRY[key].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def detect(output: str) -> str | None:
    """The format a self-choosing student (SIKeD) announced with its leading tag, if any."""
    head = (output or "").lstrip()[:20].lower()
    for name, tag in TRIGGERS.items():
        if head.startswith(tag.lower()):
            return name
    return None


def strip_tag(output: str) -> str:
    """`output` without its leading format tag."""
    name = detect(output)
    return output.lstrip()[len(TRIGGERS[name]):].lstrip() if name else output


__all__ = ["NAMES", "ANSWER_NAMES", "TRIGGERS", "Thought", "Extracted", "Scored", "get", "detect",
           "strip_tag", "gold_answer"]
