"""Where a result row's training data came from (contract 9): `teacher` and `offline_stand_in`.

    rows = with_provenance(run_dir, rows)         # the runner: every row of every method, one place
    fields = row_provenance(summaries, row)        # {"teacher", "offline_stand_in", "teacher_note"}

`teacher` maps each format the student learned to who wrote its training rationales, in the words of
the teach summaries (`teacher.collect`: "replay: gsm8k_train_llama3-70b_cot.json (recorded outputs)",
"reference: GSM8K gold solutions converted to pot ...", "openai-compatible: MODEL @ http://HOST/v1",
FDD's pool simulation, LoRID's and KPDD's recorded plans); `offline_stand_in` is true when any of them
stands in for a live teacher, and `teacher_note` says which and why (false: "live teacher"). A row of a
scope (`round-1`, `iteration-2`) counts the summaries of its own and earlier scopes of the same kind.
The untrained student's rows (`base`) have no teacher: `teacher` null, `offline_stand_in` false and
`teacher_note` "untrained ...".
"""

from __future__ import annotations

import re
from pathlib import Path

from mathdistill.io import read_json

UNTRAINED = "untrained: the base student, no teacher and no training data"
LIVE = "live teacher"
FIELDS = ("teacher", "offline_stand_in", "teacher_note")


def teach_summaries(root: str | Path) -> list[tuple[str | None, str, dict]]:
    """(scope, format, summary) of every teach/<format>/summary.json of a run folder and its scopes."""
    root = Path(root)
    found = [(None, f) for f in sorted(root.glob("teach/*/summary.json"))]
    found += [(f.parts[-4], f) for f in sorted(root.glob("*/teach/*/summary.json"), key=lambda f: _order(f.parts[-4]))]
    return [(scope, f.parent.name, read_json(f)) for scope, f in found]


def _order(scope: str) -> tuple:
    m = re.fullmatch(r"(.*?)-?(\d+)", scope)
    return (m.group(1), int(m.group(2))) if m else (scope, -1)


def _counts_for(scope: str | None, row_scope: str | None) -> bool:
    """A summary of `scope` made the training data of a row of `row_scope` (its own or an earlier scope)."""
    if scope is None or row_scope is None or scope == row_scope:
        return True
    (a, i), (b, j) = _order(scope), _order(str(row_scope))
    return a == b and 0 <= i <= j


def untrained(name: str) -> bool:
    """A row of the untrained student: `base`, `base:cot`, `base+calc`, ..."""
    return re.split(r"[:+]", name)[0] == "base"


def row_provenance(summaries: list[tuple[str | None, str, dict]], row: dict) -> dict:
    """The provenance fields of one result row from the run's teach summaries."""
    if untrained(str(row.get("method", ""))):
        return {"teacher": None, "offline_stand_in": False, "teacher_note": UNTRAINED}
    teacher: dict[str, list[str]] = {}
    stand_in: dict[str, list[str]] = {}
    for scope, fmt, s in summaries:
        if not _counts_for(scope, row.get("scope")):
            continue
        who = str(s.get("teacher") or "not recorded")
        teacher.setdefault(fmt, [])
        if who not in teacher[fmt]:
            teacher[fmt].append(who)
        why = s.get("offline_stand_in")
        if why:
            why = why if isinstance(why, str) else who
            stand_in.setdefault(fmt, [])
            if why not in stand_in[fmt]:
                stand_in[fmt].append(why)
    if not teacher:
        return {"teacher": None, "offline_stand_in": False, "teacher_note": "no teacher data recorded in this run"}
    note = ("offline stand-in, not a live teacher: " + "; ".join(f"{f}: {' / '.join(w)}" for f, w in stand_in.items())
            if stand_in else LIVE)
    return {"teacher": {f: "; then ".join(w) for f, w in teacher.items()}, "offline_stand_in": bool(stand_in),
            "teacher_note": note}


def with_provenance(run_dir: str | Path, rows: list[dict]) -> list[dict]:
    """`rows` with the provenance fields of the run folder `run_dir` (fields a row already has are kept)."""
    summaries = teach_summaries(run_dir)
    return [{**r, **{k: v for k, v in row_provenance(summaries, r).items() if k not in r}} for r in rows]
