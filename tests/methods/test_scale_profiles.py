"""benchmarks/scale.py without running a model: every method's settings in each profile are a valid recipe with
the profile's budgets; the gpu-table plan fits its 9 minutes at the measured speeds, names every method and its
training problems; a plan over `--budget` is refused before anything runs; the table keeps every other row
(contract 9) and no results file mixes profiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
import scale  # noqa: E402

from mathdistill.io import read_json, read_yaml_mapping, write_json  # noqa: E402
from mathdistill.methods.registry import load_config  # noqa: E402

SPEC = read_yaml_mapping(scale.PROFILES_FILE)
TABLE = ["base", "cot-calc", "cot-full", "pot", "eotd", "etd", "kpdd-cot", "kpdd-pot", "lorid", "fdd", "siked"]


def config(name, profile, tmp_path, train_limit=None):
    method, ovr = scale.overrides(name, profile, SPEC, tmp_path, train_limit)
    return load_config(scale.RECIPES / scale.EXPERIMENTS[name].recipe, ovr)


@pytest.mark.parametrize("profile", ["gpu", "cpu-smoke", "gpu-table", "gpu-dryrun"])
@pytest.mark.parametrize("name", list(scale.EXPERIMENTS))
def test_every_method_has_a_valid_recipe_in_each_profile(name, profile, tmp_path):
    cfg = config(name, profile, tmp_path, 500 if profile == "gpu-table" else None)
    assert cfg.name == f"{name}-{profile}" and Path(cfg.runs_dir) == tmp_path
    limits = {e.dataset: e.limit for e in cfg.data.eval}
    assert limits == {"gpu": {"gsm8k": None, "svamp": None}, "cpu-smoke": {"gsm8k": 2, "svamp": 2},
                      "gpu-table": {"gsm8k": None}, "gpu-dryrun": {"gsm8k": 4}}[profile]


def test_real_scale_budgets(tmp_path):
    cot = config("cot", "gpu", tmp_path)
    assert cot.data.train.limit is None and cot.train.epochs == 3 and cot.train.full and cot.eval.batch_size == 1024
    assert config("lorid", "gpu", tmp_path).loop.max_iterations == 20
    fdd = config("fdd", "gpu", tmp_path)
    assert fdd.rounds == 2 and fdd.data.train.limit == 3000
    siked = config("siked", "gpu", tmp_path)
    assert (siked.iterations, siked.sample.k, siked.sample.batch_size) == (2, 4, 1024)
    assert config("base", "gpu", tmp_path).data.eval[0].limit is None


def test_the_gpu_table_rows_and_the_dry_run_share_one_plan(tmp_path):
    """Every row of the table has its own mechanism: cot a LoRA, cot-full a full fine-tune, at least rounds 0-1 and
    iterations 0-1; the dry run runs the same settings on a random 2-layer student, with bf16 autocast."""
    table, dry = ({n: config(n, p, tmp_path, 500 if p == "gpu-table" else None) for n in TABLE}
                  for p in ("gpu-table", "gpu-dryrun"))
    assert SPEC["profiles"]["gpu-table"]["methods"] == TABLE
    assert not table["cot-calc"].train.full and table["cot-calc"].eval.calculator == "both"
    assert table["cot-full"].train.full and dry["cot-full"].train.full
    assert table["fdd"].rounds >= 1 and table["siked"].iterations >= 1
    lorid, siked = table["lorid"], table["siked"]  # the papers' presets (docs/methods.md), trimmed to fit
    assert lorid.loop.preset == "paper" and not lorid.loop.first_greedy and lorid.loop.max_iterations >= 1
    assert (siked.mixing, siked.keep) == ("per-strategy", "one")
    for name in TABLE:
        t, d = table[name], dry[name]
        assert t.data.eval[0].limit is None and d.data.eval[0].limit == 4
        assert d.student.model.endswith("student-random-2-layer") and t.student.model == "smollm2-135m"
        if hasattr(t, "train"):
            assert t.data.train.limit == 500 and t.train.epochs == d.train.epochs == 1
            assert (t.train.packing, t.train.batch_tokens, t.train.max_seq_len, t.train.full) == (
                d.train.packing, d.train.batch_tokens, d.train.max_seq_len, d.train.full)
            assert t.train.packing == "bfd"  # what a GPU would choose, said so the dry run takes the same path
            assert d.train.precision == "bf16"
        assert t.eval.calculator == d.eval.calculator and t.eval.batch_size == d.eval.batch_size == 1536
        assert getattr(t, "rounds", 0) == getattr(d, "rounds", 0) and getattr(t, "iterations", 0) == getattr(
            d, "iterations", 0)


def plan(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "scale.py"), "--methods", "all", *args],
                          capture_output=True, text=True, timeout=300)


def test_the_gpu_table_plan_fits_its_budget_and_names_every_method(tmp_path):
    proc = plan("--profile", "gpu-table", "--plan", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.split() and line.split()[0] in TABLE}
    assert list(rows) == TABLE  # every method, in the table's order, base and cot first, siked last
    problems = {int(r[1].replace(",", "")) for n, r in rows.items() if n != "base"}
    assert len(problems) == 1 and problems.pop() >= 100  # the same training problems for every method
    total = next(line for line in lines if line.startswith("total")).split()
    assert float(total[1]) <= 540 and "budget 540 s" in " ".join(total)
    assert not (tmp_path / "runs").exists()  # a plan writes nothing


def test_a_plan_over_the_budget_is_refused_before_anything_runs(tmp_path):
    proc = plan("--profile", "gpu-table", "--budget", "120", "--runs-dir", str(tmp_path / "runs"),
                "--out", str(tmp_path / "out"))
    assert proc.returncode != 0 and "refused: the plan needs" in proc.stderr and "budget of 120 s" in proc.stderr
    assert "lorid" in proc.stderr.split("trim the costliest")[1]  # names the methods to trim
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def row(m, d, acc, exp=None):
    return {"method": m, "dataset": d, "n": 10, "accuracy": acc, "ci95": [0.0, 1.0], "experiment": exp or m.split(":")[0],
            "measured": "now"}


def test_the_table_replaces_a_methods_rows_and_keeps_the_others(tmp_path):
    settings = {"train_limit": 300, "datasets": ["gsm8k"], "trims": [], "total": 500.0}
    dev = {"kind": "cuda", "name": "H100"}
    write_json(tmp_path / "scale.json", {"profile": "gpu-table", "rows": [row("cot", "gsm8k", 0.1),
                                                                           row("etd:pot", "gsm8k", 0.2, "etd")],
                                          "skipped": {"lorid": "x"}})
    tab = scale.Table(tmp_path, "gpu-table", dev, settings, ["etd", "cot-calc"])
    doc = tab.write([row("cot", "gsm8k", 0.3, "cot-calc")], {"cot-calc": {"seconds": 1.0}}, {"fdd": "not registered"})
    assert read_json(tmp_path / "scale.json") == doc and doc["device"] == dev and doc["train_problems"] == 300
    assert doc["skipped"] == {"lorid": "x", "fdd": "not registered"}
    assert [(r["method"], r["accuracy"]) for r in doc["rows"]] == [("etd:pot", 0.2), ("cot", 0.3)]  # profile order
    assert "| cot | gsm8k | 10 | 30.0% (0.0%-100.0%) |" in (tmp_path / "scale.md").read_text()
    assert (tmp_path / "scale.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="profile 'gpu-table', not 'gpu'"):
        scale.Table(tmp_path, "gpu", dev, settings, []).write([])


def test_an_experiment_names_its_rows(tmp_path):
    """cot-full runs the cot recipe fully fine-tuned; its rows are cot-full, cot-full:x, cot-full+calc."""
    rows = [row("cot", "gsm8k", 0.1), row("cot+calc", "gsm8k", 0.2)]
    assert [r["method"] for r in scale.EXPERIMENTS["cot-full"].rows(rows, "cot")] == ["cot-full", "cot-full+calc"]
    assert scale.EXPERIMENTS["cot"].rows(rows, "cot") == rows


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


def test_profiles_keep_their_own_results_file(monkeypatch):
    """Only gpu-table writes into benchmarks/results (scale.json); --out names a folder."""
    def must_not_run(*a, **k):
        raise AssertionError("a run got past the check")

    monkeypatch.setattr(scale, "run_method", must_not_run)
    for out, message in ((scale.RESULTS, "holds the gpu-table profile's rows"), ("x/scale.json", "names a folder")):
        monkeypatch.setattr(sys, "argv", ["scale.py", "--methods", "base", "--profile", "cpu-smoke", "--out", str(out)])
        with pytest.raises(SystemExit, match=message):
            scale.main()
