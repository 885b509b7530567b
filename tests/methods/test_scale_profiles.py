"""benchmarks/scale.py without running a model: every method's real-scale and smoke settings are a valid
recipe with the issue's budgets, and merging a method's rows keeps every other row (contract 9)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import scale  # noqa: E402

from mathdistill.io import read_json, read_yaml_mapping, write_json  # noqa: E402
from mathdistill.methods.config import load_config  # noqa: E402

SPEC = read_yaml_mapping(scale.PROFILES_FILE)


def config(name, profile, tmp_path):
    method, ovr = scale.overrides(name, profile, SPEC, tmp_path)
    return load_config(scale.RECIPES / scale.EXPERIMENTS[name].recipe, ovr)


@pytest.mark.parametrize("profile", ["gpu", "cpu-smoke"])
@pytest.mark.parametrize("name", list(scale.EXPERIMENTS))
def test_every_method_has_a_valid_recipe_in_each_profile(name, profile, tmp_path):
    cfg = config(name, profile, tmp_path)
    assert cfg.name == f"{name}-{profile}" and Path(cfg.runs_dir) == tmp_path
    limits = {e.dataset: e.limit for e in cfg.data.eval}
    assert limits == ({"gsm8k": None, "svamp": None} if profile == "gpu" else {"gsm8k": 2, "svamp": 2})


def test_real_scale_budgets(tmp_path):
    cot = config("cot", "gpu", tmp_path)
    assert cot.data.train.limit is None and cot.train.epochs == 3 and cot.train.full and cot.eval.batch_size == 1024
    assert config("lorid", "gpu", tmp_path).loop.max_iterations == 20
    fdd = config("fdd", "gpu", tmp_path)
    assert fdd.rounds == 2 and fdd.data.train.limit == 3000
    siked = config("siked", "gpu", tmp_path)
    assert (siked.iterations, siked.sample.k, siked.sample.batch_size) == (2, 4, 1024)
    assert config("base", "gpu", tmp_path).data.eval[0].limit is None


def test_merge_replaces_a_methods_rows_and_keeps_the_others(tmp_path):
    out = tmp_path / "scale.json"
    row = lambda m, d, acc: {"method": m, "dataset": d, "n": 10, "accuracy": acc, "ci95": [0.0, 1.0],  # noqa: E731
                             "experiment": m.split(":")[0], "measured": "now"}
    write_json(out, {"rows": [row("cot", "gsm8k", 0.1), row("etd:pot", "gsm8k", 0.2)], "skipped": {"lorid": "x"}})
    dev = {"kind": "cuda", "name": "H100"}
    doc = scale.merge(out, {"cot": {"rows": [row("cot", "gsm8k", 0.3)], "seconds": 1.0, "overrides": []}},
                      {"fdd": "not registered"}, "gpu", SPEC, dev)
    assert read_json(out) == doc and doc["device"] == dev and doc["skipped"] == {"lorid": "x", "fdd": "not registered"}
    assert sorted((r["method"], r["accuracy"]) for r in doc["rows"]) == [("cot", 0.3), ("etd:pot", 0.2)]
    assert "| cot | gsm8k | 10 | 30.0% (0.0%-100.0%) |" in scale.table(doc["rows"])


@pytest.mark.parametrize("name", list(scale.EXPERIMENTS))
def test_smoke_budget_is_tiny_for_every_method(name, tmp_path):
    """cpu-smoke runs every method's stages at a few problems, one optimizer step per training, few new tokens
    (the issue: all methods within 10 minutes on this CPU); whatever a method's experiment asks for."""
    cfg = config(name, "cpu-smoke", tmp_path)
    if hasattr(cfg, "train"):
        assert cfg.data.train.limit == 4 and cfg.train.epochs == 1 and cfg.train.batch_size >= 4
        assert cfg.train.max_seq_len <= 256
    assert cfg.eval.max_new_tokens <= 32
    for section, key in (("sample", "max_new_tokens"), ("loop", "knowledge_max_new_tokens")):
        if getattr(cfg, section, None) is not None and getattr(getattr(cfg, section), key, None) is not None:
            assert getattr(getattr(cfg, section), key) <= 32, (section, key)
    assert getattr(cfg, "rounds", 1) <= 1 and getattr(cfg, "iterations", 1) <= 1
    if hasattr(cfg, "loop"):
        assert cfg.loop.max_iterations <= 2
    if hasattr(cfg, "sample") and hasattr(cfg.sample, "k"):
        assert cfg.sample.k == 1


def test_profiles_keep_their_own_results_file(tmp_path, monkeypatch):
    """A smoke run never writes into benchmarks/results/scale.json, and no results file mixes profiles."""
    out = tmp_path / "scale.json"
    dev = {"kind": "cpu", "name": "cpu"}
    scale.merge(out, {}, {}, "cpu-smoke", SPEC, dev)
    with pytest.raises(SystemExit, match="profile 'cpu-smoke', not 'gpu'"):
        scale.merge(out, {}, {}, "gpu", SPEC, dev)
    def must_not_run(*a, **k):
        raise AssertionError("a smoke run got past the check")

    monkeypatch.setattr(scale, "run_method", must_not_run)
    monkeypatch.setattr(scale, "merge", must_not_run)
    monkeypatch.setattr(sys, "argv", ["scale.py", "--methods", "base", "--profile", "cpu-smoke",
                                      "--out", str(scale.OUT["gpu"])])
    with pytest.raises(SystemExit, match="holds the gpu profile's rows"):
        scale.main()
