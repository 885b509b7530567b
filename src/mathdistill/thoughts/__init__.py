"""Reasoning formats ("thoughts"): what the teacher writes and the student learns.

    from mathdistill import thoughts
    pot = thoughts.get("pot")
    pot.teacher_messages(question)          # few-shot chat messages for the teacher
    pot.student_prompt(question)            # question + "[PoT] <one-line instruction>"
    pot.score_batch(rationales, golds)      # programs run in the sandbox, in parallel
    pot.reference(problem)                  # its GSM8K gold solution as a program (unverified)

Formats: cot, pot, eot, l2m (give answers); knowledge, keypoints (inputs to later steps,
`gives_answer=False`, checked by `validate`). Reference rationales converted from GSM8K gold
solutions: `mathdistill.thoughts.reference`.

A format's traits are attributes of its class (`Thought.gives_answer`, `evaluable`, `executes`,
`offline_teacher`); lists of formats are derived from them: `where("executes")` -> ("pot", "eot"),
`ANSWER_NAMES` (= `where("gives_answer")`), `vote_preference()`.
"""

from __future__ import annotations

import functools
import importlib

from mathdistill.thoughts.base import Extracted, Scored, Thought, gold_answer

#: name -> the class that implements it, imported on first use (`import mathdistill.thoughts`
#: stays light: the sandbox's processes import it). Everything else about a format — its trigger,
#: prompts, reference conversion, teacher context — lives on the class.
_CLASSES = {
    "cot": "mathdistill.thoughts.cot:CoT",
    "pot": "mathdistill.thoughts.pot:ProgramOfThought",
    "eot": "mathdistill.thoughts.eot:EquationOfThought",
    "l2m": "mathdistill.thoughts.l2m:LeastToMost",
    "knowledge": "mathdistill.thoughts.knowledge:Knowledge",
    "keypoints": "mathdistill.thoughts.keypoints:KeyPoints",
}
NAMES: tuple[str, ...] = tuple(_CLASSES)


@functools.cache
def thought_class(name: str) -> type[Thought]:
    """The class of the format called `name` (one of NAMES)."""
    key = (name or "").strip().lower()
    if key not in _CLASSES:
        raise ValueError(f"unknown thought {name!r}; choose one of {', '.join(NAMES)}")
    module, cls = _CLASSES[key].split(":")
    return getattr(importlib.import_module(module), cls)


def where(trait: str) -> tuple[str, ...]:
    """The formats (in NAMES order) whose class has `trait` (a `Thought` attribute) set, e.g. "executes"."""
    return tuple(n for n in NAMES if getattr(thought_class(n), trait))


def vote_preference(names=None) -> list[str]:
    """A vote's default tie-break order over `names` (default: every answering format): the formats whose
    answers are computed (`executes`) first, then NAMES order. ETD's `eval.preference`."""
    names = where("gives_answer") if names is None else names
    return sorted(names, key=lambda n: (not thought_class(n).executes, NAMES.index(n)))


def __getattr__(name: str):
    """`ANSWER_NAMES`: derived on first use (importing every format class; `import mathdistill.thoughts`
    itself stays light for the sandbox's workers)."""
    if name == "ANSWER_NAMES":
        return where("gives_answer")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get(name: str, **kwargs) -> Thought:
    """The format called `name` (one of NAMES); kwargs go to its constructor (e.g. limits=...)."""
    return thought_class(name)(**kwargs)


def detect(output: str) -> str | None:
    """The format a self-choosing student (SIKeD) announced with its leading tag (the class's
    `trigger`), if any."""
    head = (output or "").lstrip()[:20].lower()
    for name in NAMES:
        if head.startswith(thought_class(name).trigger.lower()):
            return name
    return None


def strip_tag(output: str) -> str:
    """`output` without its leading format tag."""
    name = detect(output)
    return output.lstrip()[len(thought_class(name).trigger):].lstrip() if name else output


def choice_prompt(question: str, names) -> str:
    """The user message of a student that chooses its own format among `names` (SIKeD): the question
    and one neutral instruction naming their tags, the same whichever it writes (to force one, prefill
    its tag)."""
    tags = [thought_class(n).trigger for n in names]
    listed = tags[0] if len(tags) == 1 else f"{', '.join(tags[:-1])} or {tags[-1]}"
    return f"{question.strip()}\nChoose a strategy ({listed}), write its tag first, then solve."


__all__ = ["NAMES", "ANSWER_NAMES", "Thought", "Extracted", "Scored", "get", "thought_class", "where",
           "vote_preference", "detect", "strip_tag", "choice_prompt", "gold_answer"]
