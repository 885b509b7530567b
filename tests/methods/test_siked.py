"""SIKeD's logic on scripted inputs (no model): keeping the student's correct samples (L2M checked for its
sub-questions), the mixing rules (the official per-strategy one) and alpha overall and per strategy, the
training rows under one neutral prompt, the self-chosen strategy's tag parsing and scoring, and the
recipe's config."""

from __future__ import annotations

import pytest

from mathdistill import thoughts
from mathdistill.eval.chosen import histogram, score_chosen
from mathdistill.io import InputError
from mathdistill.student.selfdata import keep_correct, mix, training_rows

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _sampled(pid: str, outputs: list[str], corrects: list[bool], question: str = "Q?") -> dict:
    """One problem's row as `student.sample.sample` returns it."""
    return {"id": pid, "question": question, "gold": "7", "outputs": outputs, "predictions": ["7"] * len(outputs),
            "corrects": corrects, "errors": [None] * len(outputs), "num_tokens": [5] * len(outputs),
            "looped": [False] * len(outputs)}


def _teacher(pid: str, thought: str, kept: bool = True) -> dict:
    """A `teach` rationale row."""
    return {"problem_id": pid, "question": f"question {pid}", "gold": "7", "thought": thought, "sample": 0,
            "teacher": "replay", "text": f"{thought} solution of {pid}", "correct": kept, "kept": kept}


SAMPLES = {
    # p1: solved in CoT twice (the same text up to spacing and case) and once more differently; p2: never
    # solved; p3: solved in PoT only
    "cot": [_sampled("p1", ["[CoT]\n3 + 4 = 7. The answer is 7", "[CoT]\n3 +  4 = 7.  the answer is 7",
                            "[CoT]\nSo 7. The answer is 7"], [True, True, True]),
            _sampled("p2", ["[CoT]\nThe answer is 8", "[CoT]\nThe answer is 9", "[CoT]\n6"], [False, False, False]),
            _sampled("p3", ["[CoT]\nThe answer is 1", "[CoT]\nThe answer is 2", "[CoT]\n3"], [False, False, False])],
    "pot": [_sampled("p1", ["[PoT]\nans = 6", "[PoT]\nans = 5", "[PoT]\nans = 4"], [False, False, False]),
            _sampled("p2", ["[PoT]\nans = 1", "[PoT]\nans = 2", "[PoT]\nans = 3"], [False, False, False]),
            _sampled("p3", ["[PoT]\nans = 2", "[PoT]\nans = 3 + 4", "[PoT]\nans = 7"], [False, True, True])],
}
TEACHER = [_teacher(p, t) for p in ("p1", "p2", "p3") for t in ("cot", "pot")] + [_teacher("p2", "eot", kept=False)]


def test_keep_all_distinct_keeps_every_correct_text_once_without_its_tag():
    rows = keep_correct(SAMPLES, "all_distinct")
    assert len(rows) == 18  # every sample becomes a row; `kept` marks the ones to train on
    kept = [(r["problem_id"], r["thought"], r["text"]) for r in rows if r["kept"]]
    assert kept == [("p1", "cot", "3 + 4 = 7. The answer is 7"),  # its near-duplicate (spacing, case) dropped
                    ("p1", "cot", "So 7. The answer is 7"),
                    ("p3", "pot", "ans = 3 + 4"), ("p3", "pot", "ans = 7")]
    assert all(r["teacher"] == "student" for r in rows)
    assert sum(r["duplicate"] for r in rows) == 1


def test_keep_one_keeps_the_first_correct_sample_per_problem_and_strategy():
    kept = [(r["problem_id"], r["thought"], r["sample"]) for r in keep_correct(SAMPLES, "one") if r["kept"]]
    assert kept == [("p1", "cot", 0), ("p3", "pot", 1)]
    with pytest.raises(InputError, match="keep 'some'"):
        keep_correct(SAMPLES, "some")


def test_per_strategy_mixing_is_the_official_rule():
    """create-mixed-data.py: the teacher's rows of strategy s for a problem wherever the student has no correct
    sample of it in s. A student correct on p1 in CoT only gets the teacher's PoT and L2M rows of p1, no CoT row."""
    samples = {"cot": [_sampled("p1", ["[CoT]\nThe answer is 7", "[CoT]\n7"], [True, True]),
                       _sampled("p2", ["[CoT]\nThe answer is 3", "[CoT]\n4"], [False, False])],
               "pot": [_sampled("p1", ["[PoT]\nans = 6", "[PoT]\nans = 5"], [False, False]),
                       _sampled("p2", ["[PoT]\nans = 7", "[PoT]\nans = 1"], [True, False])],
               "l2m": [_sampled("p1", ["[L2M]\nThe answer is 9", "[L2M]\n8"], [False, False]),
                       _sampled("p2", ["[L2M]\nSub-question 1: How many?\nAnswer 1: 7.\nThe answer is 7", "[L2M]\n0"],
                                [True, False])]}
    teacher = [_teacher(p, t) for p in ("p1", "p2") for t in ("cot", "pot", "l2m")]
    mixed, stats = mix(keep_correct(samples, "one"), teacher, "per-strategy")
    assert [(r["problem_id"], r["thought"], r["origin"]) for r in mixed] == [
        ("p1", "cot", "student"), ("p2", "pot", "student"), ("p2", "l2m", "student"),
        ("p1", "pot", "teacher"), ("p1", "l2m", "teacher"), ("p2", "cot", "teacher")]
    assert (stats["mixing"], stats["solved"], stats["self_rows"], stats["teacher_rows"]) == ("per-strategy", 2, 3, 3)
    assert stats["alpha"] == pytest.approx(3 / 6) and stats["teacher_problems"] == 2
    assert {t: c["alpha"] for t, c in stats["per_strategy"].items()} == {"cot": 0.5, "pot": 0.5, "l2m": 0.5}
    # the per-problem rule (mathdistill's before, a named option) gives p1 and p2 nothing: each is solved somewhere
    assert mix(keep_correct(samples, "one"), teacher, "per-problem")[1]["teacher_rows"] == 0


def test_an_l2m_sample_without_sub_questions_is_not_kept_and_its_strategy_counts_unsolved():
    """SIKeD's code drops L2M samples with no sub-question before it keeps the correct ones: p1's right answer
    with no decomposition is no L2M solution, so the teacher's L2M row of p1 still comes in."""
    samples = {"l2m": [_sampled("p1", ["[L2M]\nThe answer is 7", "[L2M]\nSub-question 1: Total?\n7"], [True, True])]}
    own = keep_correct(samples, "all_distinct")
    assert [r["kept"] for r in own] == [False, False]
    assert {r["error"] for r in own} == {"no sub-question / answer pair"}
    mixed, stats = mix(own, [_teacher("p1", "l2m")], "per-strategy")
    assert [r["origin"] for r in mixed] == ["teacher"]
    assert stats["per_strategy"]["l2m"] == {"samples": 2, "correct": 2, "malformed": 2, "self": 0, "teacher": 1,
                                            "alpha": 1.0}
    good = "Sub-question 1: How many in all?\nAnswer to Sub-question 1: 3 + 4 = 7\nFinal Answer: 7"  # the official form
    assert thoughts.thought_class("l2m").malformed(good) is None
    assert keep_correct({"l2m": [_sampled("p1", [f"[L2M]\n{good}"], [True])]}, "one")[0]["kept"]


def test_a_teacher_l2m_rationale_without_sub_questions_is_verified_but_not_kept(tmp_path, data_dir):
    from mathdistill.data import load
    from mathdistill.io import write_json
    from mathdistill.teacher import TeacherConfig, collect

    ps = load("gsm8k", "train", data_dir=data_dir)[:2]
    write_json(tmp_path / "l2m.json", [
        {"instruction": ps[0].question, "output": f"Sub-question 1: What is asked?\nAnswer 1: {ps[0].answer}.\n"
                                                  f"The answer is {ps[0].answer}."},
        {"instruction": ps[1].question, "output": f"Thinking it over.\nThe answer is {ps[1].answer}."}])
    res = collect(ps, "l2m", TeacherConfig(kind="replay", replay=[str(tmp_path / "l2m.json")]), tmp_path / "out",
                  progress=False)
    assert [(r["correct"], r["kept"], r["error"]) for r in res.rows] == [
        (True, True, None), (True, False, "no sub-question / answer pair")]
    assert (res.summary["correct"], res.summary["kept"]) == (2, 1)


def test_per_problem_mixing_adds_teacher_rows_only_for_problems_never_solved():
    own = keep_correct(SAMPLES, "all_distinct")
    mixed, stats = mix(own, TEACHER, "per-problem")
    # p1 (solved in CoT) and p3 (solved in PoT) get no teacher rows, in any strategy; p2 gets both kept ones
    teacher_rows = [(r["problem_id"], r["thought"]) for r in mixed if r["origin"] == "teacher"]
    assert teacher_rows == [("p2", "cot"), ("p2", "pot")]
    assert [r["origin"] for r in mixed].count("student") == 4
    assert stats["solved"] == 2 and stats["problems"] == 3 and stats["teacher_problems"] == 1
    assert stats["self_rows"] == 4 and stats["teacher_rows"] == 2
    assert stats["alpha"] == pytest.approx(2 / 6)
    assert stats["per_strategy"]["cot"] == {"samples": 9, "correct": 3, "malformed": 0, "self": 2, "teacher": 1,
                                            "alpha": pytest.approx(1 / 3)}
    assert stats["per_strategy"]["pot"] == {"samples": 9, "correct": 2, "malformed": 0, "self": 2, "teacher": 1,
                                            "alpha": pytest.approx(1 / 3)}
    assert stats["per_strategy"]["eot"] == {"samples": 0, "correct": 0, "malformed": 0, "self": 0, "teacher": 0,
                                            "alpha": None}  # not kept
    # the official rule on the same samples: p1 gets the teacher's PoT row, p3 its CoT row, p2 both
    mixed, stats = mix(own, TEACHER, "per-strategy")
    assert [(r["problem_id"], r["thought"]) for r in mixed if r["origin"] == "teacher"] == [
        ("p1", "pot"), ("p2", "cot"), ("p2", "pot"), ("p3", "cot")]


def test_training_rows_share_one_neutral_prompt_and_start_with_the_strategy_tag():
    own = keep_correct(SAMPLES, "one")
    mixed, _ = mix(own, TEACHER, "per-problem")
    rows = training_rows(mixed, ["cot", "pot"])
    assert [(r["problem_id"], r["thought"], r["origin"]) for r in rows] == [
        ("p1", "cot", "student"), ("p3", "pot", "student"), ("p2", "cot", "teacher"), ("p2", "pot", "teacher")]
    prompts = {r["problem_id"]: r["prompt"] for r in rows}
    assert prompts["p1"] == thoughts.choice_prompt("Q?", ["cot", "pot"])
    assert prompts["p2"] == "question p2\nChoose a strategy ([CoT] or [PoT]), write its tag first, then solve."
    # the same prompt whatever the strategy: nothing in it says which one to write
    assert len({r["prompt"] for r in rows if r["problem_id"] == "p2"}) == 1
    assert rows[0]["completion"] == "[CoT]\n3 + 4 = 7. The answer is 7"
    assert rows[1]["completion"] == "[PoT]\nans = 3 + 4"
    assert rows[3]["completion"] == "[PoT]\npot solution of p2"
    assert all(thoughts.detect(r["completion"]) == r["thought"] for r in rows)


def test_choice_prompt_names_every_strategy_tag():
    assert thoughts.choice_prompt(" How many? ", ["cot", "pot", "eot"]) == (
        "How many?\nChoose a strategy ([CoT], [PoT] or [EoT]), write its tag first, then solve.")
    assert thoughts.choice_prompt("Q", ["l2m"]) == "Q\nChoose a strategy ([L2M]), write its tag first, then solve."


def test_a_self_chosen_strategy_is_read_from_the_tag_and_scored_in_that_format():
    outputs = [
        "[PoT]\na = 3\nans = a + 4",          # a program: executed -> 7
        "  [eot]\nx = 3\nans = x + 4",        # leading space, lower case: equations solved -> 7
        "[CoT]\n3 + 4 = 7. The answer is 7",
        "3 + 4 = 7. The answer is 7",         # no tag: scored as CoT, counted as none
        "[PoT]\nThe answer is 7",             # announced PoT but wrote prose: no program, wrong
        "[L2M]\nThe answer is 7",             # a tag outside the strategies: none, scored as CoT
        "[CoT]\nans = 7",                     # CoT takes the last number
    ]
    scored = score_chosen(outputs, ["7"] * len(outputs), ["cot", "pot", "eot"])
    assert [t for t, _ in scored] == ["pot", "eot", "cot", None, "pot", None, "cot"]
    assert [s.correct for _, s in scored] == [True, True, True, True, False, True, True]
    assert scored[4][1].prediction is None
    assert histogram([t for t, _ in scored], ["cot", "pot", "eot"]) == {"cot": 2, "pot": 2, "eot": 1, "none": 2}
    assert histogram([], ["cot", "pot"]) == {"cot": 0, "pot": 0, "none": 0}
    with pytest.raises(InputError, match="2 outputs but 1 gold"):
        score_chosen(["a", "b"], ["1"], ["cot"])


def test_the_tag_a_forced_strategy_prefills_is_what_training_targets_begin_with():
    for name in ("cot", "pot", "eot", "l2m"):
        fmt = thoughts.get(name)
        target = fmt.student_target("body", tagged=True)
        assert target.startswith(f"{fmt.trigger}\n") and thoughts.detect(target) == name
        assert thoughts.strip_tag(target) == "body"


def _config(**over):
    from mathdistill.methods.registry import load_config

    return load_config(None, [f"{k}={v}" for k, v in over.items()], base={"name": "s", "method": "siked"})


def test_config_defaults_are_the_official_code_s_and_bad_values_are_named():
    cfg = _config()
    assert cfg.strategies == ["cot", "pot", "l2m"] and cfg.thoughts == cfg.strategies
    assert (cfg.iterations, cfg.keep, cfg.mixing, cfg.init, cfg.sample.k) == (2, "one", "per-strategy", "previous", 10)
    assert (cfg.sample.temperature, cfg.sample.top_p, cfg.sample.max_new_tokens) == (0.7, 0.95, 512)
    assert _config(strategies="[cot, eot]").thoughts == ["cot", "eot"]
    for over, message in [({"strategies": "[cot, abc]"}, "unknown format 'abc'"),
                          ({"mixing": "half"}, "mixing"), ({"keep": "two"}, "keep"), ({"init": "zero"}, "init"),
                          ({"mixing": "adaptive"}, "per-strategy .the official code's adaptive mixing"),
                          ({"iterations": -1}, "iterations"), ({"sample.k": 0}, "sample.k"),
                          ({"thoughts": "[cot]"}, "set strategies instead"),
                          ({"eval.samples": 3}, "eval.samples must be 1")]:
        with pytest.raises(InputError, match=message):
            _config(**over)


def test_the_recipe_is_the_official_code_s_and_the_cpu_profile_states_its_own(tmp_path):
    """recipes/siked.yaml: the official settings; benchmarks/experiments/siked.yaml keeps what its recorded rows
    were measured with (the rule before, all distinct samples, the training regularisation then)."""
    import yaml

    from mathdistill.methods.registry import load_config

    cfg = load_config(ROOT / "recipes" / "siked.yaml")
    assert (cfg.strategies, cfg.keep, cfg.mixing) == (["cot", "pot", "l2m"], "one", "per-strategy")
    assert (cfg.sample.k, cfg.sample.temperature, cfg.sample.top_p, cfg.sample.max_new_tokens) == (10, 0.7, 0.95, 512)
    assert (cfg.eval.max_new_tokens, cfg.eval.temperature, cfg.train.max_seq_len) == (1024, 0.0, 512)
    t = cfg.train
    assert (t.lora_r, t.lora_alpha, t.lora_dropout, t.weight_decay, t.warmup, t.lr, t.epochs) == (
        16, 32, 0.0, 0.01, 5, 2e-4, 3)
    exp = yaml.safe_load((ROOT / "benchmarks" / "experiments" / "siked.yaml").read_text())
    cpu = load_config(ROOT / "recipes" / exp["recipe"], exp["overrides"])
    assert (cpu.strategies, cpu.keep, cpu.mixing, cpu.sample.k, cpu.sample.max_new_tokens) == (
        ["cot", "pot"], "all_distinct", "per-problem", 2, None)
    assert (cpu.train.lora_dropout, cpu.train.weight_decay, cpu.train.warmup) == (0.05, 0.0, 0.03)


def test_l2m_without_a_live_teacher_is_refused_before_anything_runs(data_dir):
    from mathdistill.methods.runner import validate

    with pytest.raises(InputError, match="no teacher configured for format 'l2m'"):
        validate(_config(strategies="[cot, l2m]", **{"data.data_dir": str(data_dir)}))


def test_an_iteration_with_nothing_to_train_on_is_refused_naming_the_folder(tmp_path):
    from types import SimpleNamespace

    from mathdistill.methods.siked import _data

    it = SimpleNamespace(dir=tmp_path / "iteration-0", path=lambda *p: tmp_path.joinpath("iteration-0", *p))
    with pytest.raises(InputError, match="iteration-0: no kept teacher rationales and no correct own samples"):
        _data(it, _config(), [_teacher("p1", "cot", kept=False)], own=False)
    assert not (tmp_path / "iteration-0" / "data" / "train.jsonl").exists()
    summary = _data(it, _config(), TEACHER, own=False)  # iteration 0: the teacher's kept rows, alpha 1
    assert (summary["examples"], summary["alpha"], summary["per_thought"]) == (6, 1.0, {"cot": 3, "pot": 3, "l2m": 0})
