"""New problems from a teacher (FDD), and labels for them by the teacher's own majority.

    rows = write_problems(problems, easy_ids, teacher, n=2, out_dir="runs/x/round-1/generate", prefix="r1:")
    new = [Problem(r["id"], r["question"], "", "generated") for r in rows if r["question"]]
    labels = label_problems(new, ["cot", "pot"], teacher, m=4, threshold=0.5, out_dir="runs/x/round-1/teach")

`write_problems` asks the teacher, through the engine (reply cache, retries, resumable: a call
repeated after a kill sends only what was not answered), for `n` problems per given problem with
one of two prompts written for this project: for an easy problem (one the student solved) "a
harder variation of it", for a hard one "a new problem like it". The reply's problem is what
follows "Problem:" up to a "Solution"/"Answer" line.

A generated problem has no gold answer. `label_problems` has the teacher solve each one `m`
times in every format (PoT programs executed, EoT systems solved, by the formats' own scoring);
the answers of all these samples are grouped by equivalence, and the largest group's answer
becomes the label when its share of all m x formats samples is at least `threshold` and no other
group is as large (`majority`). Rationales that reach the label are kept (one of each text) and
written as `teach`-shaped rows (gold: the label) to out_dir/<format>/rationales.jsonl with a
summary.json, so they train like any verified teacher data.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Collection, Sequence

from mathdistill.answers import is_equivalent
from mathdistill.data import Problem
from mathdistill.io import InputError, write_json, write_jsonl
from mathdistill.thoughts.base import Extracted, Scored, Thought

from .config import TeacherConfig
from .engine import VerifyConfig, keep_rows, teach

__all__ = ["ProblemWriter", "parse_problem", "write_problems", "majority", "label_problems", "PROMPTS"]

SYSTEM = ("You write grade-school math word problems for training a small model. A problem states every "
          "quantity it needs, asks one question whose answer is a single number, and can be solved in a few "
          "arithmetic steps. Reply with the new problem only, on lines starting with \"Problem:\"; do not solve it.")
PROMPTS = {
    "harder": ("A student solved this problem correctly:\n\n{question}\n\nWrite one new problem that is a harder "
               "variation of it: keep the setting, but add one or two more reasoning steps or quantities, so that "
               "solving it takes more steps than the original. Do not copy sentences from it."),
    "similar": ("A student could not solve this problem:\n\n{question}\n\nWrite one new problem of similar "
                "difficulty that practises the same kind of reasoning: a different story and different numbers, "
                "about as many steps. Do not copy sentences from it."),
}
_LABEL = re.compile(r"^\s*\**\s*(?:new\s+)?problem\s*\d*\s*\**\s*[:.]\s*\**", re.IGNORECASE)
_END = re.compile(r"^\s*\**\s*(?:solution|answer|final answer|explanation)\b", re.IGNORECASE)


def parse_problem(text: str | None) -> str | None:
    """The problem in a writer's reply: after "Problem:" (if labelled) and before a Solution/Answer
    line, whitespace folded; None when that is fewer than 6 words."""
    lines = (text or "").strip().splitlines()
    start = next((i for i, ln in enumerate(lines) if _LABEL.match(ln)), None)
    if start is not None:
        lines = [_LABEL.sub("", lines[start], count=1)] + lines[start + 1 :]
    body = []
    for ln in lines:
        if _END.match(ln):
            break
        body.append(ln)
    out = " ".join(" ".join(body).split()).strip("* ")
    return out if len(out.split()) >= 6 else None


class ProblemWriter(Thought):
    """The teacher's task "write a new problem" as an engine format: its 'answer' is the problem."""

    gives_answer = False

    def __init__(self, kind: str):
        if kind not in PROMPTS:
            raise InputError(f"unknown problem-writing prompt {kind!r}; known: {', '.join(PROMPTS)}")
        self.kind, self.name = kind, f"write-{kind}"

    def teacher_messages(self, question: str, context: dict | None = None) -> list[dict]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPTS[self.kind].format(question=question.strip())}]

    def extract(self, rationale: str) -> Extracted:
        problem = parse_problem(rationale)
        return Extracted(problem, None if problem else "no problem found in the reply")

    def score_batch(self, rationales, golds, questions=None) -> list[Scored]:
        return [Scored(e.prediction, e.prediction is not None, e.error) for e in self.extract_batch(rationales)]


def write_problems(problems: Sequence[Problem], easy: Collection[str], teacher: TeacherConfig, n: int,
                   out_dir: str | Path, prefix: str = "", progress: bool = True) -> list[dict]:
    """`n` new problems per problem ("harder" for ids in `easy`, "similar" for the others), written
    by `teacher`; replies cached in out_dir/<kind>/. One row per request, in order: id
    (`<prefix><problem id>.<h|s><sample>`), seed, kind, sample, text (the reply), question (the
    parsed problem, None when the reply has none or repeats an earlier one of the same seed), error."""
    from .backends import make_backend

    if n < 1:
        raise InputError(f"problems per seed problem must be >= 1 (got {n})")
    easy = set(easy)
    by_id = {}
    for kind, group in (("harder", [p for p in problems if p.id in easy]),
                        ("similar", [p for p in problems if p.id not in easy])):
        if not group:
            continue
        res = teach(group, ProblemWriter(kind), make_backend(teacher), config=teacher, samples=n,
                    out_dir=Path(out_dir) / kind, verify_config=VerifyConfig(keep="correct", dedupe="normalized"),
                    progress=progress)
        res.raise_if_failed()
        for r in res.rows:
            by_id[(r["problem_id"], r["sample"])] = {
                "id": f"{prefix}{r['problem_id']}.{kind[0]}{r['sample']}", "seed": r["problem_id"], "kind": kind,
                "sample": r["sample"], "text": r["text"], "question": r["prediction"] if r["kept"] else None,
                "error": r["error"] or ("a repeat of another reply" if r["duplicate"] else None)}
    return [by_id[(p.id, k)] for p in problems for k in range(n)]


def majority(predictions: Sequence[str | None], threshold: float) -> dict:
    """The label of one problem from its samples' answers: {label, votes, total, share, reason}.
    Equivalent answers (5, 5.0) count as one; `total` counts every sample, answered or not.
    label is None (reason "no answer" | "tie" | "below threshold") unless the largest group is
    larger than every other and holds at least `threshold` of all samples (reason None)."""
    groups: list[list] = []  # [answer, votes]
    for value in predictions:
        if value is None:
            continue
        for g in groups:
            if is_equivalent(value, g[0]) and is_equivalent(g[0], value):
                g[1] += 1
                break
        else:
            groups.append([value, 1])
    total = len(predictions)
    if not groups:
        return {"label": None, "votes": 0, "total": total, "share": 0.0, "reason": "no answer"}
    groups.sort(key=lambda g: -g[1])
    votes = groups[0][1]
    share = votes / total
    reason = "tie" if len(groups) > 1 and groups[1][1] == votes else (
        "below threshold" if share < threshold else None)
    return {"label": None if reason else groups[0][0], "votes": votes, "total": total, "share": round(share, 4),
            "reason": reason}


def label_problems(problems: Sequence[Problem], thoughts: Sequence[str], teacher: TeacherConfig, m: int,
                   threshold: float, out_dir: str | Path, progress: bool = True) -> list[dict]:
    """Label `problems` (no gold needed) by the teacher's majority over `m` solutions in each of
    `thoughts` (see the module docstring). Writes out_dir/<thought>/{rationales.jsonl, summary.json};
    returns one row per problem: id, question, label, votes, total, share, reason, kept (rationales kept)."""
    from .backends import make_backend

    if not 0 < threshold <= 1:
        raise InputError(f"label threshold must be in (0, 1] (got {threshold})")
    problems, out = list(problems), Path(out_dir)
    results = {}
    for t in thoughts:
        res = teach(problems, t, make_backend(teacher), config=teacher, samples=m, out_dir=out / t,
                    verify_config=VerifyConfig(keep="usable", dedupe="none"), progress=progress)
        res.raise_if_failed()
        results[t] = res
    answers: dict[str, list] = {p.id: [] for p in problems}
    for res in results.values():
        for r in res.rows:
            answers[r["problem_id"]].append(r["prediction"] if r["text"] is not None and r["error"] is None else None)
    labels = {p.id: majority(answers[p.id], threshold) for p in problems}
    kept = Counter()
    for t, res in results.items():
        rows = res.rows
        for r in rows:
            label = labels[r["problem_id"]]["label"]
            agree = label is not None and r["prediction"] is not None and r["error"] is None and is_equivalent(r["prediction"], label)
            r.update(gold=label, correct=agree, kept=False, duplicate=False, label_share=labels[r["problem_id"]]["share"])
        keep_rows(rows, VerifyConfig(keep="correct", dedupe="normalized"))
        kept.update(r["problem_id"] for r in rows if r["kept"])
        write_jsonl(out / t / "rationales.jsonl", rows)
        s = res.summary
        write_json(out / t / "summary.json", {
            "thought": t, "teacher": teacher.describe(t) + " (labels: the teacher's own majority, no gold answer)",
            "offline_stand_in": teacher.offline_stand_in, "problems": len(problems), "rationales": len(rows),
            "correct": sum(r["correct"] for r in rows), "kept": sum(r["kept"] for r in rows),
            "yield": round(sum(r["correct"] for r in rows) / len(rows), 4) if rows else 0.0,
            "requests": s["requests"], "cache_hits": s["cache_hits"],
            "tokens": {"prompt": s["prompt_tokens"], "completion": s["completion_tokens"]},
            "cost": s["cost_total"], "model": s["teacher"]})
    return [{"id": p.id, "question": p.question, **labels[p.id], "kept": kept[p.id]} for p in problems]
