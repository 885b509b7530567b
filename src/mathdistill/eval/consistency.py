"""LoRID's consistency loop: an intuitive answer and a knowledge-guided answer, sampled again until they agree.

    res = consistency_loop(problems, ir=ir, kg=kg, dr=dr, max_iterations=4)
    res.rows[i]["prediction"], res.rows[i]["iterations"], res.rows[i]["resolved"]
    res.rows[i]["agreed"], res.rows[i]["correct_any"]   # the agreement set; right if any of it is the gold
    res.budgets          # accuracy (one answer and any agreed), share resolved, mean iterations per budget 1..max

Each iteration, for the problems still unresolved only (batched: one call per role):
    ir(problems, t)             -> [(output, answer)]   the Intuitive Reasoner: question -> solution
    kg(problems, t)             -> [knowledge text]     the Knowledge Generator: question -> knowledge
    dr(problems, knowledge, t)  -> [(output, answer)]   the Deep Reasoner: question + knowledge -> solution
(`answer` None: no answer found.) A problem is resolved as soon as an IR answer and a DR answer agree:
equal both ways under the project's answer checker (`same_answer`), among all the answers sampled so
far (`agreement="any"`, as the LoRID code does) or within one iteration (`"same-iteration"`). Its
answer is then the agreed one (if several agree: the most frequent among all its sampled answers, ties
to the earliest, IR before DR). A problem still unresolved at the limit gets the `fallback`:
`abstain` (no answer: counted wrong, as in the paper), `ir` (IR's first answer) or `majority` (the
most frequent of every answer sampled; ties to the earliest, so IR's first answer wins a tie it is in).

Two scores: `correct` judges that one answer; `correct_any` is the official LoRID code's score
(src/predict.py `evaluate`): a problem is right when ANY answer of its agreement set (`agreed`: every
answer IR and DR agree on when it resolved) equals the gold, and a problem left unresolved is wrong
whatever the fallback. It can only be higher: a loop that agrees on two answers gets the credit of
either. Both are in every budget (`accuracy`, `accuracy_any`).

The roles decide how they sample (greedy first iteration, temperature per role, seeds): the loop only
needs each role's answers for a problem at iteration t to depend on that problem and t alone (seeded
per problem and iteration), not on which other problems are in the call. Then a run with budget b is
exactly the first b iterations of a longer run, and one run gives every budget (`budgets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from mathdistill.answers import is_equivalent, vote
from mathdistill.io import InputError

AGREEMENT = ("any", "same-iteration")
FALLBACKS = ("abstain", "ir", "majority")

Answer = tuple[str, "str | None"]  # (output text, extracted answer)


@dataclass
class LoopResult:
    # per problem: id, question, gold, prediction, correct, agreed, correct_any, resolved, iterations, resolved_at,
    # ir, dr, knowledge, ...
    rows: list[dict]
    # per budget 1..max: budget, n, correct, accuracy, ci95, correct_any, accuracy_any, ci95_any, resolved,
    # mean_iterations, sampled
    budgets: list[dict]
    sampled: list[int] = field(default_factory=list)  # problems sent to the roles at iteration 1, 2, ...


def same_answer(a: str | None, b: str | None) -> bool:
    """Two answers agree: both present and each equal to the other under `answers.is_equivalent`
    (5 and 5.0, 1/2 and 0.5 agree; a rounding and the value it rounds do not)."""
    return a is not None and b is not None and is_equivalent(a, b) and is_equivalent(b, a)


def _in_order(ir: Sequence, dr: Sequence) -> list:
    """Every sampled answer in the order sampled: IR 1, DR 1, IR 2, DR 2, ..."""
    return [x for pair in zip(ir, dr) for x in pair]


def _majority(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (equivalent ones count as one), ties to the earliest; None if none."""
    keys = [str(i) for i in range(len(answers))]
    return vote({k: [a] for k, a in zip(keys, answers)}, keys)[0]


def _agreeing(ir: Sequence[str | None], dr: Sequence[str | None], agreement: str) -> list[str | None]:
    """Every sampled answer in order (`_in_order`), None where it agrees with no answer of the other role."""
    pairs = [(i, j) for i, a in enumerate(ir) for j, d in enumerate(dr)
             if (agreement == "any" or i == j) and same_answer(a, d)]
    agreeing = {2 * i for i, _ in pairs} | {2 * j + 1 for _, j in pairs}
    return [a if k in agreeing else None for k, a in enumerate(_in_order(ir, dr))]


def agreed_answer(ir: Sequence[str | None], dr: Sequence[str | None], agreement: str = "any") -> str | None:
    """The answer IR and DR agree on in these histories (iteration order), or None when they do not."""
    return _majority(_agreeing(ir, dr, agreement))


def agreement_set(ir: Sequence[str | None], dr: Sequence[str | None], agreement: str = "any") -> list[str]:
    """Every answer IR and DR agree on in these histories, one of each equivalent group, first sampled first
    (the official code's IR set & DR set); [] when they agree on none."""
    out: list[str] = []
    for a in _agreeing(ir, dr, agreement):
        if a is not None and not any(same_answer(a, b) for b in out):
            out.append(a)
    return out


def fallback_answer(ir: Sequence[str | None], dr: Sequence[str | None], fallback: str = "majority") -> str | None:
    """The answer of a problem left unresolved (see the module doc)."""
    if fallback == "abstain":
        return None
    if fallback == "ir":
        return ir[0] if ir else None
    return _majority(_in_order(ir, dr))


def answer_at(row: dict, budget: int, agreement: str = "any", fallback: str = "majority") -> tuple[str | None, bool, int]:
    """(answer, resolved, iterations used) of a loop row had the loop stopped after `budget` iterations."""
    at = row["resolved_at"]
    if at is not None and at <= budget:
        return agreed_answer(row["ir"][:at], row["dr"][:at], agreement), True, at
    n = min(budget, len(row["ir"]))
    return fallback_answer(row["ir"][:n], row["dr"][:n], fallback), False, n


def _check(name: str, got: list, want: int, t: int) -> list:
    if len(got) != want:
        raise InputError(f"consistency loop: role {name} returned {len(got)} results for {want} problems (iteration {t})")
    return got


def consistency_loop(
    problems: Sequence,
    *,
    ir: Callable,
    kg: Callable,
    dr: Callable,
    max_iterations: int,
    agreement: str = "any",
    fallback: str = "majority",
    on_iteration: Callable[[int, int, int], None] | None = None,
) -> LoopResult:
    """Run the loop over `problems` (`mathdistill.data.Problem`s; see the module doc for the roles).
    `on_iteration(t, sampled, resolved so far)` is called after each iteration (progress)."""
    from mathdistill.eval.results import tally
    from mathdistill.thoughts import gold_answer

    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise InputError(f"max_iterations must be an integer >= 1 (got {max_iterations!r})")
    if agreement not in AGREEMENT:
        raise InputError(f"agreement '{agreement}': expected one of {', '.join(AGREEMENT)}")
    if fallback not in FALLBACKS:
        raise InputError(f"fallback '{fallback}': expected one of {', '.join(FALLBACKS)}")
    problems = list(problems)
    if len({p.id for p in problems}) != len(problems):
        raise InputError("problem ids are not unique")
    hist = {p.id: {"ir": [], "dr": [], "knowledge": [], "ir_outputs": [], "dr_outputs": [], "resolved_at": None}
            for p in problems}
    todo, sampled = list(problems), []
    for t in range(1, max_iterations + 1):
        if not todo:
            break
        intuitive = _check("ir", list(ir(todo, t)), len(todo), t)
        knowledge = _check("kg", list(kg(todo, t)), len(todo), t)
        deep = _check("dr", list(dr(todo, knowledge, t)), len(todo), t)
        for p, (i_out, i_ans), k, (d_out, d_ans) in zip(todo, intuitive, knowledge, deep):
            h = hist[p.id]
            h["ir"].append(i_ans)
            h["dr"].append(d_ans)
            h["knowledge"].append(k)
            h["ir_outputs"].append(i_out)
            h["dr_outputs"].append(d_out)
            if agreed_answer(h["ir"], h["dr"], agreement) is not None:
                h["resolved_at"] = t
        sampled.append(len(todo))
        todo = [p for p in todo if hist[p.id]["resolved_at"] is None]
        if on_iteration is not None:
            on_iteration(t, sampled[-1], len(problems) - len(todo))

    def outcome(budget: int) -> list[tuple]:
        """Per problem: (answer, correct, resolved, iterations used, agreement set, correct_any)."""
        out = []
        for p in problems:
            h, gold = hist[p.id], gold_answer(p.answer)
            pred, resolved, used = answer_at(h, budget, agreement, fallback)
            agreed = agreement_set(h["ir"][:used], h["dr"][:used], agreement) if resolved else []
            out.append((pred, pred is not None and is_equivalent(pred, gold), resolved, used, agreed,
                        any(is_equivalent(a, gold) for a in agreed)))
        return out

    budgets = []
    for b in range(1, max_iterations + 1):
        res = outcome(b)
        n = len(res)
        any_ = tally(sum(r[5] for r in res), n)
        budgets.append({"budget": b, **tally(sum(r[1] for r in res), n), "correct_any": any_["correct"],
                        "accuracy_any": any_["accuracy"], "ci95_any": any_["ci95"],
                        "resolved": sum(r[2] for r in res) / n, "mean_iterations": sum(r[3] for r in res) / n,
                        "sampled": sampled[b - 1] if b <= len(sampled) else 0})
    rows = []
    for p, (pred, ok, resolved, used, agreed, ok_any) in zip(problems, outcome(max_iterations)):
        h = hist[p.id]
        last = used - 1
        rows.append({"id": p.id, "question": p.question, "gold": p.answer, "prediction": pred, "correct": ok,
                     "agreed": agreed, "correct_any": ok_any,
                     "resolved": resolved, "iterations": used, "resolved_at": h["resolved_at"],
                     "output": h["dr_outputs"][last] if resolved else h["ir_outputs"][0],
                     "ir": h["ir"], "dr": h["dr"], "knowledge": h["knowledge"],
                     "ir_outputs": h["ir_outputs"], "dr_outputs": h["dr_outputs"]})
    return LoopResult(rows, budgets, sampled)
