"""FDD's problem generation and majority labelling: the label rule (threshold, ties, equivalent
answers), parsing a writer's reply, and both steps against the scripted OpenAI-compatible server
(exact requests, replies cached: a second call sends nothing)."""

from __future__ import annotations

import json

import pytest

from mathdistill.data import Problem
from mathdistill.teacher import TeacherConfig
from mathdistill.teacher.generate import PROMPTS, SYSTEM, label_problems, majority, parse_problem, write_problems


# ----------------------------------------------------------------------------- the label rule


def test_majority_at_the_threshold_labels():
    got = majority(["5", "5", "7", None], threshold=0.5)
    assert got == {"label": "5", "votes": 2, "total": 4, "share": 0.5, "reason": None}


def test_majority_below_the_threshold_does_not_label():
    got = majority(["5", "5", "7", None], threshold=0.6)
    assert got["label"] is None and got["reason"] == "below threshold" and got["share"] == 0.5


def test_a_tie_never_labels_even_above_the_threshold():
    assert majority(["5", "7", "5", "7"], threshold=0.5)["reason"] == "tie"
    assert majority(["5", "7"], threshold=0.1)["label"] is None
    # a smaller third answer does not make the top two less tied
    assert majority(["5", "5", "7", "7", "9"], threshold=0.2)["reason"] == "tie"


def test_equivalent_answers_count_as_one_and_unanswered_samples_count_in_the_total():
    got = majority(["5", "5.0", "5.00", "7"], threshold=0.75)
    assert got["label"] == "5" and got["votes"] == 3 and got["share"] == 0.75
    got = majority(["5", None, None, None], threshold=0.5)
    assert got["label"] is None and got["share"] == 0.25  # one answer of four samples is not a majority
    assert majority([None, None], threshold=0.5) == {"label": None, "votes": 0, "total": 2, "share": 0.0,
                                                    "reason": "no answer"}


# ----------------------------------------------------------------------------- parsing a reply


def test_parse_problem_takes_the_problem_and_stops_at_a_solution():
    text = "Sure!\n**Problem:** Ann has 3 boxes of 12 pens and gives away 7 pens.\nHow many pens are left?\n\nSolution: 36 - 7 = 29"
    assert parse_problem(text) == "Ann has 3 boxes of 12 pens and gives away 7 pens. How many pens are left?"
    assert parse_problem("Problem: Tom buys 4 apples at 2 dollars each. What does he pay?\nAnswer: 8") == \
        "Tom buys 4 apples at 2 dollars each. What does he pay?"
    assert parse_problem("A plain reply: Lee runs 5 km a day for 6 days. How far?") is not None
    assert parse_problem("Problem: too short") is None
    assert parse_problem("") is None and parse_problem(None) is None


# ----------------------------------------------------------------------------- against the scripted server

SEEDS = [Problem("s0", "Mia has 4 red pens and 6 blue pens. How many pens does she have?", "10", "synthetic"),
         Problem("s1", "A box holds 12 eggs. How many eggs are in 3 boxes?", "36", "synthetic")]
WRITTEN = {"s0": "Problem: Mia has 4 red pens, 6 blue pens and twice as many black pens as red ones. How many pens does she have?",
           "s1": "Problem: A crate holds 20 apples. How many apples are in 5 crates?"}


def _user(body: dict) -> str:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def writer(body: dict) -> str:
    """Writes the scripted problem for the seed quoted in the request (sample 1 of s1: no problem)."""
    assert body["messages"][0]["content"] == SYSTEM
    seed = next(p for p in SEEDS if p.question in _user(body))
    if seed.id == "s1" and body["seed"] == 1:
        return "I would rather not."
    return WRITTEN[seed.id] + (f" (version {body['seed']})" if body["seed"] else "")


def test_write_problems_sends_one_request_per_seed_and_sample_and_caches_them(fake_server, tmp_path):
    server = fake_server(reply=writer)
    cfg = TeacherConfig(url=server.url, model="fake-teacher", temperature=0.8, max_retries=0)
    rows = write_problems(SEEDS, {"s0"}, cfg, n=2, out_dir=tmp_path, prefix="r1:", progress=False)
    assert [(r["id"], r["kind"]) for r in rows] == [("r1:s0.h0", "harder"), ("r1:s0.h1", "harder"),
                                                     ("r1:s1.s0", "similar"), ("r1:s1.s1", "similar")]
    assert rows[0]["question"] == WRITTEN["s0"].removeprefix("Problem: ")
    assert rows[1]["question"].endswith("(version 1)")
    assert rows[3]["question"] is None and rows[3]["error"]
    # the easy seed got the "harder variation" prompt, the hard one the "similar" prompt
    users = sorted(_user(e["body"]) for e in server.log)
    assert sum(u.startswith(PROMPTS["harder"].split("{")[0]) for u in users) == 2
    assert sum(u.startswith(PROMPTS["similar"].split("{")[0]) for u in users) == 2
    assert server.count() == 4
    again = write_problems(SEEDS, {"s0"}, cfg, n=2, out_dir=tmp_path, prefix="r1:", progress=False)
    assert again == rows and server.count() == 4  # all from the reply cache


NEW = [Problem("g0", "Ann has 3 boxes of 12 pens and gives away 7 pens. How many are left?", "", "generated"),
       Problem("g1", "Ben reads 10 pages a day. How many pages in a week?", "", "generated"),
       Problem("g2", "Cal buys 3 hats at 5 dollars. What does he pay?", "", "generated")]
ANSWERS = {"g0": ["29", "29", "29.0", "31"],   # 3 of 4 agree: labelled 29, three rationales kept (two texts alike)
           "g1": ["70", "70", "71", "71"],     # a tie: no label
           "g2": ["15", "no", "no", "no"]}      # 1 of 4: below the threshold


def solver(body: dict) -> str:
    p = next(p for p in NEW if p.question in _user(body))
    ans = ANSWERS[p.id][body["seed"]]
    step = "Three boxes of 12 is 36; 36 - 7 = 29." if p.id == "g0" and body["seed"] < 2 else f"Working {body['seed']}."
    return f"{step} The answer is {ans}." if ans != "no" else "I am not sure."


def test_label_problems_by_the_teachers_majority(fake_server, tmp_path):
    server = fake_server(reply=solver)
    cfg = TeacherConfig(url=server.url, model="fake-teacher", temperature=0.7, max_retries=0)
    labels = label_problems(NEW, ["cot"], cfg, m=4, threshold=0.5, out_dir=tmp_path, progress=False)
    assert [(x["id"], x["label"], x["reason"], x["share"]) for x in labels] == [
        ("g0", "29", None, 0.75), ("g1", None, "tie", 0.5), ("g2", None, "below threshold", 0.25)]
    assert [x["kept"] for x in labels] == [2, 0, 0]  # samples 0 and 1 say the same: one of them kept
    rows = [json.loads(line) for line in (tmp_path / "cot" / "rationales.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and server.count() == 12
    g0 = [r for r in rows if r["problem_id"] == "g0"]
    assert [r["correct"] for r in g0] == [True, True, True, False] and all(r["gold"] == "29" for r in g0)
    assert [r["kept"] for r in g0] == [True, False, True, False] and g0[1]["duplicate"]
    assert not any(r["kept"] for r in rows if r["problem_id"] != "g0")
    summary = json.loads((tmp_path / "cot" / "summary.json").read_text())
    assert summary["kept"] == 2 and summary["rationales"] == 12 and summary["offline_stand_in"] is False
    assert "majority" in summary["teacher"]
    label_problems(NEW, ["cot"], cfg, m=4, threshold=0.5, out_dir=tmp_path, progress=False)
    assert server.count() == 12  # nothing sent twice


FORMAT_REPLIES = {  # sample 0, sample 1 of each format for one new problem (3 x 12 - 7 = 29)
    "cot": ["Three boxes of 12 is 36; 36 - 7 = 29. The answer is 29.", "36 - 5 = 31. The answer is 31."],
    "pot": ["pens = 3 * 12\nans = pens - 7", "ans = 3 * 12 / 0"],       # runs to 29; a ZeroDivisionError
    "eot": ["x + 7 = 3 * 12\nans = x", "pens = 3 * 12\nans = pens - 7"],  # solved for x: 29; 29
}


def test_the_label_is_the_majority_over_every_format_with_programs_executed_and_equations_solved(fake_server, tmp_path):
    from mathdistill import thoughts

    systems = {n: thoughts.get(n).teacher_messages("q")[0]["content"] for n in FORMAT_REPLIES}
    server = fake_server(reply=lambda body: FORMAT_REPLIES[next(n for n, s in systems.items()
                                                                if s == body["messages"][0]["content"])][body["seed"]])
    cfg = TeacherConfig(url=server.url, model="fake-teacher", temperature=0.7, max_retries=0)
    (got,) = label_problems(NEW[:1], ["cot", "pot", "eot"], cfg, m=2, threshold=0.6, out_dir=tmp_path, progress=False)
    # 29 (cot 0, pot 0, eot 0, eot 1) against 31 (cot 1) and no answer (pot 1): 4 of 6 samples
    assert (got["label"], got["votes"], got["total"], got["share"], got["kept"]) == ("29", 4, 6, 0.6667, 4)
    kept = {t: [json.loads(line)["kept"] for line in (tmp_path / t / "rationales.jsonl").read_text().splitlines()]
            for t in FORMAT_REPLIES}
    assert kept == {"cot": [True, False], "pot": [True, False], "eot": [True, True]}
    assert server.count() == 6
