"""The student's own training data (SIKeD): its correct samples per strategy, mixed with the teacher's.

    own = keep_correct({"cot": sample_rows, "pot": sample_rows}, keep="one")   # rationale rows, `kept` set
    mixed, stats = mix(own, teacher_rationales, "per-strategy")  # + the teacher's rows where it has none
    rows = training_rows(mixed, ["cot", "pot"])               # tagged targets under one neutral prompt
    stats["alpha"], stats["per_strategy"]["pot"]["alpha"]     # the share of teacher rows, overall and per strategy

`sample_rows` are `student.sample.sample(...).rows` (one per problem: id, question, gold, outputs,
predictions, corrects, ...), one list per strategy, sampled with the strategy's tag prefilled.
They become rows shaped like `teach` output (problem_id, question, gold, thought, sample, text,
prediction, correct, kept, ...; `teacher: "student"`), so the student's rows and the teacher's go
through the same keep rule (`teacher.engine`'s: correct, well-formed (`Thought.malformed`: an L2M
sample needs a sub-question / answer pair), deduplicated with whitespace and case folded) and the same
`rows_from_rationales`.

- keep: "one" keeps the first correct sample per problem and strategy (SIKeD's official code:
  `select_one_rc`); "all_distinct" every correct one whose text differs.
- mixing (a problem and strategy is *solved* when the student kept a sample of it):
  "per-strategy" adds the teacher's kept rows of strategy s for every problem not solved in s (SIKeD's
  official `create-mixed-data.py`, its "adaptive" mixing: a student that solved p1 in CoT only still gets
  the teacher's PoT and L2M rows of p1); "per-problem" adds them only for problems solved in no strategy
  (the rule mathdistill used before; a named option); "all" adds every kept teacher row.
- alpha = teacher rows / all rows of the mixed data (None when it is empty), overall and per strategy
  (the official script computes no alpha; it is reported here to show the mixing).
- training rows: the prompt is `thoughts.choice_prompt(question, strategies)` whatever the strategy
  (the student chooses); the target starts with the strategy's tag (`student_target(tagged=True)`).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, Mapping, Sequence

from mathdistill.io import InputError

__all__ = ["KEEP", "MIXING", "keep_correct", "mix", "training_rows"]

KEEP = ("one", "all_distinct")
MIXING = ("per-strategy", "per-problem", "all")


def keep_correct(samples: Mapping[str, Sequence[dict]], keep: Literal["one", "all_distinct"]) -> list[dict]:
    """Every sample of `samples` ({strategy: sample rows}) as a rationale row, its tag stripped from
    `text`; `kept` marks the correct ones the rule keeps."""
    from mathdistill import thoughts
    from mathdistill.teacher.engine import VerifyConfig, keep_rows

    if keep not in KEEP:
        raise InputError(f"keep '{keep}': expected one of {', '.join(KEEP)}")
    rows = []
    for strategy, sampled in samples.items():
        for r in sampled:
            for j, (out, pred, ok, err) in enumerate(zip(r["outputs"], r["predictions"], r["corrects"], r["errors"])):
                rows.append({"problem_id": r["id"], "question": r["question"], "gold": r["gold"], "thought": strategy,
                             "sample": j, "teacher": "student", "text": thoughts.strip_tag(out), "prediction": pred,
                             "correct": bool(ok), "error": err, "finish_reason": None, "kept": False,
                             "duplicate": False})
    keep_rows(rows, VerifyConfig(keep="correct", dedupe="normalized", max_per_problem=1 if keep == "one" else None))
    return rows


def mix(own: Sequence[dict], teacher: Sequence[dict],
        mixing: Literal["per-strategy", "per-problem", "all"]) -> tuple[list[dict], dict]:
    """(mixed rationale rows, stats): the kept rows of `own` (from `keep_correct`) plus the kept
    rows of `teacher` that `mixing` admits, each marked `origin` "student" or "teacher".

    stats: mixing, problems (seen in either), solved (problems with a kept own sample in some strategy),
    self_rows, teacher_rows, teacher_problems, alpha, per_strategy {t: {samples, correct, malformed, self,
    teacher, alpha}} (malformed: correct samples not kept for their structure, e.g. an L2M without sub-questions)."""
    from mathdistill.teacher.engine import malformed

    if mixing not in MIXING:
        raise InputError(f"mixing '{mixing}': expected one of {', '.join(MIXING)}")
    mine = [{**r, "origin": "student"} for r in own if r["kept"]]
    solved_in = {(r["problem_id"], r["thought"]) for r in mine}
    solved = {pid for pid, _ in solved_in}

    def admitted(r: dict) -> bool:
        if mixing == "per-strategy":
            return (r["problem_id"], r["thought"]) not in solved_in
        return mixing == "all" or r["problem_id"] not in solved

    theirs = [{**r, "origin": "teacher"} for r in teacher if r["kept"] and admitted(r)]
    mixed = mine + theirs
    counts = {name: Counter(r["thought"] for r in rows) for name, rows in
              (("samples", own), ("correct", [r for r in own if r["correct"]]),
               ("malformed", [r for r in own if r["correct"] and malformed(r)]),
               ("self", mine), ("teacher", theirs))}
    strategies = dict.fromkeys([r["thought"] for r in own] + [r["thought"] for r in teacher])
    per = {t: {name: c[t] for name, c in counts.items()} for t in strategies}
    for c in per.values():
        c["alpha"] = _share(c["teacher"], c["self"] + c["teacher"])
    stats = {"mixing": mixing, "problems": len({r["problem_id"] for r in [*own, *teacher]}), "solved": len(solved),
             "self_rows": len(mine), "teacher_rows": len(theirs),
             "teacher_problems": len({r["problem_id"] for r in theirs}),
             "alpha": _share(len(theirs), len(mixed)), "per_strategy": per}
    return mixed, stats


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def training_rows(rationales: Sequence[dict], strategies: Sequence[str]) -> list[dict]:
    """Training rows {prompt, completion, thought, problem_id, origin} from the kept rationale rows of
    `strategies`: the neutral choice prompt, the target starting with the strategy's tag."""
    from mathdistill import thoughts
    from mathdistill.student.train_data import rows_from_rationales

    kept = [r for r in rationales if r["kept"] and r["thought"] in strategies]
    rows = rows_from_rationales(kept, strategies, tagged=True)
    return [{**row, "prompt": thoughts.choice_prompt(src["question"], strategies),
             "origin": src.get("origin", "teacher")} for row, src in zip(rows, kept)]
