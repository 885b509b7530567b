"""Calculation marks in training targets: teach the student the pattern calculator decoding hooks into.

Calculator decoding (`mathdistill.student.calculator`; its arithmetic: `mathdistill.answers.arithmetic`)
fires when the student has just written an arithmetic expression and `=`, plain (`48 / 2 =`) or opened
with a mark (`<<48/2=`), and forces the value; the student then writes what follows. A target teaches
that pattern when, at every mark, the value written after its `=` is exactly what the calculator forces
there, and the mark is closed by `>>` right after it (the calculator forces the value only; the student
writes `>>`).

Modes (`calc_marks` of a recipe's `data` section, `CoT(calc_marks=...)`):

  none  today's targets, byte for byte: GSM8K gold solutions lose their `<<48/2=24>>` notes.
  keep  gold-derived CoT keeps each note the calculator agrees with (`calculation(text up to the
        note's "=")` is the note's value, character for character); a written step of the same value
        right before it goes (`48/2 = <<48/2=24>>24` -> `<<48/2=24>>24`: else the written `48/2 =`
        would fire first and the student would be taught `= <<` where the calculator forces ` 24`).
        Other notes (and those over MAX_SPAN characters) are dropped as today. Recorded teacher text
        has no notes: unchanged.
  add   keep, then in any CoT target (recorded teacher rationales too) each written step `E = V` is
        wrapped as `<<E = V>>` when the calculator's value at its `=` is exactly `V` (so `V` is right and
        written the way the calculator writes it). Not marked: wrong steps (`5 + 3 = 9`), values written
        otherwise (`= 9.60`, `= $600`, `= 1,200`, `= 24%`), what the calculator does not evaluate
        (`2^3 = 8`, `x + 3 = 5`, words), expressions over MAX_SPAN characters (the decoder looks back
        only TAIL_TOKENS tokens), steps inside a note, and a line's text from the final answer on
        ("The answer is", `####`, `\\boxed`, "Answer:"), which stays as it is.

    add_marks("So 48 / 2 = 24 clips, 5 + 3 = 9.")   -> "So <<48 / 2 = 24>> clips, 5 + 3 = 9."
    keep_notes("In May she sold <<48/2=24>>24 clips.") -> unchanged (no written step before it)
    keep_notes("She sold 48/2 = <<48/2=24>>24 clips.") -> "She sold <<48/2=24>>24 clips."
    mark_values(text) -> [(text up to a mark's "=", the value written after it), ...]

`python -m mathdistill.thoughts.calcmarks --mode add IN.jsonl OUT.jsonl` marks existing rows:
prompt/completion rows (the completion) or `teach` rationales (the text of cot rows).
"""

from __future__ import annotations

import re

from mathdistill.answers.arithmetic import TAIL_TOKENS, calculation, evaluate, format_number

MODES = ("none", "keep", "add")
VERSION = 1  # bump when what is marked changes (names the reference cache of marked rationales)
# longest expression marked, in characters: with `<<` and `=` it stays within the TAIL_TOKENS tokens the
# decoder looks back over (a character is at most one token: digits, operators and spaces are split)
MAX_SPAN = TAIL_TOKENS - 8
NOTE = re.compile(r"<<([^=<>]*)=([^<>]*)>>")  # a GSM8K calculator note: <<expression=result>>
_MARK = re.compile(r"<<[^<>]*>>")
_ANSWER_LINE = re.compile(r"answer is|####|\\boxed|^\s*answer\s*:", re.IGNORECASE)
_STARTS = set("0123456789$(.-−")


def check_mode(mode: str, where: str = "calc_marks") -> str:
    if mode not in MODES:
        raise ValueError(f"{where}: {mode!r} is not one of {', '.join(MODES)}")
    return mode


def keep_notes(line: str) -> str:
    """A GSM8K solution line with the notes the calculator agrees with (see the module doc), the
    others removed as `none` removes them; stripped."""
    out, pos = "", 0
    for m in NOTE.finditer(line):
        out += line[pos:m.start()]
        pos = m.end()
        head = out
        written = out.rstrip(" $")
        if written.endswith("="):  # "48/2 = <<48/2=24>>": the written step would fire first
            s = _start(written, 0, len(written) - 1, m.group(2))
            if s is None:
                continue  # not the same calculation: the note goes, as today
            head = out[:s] + out[len(written):].lstrip(" ")  # "Weng earns $<<12/60=..."
        if len(m.group(1)) <= MAX_SPAN and _forced(head + "<<" + m.group(1) + "=") == m.group(2):
            out = head + m.group(0)
    return (out + line[pos:]).strip()


_BACK = 4 * MAX_SPAN  # characters looked back over for one `=` (a mark with room before it)


def _forced(text: str, end: int | None = None) -> str | None:
    """`calculation` of `text[:end]` looking back only _BACK characters (bounded cost per `=`)."""
    end = len(text) if end is None else end
    return calculation(text[max(0, end - _BACK): end], at_start=end <= _BACK)


def _start(text: str, lo: int, eq: int, value: str) -> int | None:
    """Where the expression ending at text[eq] == "=" starts: the first position in [lo, eq) at a word
    boundary from which the text up to `eq` is plain arithmetic with balanced parentheses and the
    calculator's value `value`; None if there is none."""
    for s in range(max(lo, eq - MAX_SPAN), eq):
        if text[s] not in _STARTS or (s > 0 and (text[s - 1].isalnum() or text[s - 1] in "_.,$")):
            continue
        span = text[s:eq]
        if span.count("(") != span.count(")"):
            continue
        v = evaluate(span)
        if v is not None and format_number(v) == value.strip():
            return s
    return None


def add_marks(text: str) -> str:
    """`text` with each right written step `E = V` wrapped as `<<E = V>>` (see the module doc).
    Idempotent: `=` inside existing marks is left alone."""
    out, cursor, line_start, done = [], 0, 0, ""  # done: the last _BACK characters of "".join(out)
    for line in text.splitlines(keepends=True):
        lo, end = line_start, line_start + len(line)
        line_start = end
        answer = _ANSWER_LINE.search(line)
        inside = [(m.start() + lo, m.end() + lo) for m in _MARK.finditer(line)]
        for j in range(lo, lo + answer.start() if answer else end):
            if text[j] != "=" or any(a <= j < b for a, b in inside) or j < cursor:
                continue
            forced = _forced(text, j + 1)
            if forced is None or not text.startswith(forced, j + 1):
                continue  # not arithmetic, or the written value is not the calculator's
            after = text[j + 1 + len(forced): j + 3 + len(forced)] + "  "
            if after[0].isalnum() or after[0] in "%_" or (after[0] in ".," and after[1].isdigit()):
                continue  # "= 9.60", "= 24%", "= 1,200": the value goes on
            s = _start(text, max(lo, cursor), j, forced)
            if s is None:
                continue
            head = done + text[cursor:s] + "<<" + text[s: j + 1]
            if calculation(head[-_BACK:], at_start=len(out) == 0 and len(head) <= _BACK) != forced:
                continue  # what the decoder forces after the mark as written
            out.append(text[cursor:s] + "<<" + text[s: j + 1 + len(forced)] + ">>")
            done = (done + out[-1])[-_BACK:]
            cursor = j + 1 + len(forced)
    return "".join(out) + text[cursor:]


def mark_values(text: str) -> list[tuple[str, str]]:
    """(the text up to and including each mark's `=`, the value written after it) for every mark
    `<<...=V>>` in `text`: what a check of "the calculator forces exactly V there" needs."""
    return [(text[: m.start() + 2 + len(m.group(1)) + 1], m.group(2)) for m in NOTE.finditer(text)]


def apply(text: str, mode: str) -> str:
    """A target text under `mode` (notes of gold solutions are handled by `keep_notes`, earlier)."""
    return add_marks(text) if check_mode(mode) == "add" else text


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json
    import sys

    from mathdistill.io import InputError, iter_jsonl, write_jsonl

    ap = argparse.ArgumentParser(description="Add calculation marks to training rows (prompt/completion rows, "
                                             "or teach rationales: the text of cot rows).")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--mode", default="add", choices=["add"], help="add: mark right written steps")
    args = ap.parse_args(argv)
    try:
        rows, marked = [], 0
        for lineno, row in iter_jsonl(args.input):
            key = "completion" if "completion" in row else "text" if row.get("thought") == "cot" else None
            if key is not None and not isinstance(row[key], str):
                raise InputError(f"{args.input}:{lineno}: key '{key}' must be a string")
            if key is not None:
                new = apply(row[key], args.mode)
                marked += new != row[key]
                row = {**row, key: new}
            rows.append(row)
        write_jsonl(args.output, rows)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps({"rows": len(rows), "marked": marked, "output": args.output}))


if __name__ == "__main__":
    main()
