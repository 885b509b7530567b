"""FDD's recipe logic without a model: its config (checked keys), row names, the recipe files, and one
round of the pool teacher's generation on real GSM8K train problems (draws, exclusion, decontamination)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mathdistill.io import InputError
from mathdistill.methods.config import describe
from mathdistill.methods.fdd import _generate, easy_hard, family
from mathdistill.methods.registry import METHODS, load_config
from mathdistill.methods.runner import validate

ROOT = Path(__file__).resolve().parents[2]


def test_config_keys_and_checks():
    keys = {k for k, _, _ in describe(METHODS["fdd"])}
    assert {"rounds", "paths_per_problem", "retrain_from", "feedback.samples", "feedback.solve_threshold",
            "generate.teacher", "generate.per_problem", "generate.label_samples", "generate.label_threshold",
            "decontam.ngram", "decontam.cosine", "eval.vote"} <= keys
    recipe = ROOT / "recipes" / "fdd.yaml"
    with pytest.raises(InputError, match="paths_per_problem"):
        load_config(recipe, ["teach.samples=2"])
    with pytest.raises(InputError, match="generate.teacher"):
        load_config(recipe, ["generate.teacher={kind: replay, replay: [x.json]}"])
    with pytest.raises(InputError, match="retrain_from"):
        load_config(recipe, ["retrain_from=scratch"])
    with pytest.raises(InputError, match="label_threshold"):
        load_config(recipe, ["generate.label_threshold=1.5"])


def test_row_families():
    assert family(["cot"]) == "fdd"
    assert family(["cot", "pot", "eot"]) == "fdd-etd" and family(["eot", "cot", "pot"]) == "fdd-etd"
    assert family(["pot"]) == "fdd-pot"


def test_feedback_splits_easy_and_hard_by_the_solve_threshold():
    solved = {"a": 4, "b": 2, "c": 1}  # correct samples of 4 (k samples x formats); "d" never solved
    got = easy_hard(["a", "b", "c", "d"], solved, attempts=4, threshold=0.5)
    assert (got["easy"], got["hard"], got["share"]["b"]) == (["a", "b"], ["c", "d"], 0.5)  # at the threshold: easy
    assert easy_hard(["a", "b", "c", "d"], solved, attempts=4, threshold=0.75)["easy"] == ["a"]
    greedy = easy_hard(["a", "d"], {"a": 1}, attempts=1, threshold=0.5)
    assert (greedy["easy"], greedy["hard"], greedy["problems"]) == (["a"], ["d"], 2)


def test_recipe_and_experiment_files(data_dir, monkeypatch):
    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    cfg = load_config(ROOT / "recipes" / "fdd.yaml")
    validate(cfg)
    assert (cfg.rounds, cfg.retrain_from, cfg.generate.teacher) == (2, "base", None)
    assert len(cfg.teach.for_thought("cot").replay) == 2  # Llama-3-70B and Gemini paths
    etd = load_config(ROOT / "recipes" / "fdd.yaml", ["thoughts=[cot, pot, eot]"])
    validate(etd)
    exp = yaml.safe_load((ROOT / "benchmarks" / "experiments" / "fdd.yaml").read_text())
    assert exp["recipe"] == "fdd.yaml"
    load_config(ROOT / "recipes" / exp["recipe"], exp["overrides"])


def test_a_live_teacher_seeds_with_all_of_data_train_the_pool_teacher_with_pool_seeds(data_dir, monkeypatch):
    """The paper distils the whole training set in round 0; the 3,000 / 4,473 split only gives the offline
    pool teacher unseen problems to draw."""
    from mathdistill.methods.fdd import seed_problems

    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    recipe = ROOT / "recipes" / "fdd.yaml"
    pool = load_config(recipe)
    assert pool.generate.teacher is None and pool.data.train.limit is None and pool.generate.pool_seeds == 3000
    seeds = seed_problems(pool)
    assert len(seeds) == 3000 and seeds[-1].id == "gsm8k-train-2999"
    live = load_config(recipe, ["generate.teacher={kind: openai, url: 'http://127.0.0.1:9/v1', model: m}"])
    assert len(seed_problems(live)) == 7473
    assert len(seed_problems(load_config(recipe, ["data.train.limit=100"]))) == 100  # a slice: the CPU profile's seeds
    assert len(seed_problems(load_config(recipe, ["generate.pool_seeds=null"]))) == 7473


def test_pool_generation_round(data_dir):
    from mathdistill.teacher.pool import solution_steps

    cfg = load_config(ROOT / "recipes" / "fdd.yaml", [f"data.data_dir={data_dir}", "data.train.limit=6",
                                                       "generate.pool_limit=400", "generate.per_problem=2"])
    from mathdistill.methods import steps

    seeds = steps.problems(cfg.data.train, cfg.data.data_dir)
    easy = [seeds[0].id, seeds[3].id]
    gen = _generate(None, cfg, seeds, easy, {"gsm8k-train-6"}, seeds, 1)
    cands = gen["candidates"]
    assert gen["counts"]["asked"] == 12 and gen["counts"]["generated"] == len(cands) <= 12
    assert gen["counts"]["clean"] == len(gen["problems"]) == 12 - gen["counts"]["contaminated"] - (12 - len(cands))
    ids = [c["id"] for c in cands]
    assert len(set(ids)) == len(ids)  # each pool problem drawn once
    seed_ids = {p.id for p in seeds}
    pool_ids = {f"gsm8k-train-{i}" for i in range(6, 406)}
    assert set(ids) <= pool_ids - {"gsm8k-train-6"} and not set(ids) & seed_ids  # the pool: after the seeds, less drawn
    for c in cands:
        assert c["kind"] == ("harder" if c["seed"] in easy else "similar")
        if c["kind"] == "harder":
            assert c["steps"] > c["seed_steps"]
        assert 0 <= c["cosine"] <= 1 and c["nearest"]["dataset"]
    for p in gen["problems"]:  # the pool's gold answers are the labels
        assert p["answer"] and solution_steps(type(seeds[0])(**p)) >= 1
