"""A recipe's `data.calc_marks` reaches the rows the student trains on (issue 16, Build 4): gold-derived
cot (the reference teacher) keeps its notes, recorded teacher cot gets marks, off changes nothing."""

from __future__ import annotations

import pytest

from mathdistill.io import read_jsonl
from mathdistill.methods import steps
from mathdistill.methods.registry import load_config
from mathdistill.methods.run import Run


def rows(tmp_path, data_dir, marks: str, teacher: str) -> list[dict]:
    over = [f"name=m-{marks}-{teacher}", "method=cot", f"runs_dir={tmp_path}", f"data.data_dir={data_dir}",
            f"data.calc_marks={marks}"]
    if teacher == "reference":
        over.append("teach.per_thought.cot.kind=reference")
    cfg = load_config(None, over)
    run = Run.open(cfg.run_dir, cfg.model_dump(mode="json"))
    problems = steps.problems(cfg.data.train, cfg.data.data_dir)[:8]
    steps.teach(run, cfg, problems, ["cot"])
    steps.data(run, ["cot"], calc_marks=cfg.data.calc_marks)
    return read_jsonl(run.path("data", "train.jsonl"))


@pytest.mark.parametrize("teacher", ["reference", "replay"])
def test_calc_marks_reach_the_training_rows(tmp_path, data_dir, monkeypatch, teacher):
    monkeypatch.setenv("MATHDISTILL_CACHE", str(tmp_path / "cache"))
    got = {m: rows(tmp_path, data_dir, m, teacher) for m in ("none", "keep", "add")}
    assert not any("<<" in r["completion"] for r in got["none"])
    if teacher == "reference":
        assert got["keep"][0]["completion"].startswith("Natalia sold <<48/2=24>>24 clips in May.")
    else:
        assert [r["completion"] for r in got["keep"]] == [r["completion"] for r in got["none"]]  # no notes
    assert sum("<<" in r["completion"] for r in got["add"]) >= 4
    for a, n in zip(got["add"], got["none"]):
        assert a["prompt"] == n["prompt"]
        assert a["completion"].rsplit("The answer is", 1)[1] == n["completion"].rsplit("The answer is", 1)[1]
        assert a["completion"].replace("<<", "").replace(">>", "") == n["completion"] or teacher == "reference"


@pytest.mark.parametrize("recipe", ["kpdd.yaml", "siked.yaml"])
def test_methods_whose_rows_take_no_marks_refuse_the_setting(recipe):
    from pathlib import Path

    from mathdistill.io import InputError

    path = Path(__file__).resolve().parents[2] / "recipes" / recipe
    load_config(path, ["data.calc_marks=none"])
    with pytest.raises(InputError, match=r"data.calc_marks: .* do not take calculation marks"):
        load_config(path, ["data.calc_marks=add"])
