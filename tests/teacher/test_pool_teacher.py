"""The pool teacher (offline simulation of FDD's problem generation): which pool problems it draws."""

from __future__ import annotations

import pytest

from mathdistill.data import Problem
from mathdistill.io import InputError
from mathdistill.teacher.pool import PoolTeacher, solution_steps


def gsm(pid: str, question: str, steps: int, answer: str = "1") -> Problem:
    solution = "\n".join(f"Step {i} = <<1+1=2>>2." for i in range(steps)) + f"\n#### {answer}"
    return Problem(pid, question, answer, "gsm8k", {"solution": solution})


POOL = [
    gsm("p-train", "A train travels 60 miles per hour for 3 hours. How far does the train travel?", 1),
    gsm("p-train2", "A train travels 50 miles per hour for 2 hours, then 40 miles per hour for 1 hour. "
                    "How far does the train travel in all?", 3),
    gsm("p-cake", "Sara bakes 12 cakes and sells 5 cakes. How many cakes are left?", 2),
    gsm("p-cake3", "Sara bakes 12 cakes, sells 5 cakes and gives 2 cakes away. How many cakes are left?", 3),
    gsm("p-dog", "A dog eats 2 cups of food a day. How many cups in 7 days?", 1),
]
TRAIN = gsm("s-train", "A train travels 70 miles per hour for 4 hours. How far does the train travel?", 2)
CAKE = gsm("s-cake", "Sara bakes 10 cakes and sells 4 cakes. How many cakes are left?", 2)


def test_solution_steps_counts_the_lines_before_the_answer():
    assert solution_steps(POOL[1]) == 3
    with pytest.raises(InputError):
        solution_steps(Problem("x", "q", "1", "svamp"))


def test_a_hard_problem_gets_the_most_similar_pool_problem():
    (d,) = PoolTeacher(POOL).draw([TRAIN], easy=set(), n=1)
    assert (d.seed, d.kind, d.problem.id) == ("s-train", "similar", "p-train")
    assert d.problem.answer == "1" and 0 < d.similarity < 1 and (d.seed_steps, d.steps) == (2, 1)


def test_an_easy_problem_gets_a_similar_one_with_more_steps():
    teacher = PoolTeacher(POOL)
    (d,) = teacher.draw([TRAIN], easy={"s-train"}, n=1)
    assert (d.kind, d.problem.id, d.steps) == ("harder", "p-train2", 3)  # p-train is closer but has fewer steps
    (d,) = teacher.draw([CAKE], easy={"s-cake"}, n=1)
    assert d.problem.id == "p-cake3"  # p-cake is closer but has as many steps (2), not more


def test_n_per_problem_most_similar_first_and_each_pool_problem_drawn_once():
    teacher = PoolTeacher(POOL)
    draws = teacher.draw([TRAIN, CAKE], easy=set(), n=2)
    assert [(d.seed, d.problem.id) for d in draws] == [("s-train", "p-train"), ("s-train", "p-train2"),
                                                       ("s-cake", "p-cake"), ("s-cake", "p-cake3")]
    assert draws[0].similarity >= draws[1].similarity
    # drawn earlier (exclude): the next most similar; another problem wanting the same pool problem gets the next one
    (d,) = teacher.draw([TRAIN], easy=set(), n=1, exclude={"p-train"})
    assert d.problem.id == "p-train2"
    twin = gsm("s-train-b", TRAIN.question.replace("70", "80"), 2)
    assert [d.problem.id for d in teacher.draw([TRAIN, twin], easy=set(), n=1)] == ["p-train", "p-train2"]


def test_nothing_is_drawn_when_no_pool_problem_qualifies():
    teacher = PoolTeacher(POOL)
    assert teacher.draw([gsm("s-long", TRAIN.question, 5)], easy={"s-long"}, n=1) == []  # none has > 5 steps
    assert teacher.draw([TRAIN], easy=set(), n=1, exclude={p.id for p in POOL}) == []
    with pytest.raises(InputError):
        PoolTeacher([])
