"""Small text helpers shared by the formats: code fences, leaked answers, few-shot messages."""

from __future__ import annotations

import re

from mathdistill.answers import parse_number

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
CODE_LANGS = ("", "python", "py", "python3", "equations", "eot", "text", "math", "latex")


def strip_fences(text: str, langs: tuple[str, ...] = CODE_LANGS) -> str:
    """The contents of the ```fenced``` blocks of `text` (joined), or `text` itself if none.

    An unclosed fence (a truncated generation) runs to the end. Blocks labelled with another
    language (```output, ```bash) are skipped.
    """
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in langs]
    if not blocks:
        return text.strip("` \n")
    return "\n".join(b.rstrip() for b in blocks)


def numbers_in(text: str) -> list:
    """Values of the standalone numbers in `text`, ignoring list markers like `1.` / `2)`."""
    out = []
    for m in re.finditer(r"(?<![\w.])-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?", text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        after = text[m.end(): m.end() + 1]
        if text[line_start: m.start()].strip() == "" and after in (".", ")") and text[m.end() + 1: m.end() + 2] in (" ", ""):
            continue  # "1. " / "2) " enumerations
        v = parse_number(m.group(0).rstrip(","))
        if v is not None:
            out.append(v)
    return out


def leaks_answer(text: str, gold: str, question: str | None = None) -> bool:
    """Whether `text` states the gold answer: a number equal to `gold` that the question does not
    contain, or an explicit "The answer is"."""
    if re.search(r"the (?:final )?answer is|####|\\boxed", text, re.IGNORECASE):
        return True
    g = parse_number(str(gold))
    if g is None:
        return False
    if question is not None and any(v == g for v in numbers_in(question)):
        return False
    return any(v == g for v in numbers_in(text))


def few_shot(system: str, shots: list[tuple[str, str]], user: str) -> list[dict]:
    """OpenAI-format messages: a system instruction, exemplars as user/assistant turns, the query."""
    msgs = [{"role": "system", "content": system}]
    for q, a in shots:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": user})
    return msgs
