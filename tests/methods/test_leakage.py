"""No run trains on what it evaluates (contract 11): the refusal before any stage (the real console command:
exit 2, both slices named, no run folder), across datasets by question text and through FDD's pool; and the
decontamination step every distillation recipe shares (counts, table, resume, opt-out, the train guard).
No model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mathdistill.io import InputError, write_jsonl
from mathdistill.methods import steps
from mathdistill.methods.config import dump_config
from mathdistill.methods.registry import load_config
from mathdistill.methods.run import Run
from mathdistill.methods.runner import validate

ROOT = Path(__file__).resolve().parents[2]


def mathdistill(*args, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MATHDISTILL_DATA": str(data_dir), "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "mathdistill.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("overrides, message", [
    (["data.train.split=test"], "data.train (gsm8k/test [0, 1000)) overlaps data.eval[0] (gsm8k/test [0, 300))"),
    (["data.train.split=test", "data.train.offset=250", "data.train.limit=100"],
     "data.train (gsm8k/test [250, 350)) overlaps data.eval[0] (gsm8k/test [0, 300)): problems [250, 300)"),
    (["data.eval=[{dataset: gsm8k, split: test, limit: 5}, {dataset: gsm8k, split: train, offset: 990, limit: 20}]"],
     "data.train (gsm8k/train [0, 1000)) overlaps data.eval[1] (gsm8k/train [990, 1010)): problems [990, 1000)"),
], ids=["train-on-test", "offset-and-limit", "eval-on-train"])
def test_the_cli_refuses_an_overlap_before_any_stage(overrides, message, tmp_path, data_dir):
    proc = mathdistill("run", ROOT / "recipes" / "etd.yaml", f"runs_dir={tmp_path / 'runs'}", *overrides,
                       cwd=tmp_path, data_dir=data_dir)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stderr
    assert message in err and "contract 11" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before the run folder, let alone a stage


def test_slices_that_do_not_overlap_are_accepted(data_dir):
    cfg = load_config(ROOT / "recipes" / "etd.yaml", [f"data.data_dir={data_dir}", "data.train.split=test",
                                                      "data.train.offset=300", "data.train.limit=100"])
    validate(cfg)  # gsm8k/test [300, 400) beside gsm8k/test [0, 300): no overlap (decontamination comes later)


def test_the_same_question_text_in_another_dataset_is_refused(tmp_path):
    shared = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    gsm = tmp_path / "gsm8k"
    gsm.mkdir()
    write_jsonl(gsm / "train.jsonl", [{"question": "Ann has 2 pens and finds 5. How many pens?", "answer": "#### 7"},
                                      {"question": shared.upper(), "answer": "#### 7"}])  # case and spaces differ
    write_jsonl(gsm / "test.jsonl", [{"question": "A cat has 4 legs. How many legs have 2 cats?", "answer": "#### 8"}])
    (tmp_path / "svamp").mkdir()
    (tmp_path / "svamp" / "SVAMP.json").write_text(json.dumps([
        {"ID": "chal-1", "Body": "Tom has 3 apples and buys 4 more.", "Question": "How many apples does he  have?",
         "Answer": 7, "Equation": "", "Type": ""}]))
    cfg = load_config(ROOT / "recipes" / "cot.yaml", [f"data.data_dir={tmp_path}",
                                                      "data.eval=[{dataset: svamp, split: test}]"])
    with pytest.raises(InputError) as e:
        validate(cfg)
    assert ("data.train (gsm8k/train [0, 2)) shares 1 question text(s) with data.eval[0] (svamp/test [0, 1)), "
            "e.g. gsm8k-train-1 = chal-1") in str(e.value)


def test_fdds_pool_counts_as_training_data(data_dir):
    overrides = [f"data.data_dir={data_dir}", "data.train.limit=100",
                 "data.eval=[{dataset: gsm8k, split: train, offset: 5000, limit: 10}]"]
    with pytest.raises(InputError, match=r"FDD pool \(gsm8k/train \[100, 7473\)\) overlaps data.eval\[0\] "
                                         r"\(gsm8k/train \[5000, 5010\)\)"):
        validate(load_config(ROOT / "recipes" / "fdd.yaml", overrides))
    validate(load_config(ROOT / "recipes" / "fdd.yaml", [*overrides, "generate.pool_limit=100"]))  # pool [100, 200)
    validate(load_config(ROOT / "recipes" / "fdd.yaml", [*overrides, "rounds=0"]))  # no round draws from the pool


def test_the_issues_count_eight_of_the_first_3000_gsm8k_train_problems(data_dir):
    """FDD's rule against every test set of the data root: 8 of GSM8K train 0-2999 (train 20 and test 632 share
    a 13-gram)."""
    from mathdistill.data import load
    from mathdistill.data.decontam import Decontaminator

    rows = Decontaminator.from_data_root(data_dir).check([p.question for p in load("gsm8k", "train", data_dir)[:3000]])
    flagged = {i: r for i, r in enumerate(rows) if r["contaminated"]}
    assert sorted(flagged) == [20, 203, 240, 406, 653, 1314, 2285, 2466]
    assert flagged[20]["reason"] == "13-gram" and flagged[20]["ngram_item"]["id"] == "gsm8k-test-632"


def _run(tmp_path, data_dir, *overrides) -> tuple:
    cfg = load_config(ROOT / "recipes" / "cot.yaml", [f"runs_dir={tmp_path}", f"data.data_dir={data_dir}",
                                                      "data.train.offset=18", "data.train.limit=4",
                                                      "data.eval=[{dataset: gsm8k, split: test, limit: 5}]",
                                                      *overrides])
    return cfg, Run.open(cfg.run_dir, dump_config(cfg), ["test"])


def test_decontamination_drops_counts_and_resumes(tmp_path, data_dir):
    cfg, run = _run(tmp_path, data_dir)
    kept = steps.train_problems(run, cfg)
    assert [p.id for p in kept] == ["gsm8k-train-18", "gsm8k-train-19", "gsm8k-train-21"]
    extras = run.extras()
    note = next(n for n in extras["notes"] if n.startswith("Decontamination"))
    assert note.startswith("Decontamination: 1 of 4 training problems dropped (1 share a word 13-gram with a test "
                           "question, 0 more have a TF-IDF cosine >= 0.8 to one), checked against 8,508 test questions")
    (table,) = [t for t in extras["tables"] if t["title"].startswith("Decontamination")]
    (row,) = table["rows"]
    assert (row["problem"], row["reason"], row["dropped"]) == ("gsm8k-train-20", "13-gram", "yes")
    assert row["nearest test item"].startswith("gsm8k gsm8k-test-632: ")
    # resumed: the stage's kept value, not a second check
    again = Run.open(cfg.run_dir, dump_config(cfg), ["test"])
    assert [p.id for p in steps.train_problems(again, cfg)] == [p.id for p in kept]
    assert again.manifest.data["stages"]["decontaminate"]["attempts"] == 1


def test_opting_out_keeps_and_reports_them(tmp_path, data_dir):
    cfg, run = _run(tmp_path, data_dir, "data.decontaminate=false")
    assert len(steps.train_problems(run, cfg)) == 4
    extras = run.extras()
    assert any(n.startswith("Decontamination off (data.decontaminate: false): 1 of 4 training problems meet the rule")
               for n in extras["notes"])
    assert extras["tables"][0]["rows"][0]["dropped"] == "no (data.decontaminate: false)"


def test_training_refuses_rows_of_dropped_problems(tmp_path, data_dir):
    cfg, run = _run(tmp_path, data_dir)
    data = run.path("data", "train.jsonl")
    write_jsonl(data, [{"prompt": "p", "completion": "c", "thought": "cot", "problem_id": "gsm8k-train-20"}])
    with pytest.raises(Exception, match="without the decontamination step"):
        steps.train(run, cfg)  # a recipe that never read its problems through steps.train_problems
    steps.train_problems(run, cfg)
    with pytest.raises(Exception, match="gsm8k-train-20"):
        steps.train(run, cfg, stage="train-again")


def test_what_training_problems_are_checked_against(data_dir):
    """The evaluation slices (here one of GSM8K train, in no test set) and the data root's test sets, less the
    training slice's own problems (training on a test split is not contamination by itself)."""
    from mathdistill.methods.leakage import test_questions

    cfg = load_config(ROOT / "recipes" / "cot.yaml", [
        f"data.data_dir={data_dir}", "data.train.split=test", "data.train.offset=300", "data.train.limit=100",
        "data.eval=[{dataset: gsm8k, split: test, limit: 300}, "
        "{dataset: gsm8k, split: train, offset: 5000, limit: 10}]"])
    ids = {p.id for p in test_questions(cfg)}
    assert {f"gsm8k-train-{i}" for i in range(5000, 5010)} <= ids and "gsm8k-train-5010" not in ids
    assert "gsm8k-test-299" in ids and "gsm8k-test-400" in ids and "chal-1" in ids
    assert not {f"gsm8k-test-{i}" for i in range(300, 400)} & ids
