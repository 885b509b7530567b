"""A full fine-tune is a first-class student (heavy: run under flock): a `train.full=true` run is evaluated,
served and exported like an adapter run (the trained folder is the model); FDD (`retrain_from: previous`) and
SIKeD (`init: previous`) continue from the full weights of the round or iteration before; LoRID, whose roles are
adapters by definition, refuses `train.full=true` before anything runs. Tiny random models: ~1 min in all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import pytest
from serve_helpers import LiveServer
from tiny_run import ROOT, tiny_run

from mathdistill.io import read_json, read_jsonl

pytestmark = pytest.mark.slow
TINY = ["train.full=true", "train.lr=1e-3"]


@pytest.fixture(scope="module")
def full_cot(tmp_path_factory, student_path, data_dir) -> Path:
    return tiny_run(tmp_path_factory.mktemp("full"), student_path, data_dir, "cot-full", TINY, recipe="cot.yaml")


def test_a_full_fine_tune_is_evaluated_from_its_own_folder(full_cot):
    folder = full_cot / "train" / "student"
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()
    assert not (folder / "checkpoints").exists()  # none unless asked: the stage is the unit of resume
    summary = read_json(folder / "train_summary.json")
    assert summary["full"] is True and summary["disk_bytes"] >= (folder / "model.safetensors").stat().st_size
    rows = read_json(full_cot / "results.json")["rows"]
    assert [r["method"] for r in rows] == ["cot"] and rows[0]["n"] == 3
    # the evaluation ran the trained weights, not the base: its resume key names them
    from mathdistill.models import provenance

    weights = read_json(full_cot / "eval" / "gsm8k" / "cot" / "metrics.json")["weights"]
    assert weights["model"]["sha256"] == provenance(str(folder))["sha256"] != _base_sha(folder)
    assert "adapter_sha256" not in weights


def test_a_full_fine_tune_is_served_and_exported(full_cot, tmp_path):
    from mathdistill.serve import Defaults, load_engine, served_run
    from mathdistill.serve.app import create_app

    spec, cfg, _ = served_run(full_cot)
    assert spec.adapters == {} and spec.model == str(full_cot / "train" / "student")
    srv = LiveServer(create_app(load_engine(spec, spec.model or cfg.student.model, Defaults.of(cfg)), spec.models))
    try:
        row = read_jsonl(full_cot / "eval" / "gsm8k" / "cot" / "predictions.jsonl")[0]
        c = openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0)
        r = c.chat.completions.create(model="cot", messages=[{"role": "user", "content": row["question"]}])
        assert r.choices[0].message.content == row["output"]  # what evaluation generated from the same weights
    finally:
        srv.stop()
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "export", str(full_cot), "--out", str(out),
                           "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.torch import load_file

    trained = load_file(full_cot / "train" / "student" / "model.safetensors")
    exported = load_file(out / "model.safetensors")
    assert set(trained) <= set(exported) and all((exported[k] == trained[k]).all() for k in trained)


def _base_sha(train_folder: Path) -> str:
    return read_json(train_folder / "mathdistill.json")["base_model"]["sha256"]


def test_fdd_and_siked_continue_from_full_weights(tmp_path, student_path, data_dir):
    from mathdistill.models import provenance

    fdd = tiny_run(tmp_path / "fdd", student_path, data_dir, "fdd-full",
                   [*TINY, "rounds=1", "retrain_from=previous", "paths_per_problem=1", "feedback.samples=1"],
                   recipe="fdd.yaml")
    r0, r1 = (fdd / f"round-{i}" / "train" / "student" for i in (0, 1))
    assert _base_sha(r1) == provenance(str(r0))["sha256"] != _base_sha(r0)  # round 1 starts from round 0's weights
    assert not (fdd / "round-1" / "init").exists()  # nothing to merge: the full fine-tune is the next base
    assert {r["method"] for r in read_json(fdd / "results.json")["rows"]} == {"fdd-r0", "fdd-r1"}

    siked = tiny_run(tmp_path / "siked", student_path, data_dir, "siked-full",
                     [*TINY, "iterations=1", "sample.k=1", "strategies=[cot, pot]", "init=previous",
                      "sample.max_new_tokens=16"], recipe="siked.yaml")
    i0, i1 = (siked / f"iteration-{i}" / "train" / "student" for i in (0, 1))
    assert _base_sha(i1) == provenance(str(i0))["sha256"] != _base_sha(i0)
    assert read_json(i1 / "mathdistill.json")["config"]["init_adapter"] is None
    from mathdistill.serve import served_run

    spec, _, _ = served_run(siked)
    assert spec.model == str(i1) and spec.adapters == {}


def test_lorid_refuses_full_fine_tuning_before_anything_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "run", str(ROOT / "recipes" / "lorid.yaml"),
                           "name=lorid-full", f"runs_dir={tmp_path}", "train.full=true"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "train.full" in proc.stderr and "adapters" in proc.stderr
    assert not any(tmp_path.iterdir())  # no run folder, no stage
