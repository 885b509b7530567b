"""The LoRID consistency loop (`eval.consistency`) with scripted roles: no model."""

from __future__ import annotations

import pytest

from mathdistill.data import Problem
from mathdistill.eval.consistency import (agreed_answer, agreement_set, answer_at, consistency_loop, fallback_answer,
                                          same_answer)
from mathdistill.io import InputError


class Script:
    """Roles answering from a script {problem id: (IR answers, DR answers)} by iteration; every call logged."""

    def __init__(self, script: dict):
        self.script, self.calls = script, []

    def ir(self, problems, t):
        self.calls.append(("ir", t, [p.id for p in problems]))
        return [(f"IR {p.id} {t}", self.script[p.id][0][t - 1]) for p in problems]

    def kg(self, problems, t):
        self.calls.append(("kg", t, [p.id for p in problems]))
        return [f"K {p.id} {t}" for p in problems]

    def dr(self, problems, knowledge, t):
        self.calls.append(("dr", t, [p.id for p in problems]))
        assert knowledge == [f"K {p.id} {t}" for p in problems]  # each problem gets its own knowledge of this iteration
        return [(f"DR {p.id} {t}", self.script[p.id][1][t - 1]) for p in problems]

    def run(self, problems, **kw):
        return consistency_loop(problems, ir=self.ir, kg=self.kg, dr=self.dr, **kw)


def problems(golds: dict) -> list[Problem]:
    return [Problem(pid, f"question {pid}?", gold, "synthetic") for pid, gold in golds.items()]


SCRIPT = {
    "a": (["5", "6", "7"], ["5", "1", "1"]),     # agree at once
    "b": (["3", "4", "9"], ["7", "3", "8"]),     # IR 1 = DR 2: agreement "any" at iteration 2
    "c": (["1", "2", "2"], ["4", "5", "6"]),     # never
}
GOLDS = {"a": "5", "b": "3", "c": "2"}


def test_stops_at_the_first_agreement_and_resamples_only_the_unresolved():
    s = Script(SCRIPT)
    res = s.run(problems(GOLDS), max_iterations=3)
    by = {r["id"]: r for r in res.rows}
    assert [(by[p]["resolved"], by[p]["iterations"]) for p in "abc"] == [(True, 1), (True, 2), (False, 3)]
    assert by["a"]["prediction"] == "5" and by["b"]["prediction"] == "3"
    assert by["a"]["ir"] == ["5"] and by["b"]["dr"] == ["7", "3"]  # nothing sampled after agreement
    assert res.sampled == [3, 2, 1]
    for role in ("ir", "kg", "dr"):
        assert [ids for r, t, ids in s.calls if r == role] == [["a", "b", "c"], ["b", "c"], ["c"]]
    # c: the majority of IR 1 2 2 / DR 4 5 6 is "2" (two votes), right
    assert by["c"]["prediction"] == "2" and by["c"]["correct"]
    assert res.budgets[-1]["mean_iterations"] == pytest.approx((1 + 2 + 3) / 3)
    assert res.budgets[-1]["resolved"] == pytest.approx(2 / 3)


def test_same_iteration_agreement_needs_a_pair_from_one_iteration():
    s = Script(SCRIPT)
    res = s.run(problems(GOLDS), max_iterations=3, agreement="same-iteration")
    by = {r["id"]: r for r in res.rows}
    assert (by["b"]["resolved"], by["b"]["iterations"]) == (False, 3)  # 3 vs 7, 4 vs 3, 9 vs 8
    assert res.sampled == [3, 2, 2]


def test_equivalent_answers_agree_both_ways_only():
    assert same_answer("5.0", "5") and same_answer("1/2", "0.5")
    assert not same_answer("0.33", "1/3")  # a rounding and the value it rounds are two answers
    assert not same_answer(None, None) and not same_answer("5", None)
    res = Script({"x": (["5.0"], ["5"])}).run(problems({"x": "5"}), max_iterations=2)
    assert res.rows[0]["resolved"] and res.rows[0]["prediction"] == "5.0" and res.rows[0]["correct"]


@pytest.mark.parametrize("fallback,ir,dr,want", [
    ("abstain", ["1", "1"], ["2", "3"], None),
    ("ir", ["1", "4"], ["2", "3"], "1"),
    ("ir", [None, "4"], ["2", "3"], None),            # IR's first answer, even when it has none
    ("majority", ["1", "4", "4"], ["2", "3", "5"], "4"),  # the one answer sampled twice
    ("majority", ["1", "4", "4"], ["2", "3", "2"], "2"),  # 4 and 2 twice each: 2 was sampled first (DR 1 before IR 2)
    ("majority", ["5", "5"], ["6", "6"], "5"),        # a tie with IR's first answer goes to it
    ("majority", ["1", "2", "2"], ["3", "3", "4"], "3"),  # a tie without it: the earliest sampled (DR 1)
    ("majority", [None, None], [None, "4"], "4"),     # no answer does not vote
    ("majority", [None], [None], None),
])
def test_fallbacks_and_the_tie_rule(fallback, ir, dr, want):
    assert agreed_answer(ir, dr) is None
    assert fallback_answer(ir, dr, fallback) == want
    res = Script({"p": (ir, dr)}).run(problems({"p": "4"}), max_iterations=len(ir), fallback=fallback)
    assert res.rows[0]["prediction"] == want and not res.rows[0]["resolved"]
    assert res.rows[0]["correct"] == (want == "4")


def test_several_agreeing_answers_the_most_frequent_wins():
    # IR 7, 8 / DR 8, 7 at iteration 2: both 7 and 8 agree, each sampled twice: 7 (IR 1) is earliest
    assert agreed_answer(["7", "8"], ["8", "7"]) == "7"
    assert agreed_answer(["7", "8", "8"], ["8", "7", "8"]) == "8"
    assert agreed_answer(["7", "8"], ["8", "7"], "same-iteration") is None


def test_the_official_any_agreed_answer_score_beside_the_one_answer_score():
    """src/predict.py `evaluate`: right when ANY answer of IR's set & DR's set equals the gold; unresolved: wrong."""
    assert agreement_set(["5", "6"], ["6", "5"]) == ["5", "6"] and agreement_set(["5"], ["6"]) == []
    assert agreement_set(["5.0", "7"], ["5", "5"]) == ["5.0"]  # equivalent answers are one
    assert agreement_set(["5", "6"], ["6", "5"], "same-iteration") == []
    script = {"x": (["5", "6"], ["6", "5"]),   # iteration 2 agrees on 5 and 6: the one answer is 5 (IR 1 first)
              "y": (["4", "4"], ["1", "2"]),   # never agrees: the majority fallback says 4, right, but unresolved
              "z": (["3", "3"], ["3", "3"])}   # agrees at once on 3
    res = Script(script).run(problems({"x": "6", "y": "4", "z": "3"}), max_iterations=2, fallback="majority")
    by = {r["id"]: r for r in res.rows}
    assert [(by[p]["prediction"], by[p]["correct"], by[p]["agreed"], by[p]["correct_any"]) for p in "xyz"] == [
        ("5", False, ["5", "6"], True), ("4", True, [], False), ("3", True, ["3"], True)]
    last = res.budgets[-1]
    assert (last["correct"], last["correct_any"]) == (2, 2) and last["accuracy_any"] == pytest.approx(2 / 3)
    assert res.budgets[0]["correct_any"] == 1  # at budget 1 only z has agreed
    assert len(last["ci95_any"]) == 2 and last["ci95_any"][0] <= last["accuracy_any"] <= last["ci95_any"][1]


def test_every_budget_from_one_run_equals_a_run_with_that_budget():
    script = {**SCRIPT, "d": (["2", None, "9", "9"], [None, "8", "1", "9"]), "e": (["1", "1", "1", "1"], ["2", "2", "3", "4"])}
    script = {k: (ir + ir[-1:] * (4 - len(ir)), dr + dr[-1:] * (4 - len(dr))) for k, (ir, dr) in script.items()}
    golds = {**GOLDS, "d": "9", "e": "1"}
    for fallback in ("abstain", "ir", "majority"):
        full = Script(script).run(problems(golds), max_iterations=4, fallback=fallback)
        for b in range(1, 5):
            alone = Script(script).run(problems(golds), max_iterations=b, fallback=fallback)
            assert [r["prediction"] for r in alone.rows] == [answer_at(r, b, "any", fallback)[0] for r in full.rows]
            assert full.budgets[b - 1] == {**alone.budgets[-1], "budget": b}, (fallback, b)


def test_budget_one_with_fallback_ir_is_the_intuitive_reasoner_alone():
    """Greedy first iteration + fallback ir: budget 1 gives exactly the greedy IR answers (lorid:ir)."""
    script = {"a": (["5", "1"], ["5", "2"]), "b": (["4.0", "3"], ["7", "3"]), "c": ([None, "2"], ["2", "2"])}
    golds = {"a": "5", "b": "4", "c": "2"}
    res = Script(script).run(problems(golds), max_iterations=2, fallback="ir")
    ir_alone = [script[p][0][0] for p in golds]
    assert [answer_at(r, 1, "any", "ir")[0] for r in res.rows] == ir_alone == ["5", "4.0", None]
    assert res.budgets[0]["correct"] == 2  # 5 and 4.0 right, c had no IR answer
    # a second iteration resolves c (IR 2 = DR 1 = 2: right) and b (IR 2 = DR 2 = 3: wrong)
    assert [r["prediction"] for r in res.rows] == ["5", "3", "2"] and res.budgets[1]["correct"] == 2


def test_bad_settings_and_bad_roles_are_refused():
    ps = problems({"a": "1"})
    s = Script({"a": (["1"], ["1"])})
    for kw, msg in [({"max_iterations": 0}, "max_iterations must be an integer >= 1"),
                    ({"max_iterations": 1, "fallback": "vote"}, "fallback 'vote'"),
                    ({"max_iterations": 1, "agreement": "all"}, "agreement 'all'")]:
        with pytest.raises(InputError, match=msg):
            s.run(ps, **kw)
    with pytest.raises(InputError, match=r"role kg returned 0 results for 1 problems \(iteration 1\)"):
        consistency_loop(ps, ir=s.ir, kg=lambda p, t: [], dr=s.dr, max_iterations=1)
    with pytest.raises(InputError, match="not unique"):
        s.run(ps + ps, max_iterations=1)
