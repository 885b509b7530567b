"""Experiment tracking (`train.report_to`): TensorBoard event files of a real training read back with
tensorboard's own reader (loss and learning rate per logged step), a run's results and teacher bill logged
the same way, run names, and trackers that are not installed refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathdistill import tracking
from mathdistill.io import InputError

from tb_events import scalars

TINY = dict(max_seq_len=128, save_steps=100, warmup=0, logging_steps=1, batch_size=2)


@pytest.mark.slow
def test_tensorboard_event_files_hold_loss_and_learning_rate_per_step(tmp_path, data_dir, student_path):
    pytest.importorskip("tensorboard")
    from mathdistill.student.train import TrainConfig, train
    from mathdistill.thoughts.reference import training_rows

    out = tmp_path / "runs" / "tiny" / "train" / "student"
    cfg = TrainConfig(model=student_path, max_steps=3, lr=1e-3, report_to="tensorboard", run_name="tiny", **TINY)
    train(cfg, training_rows(6, data_dir=data_dir), out)
    got = scalars(out / "tensorboard")
    log = [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert [s for s, _ in got["train/loss"]] == [r["step"] for r in log] == [1, 2, 3]
    assert [v for _, v in got["train/loss"]] == pytest.approx([r["loss"] for r in log], rel=1e-5)
    assert [v for _, v in got["train/learning_rate"]] == pytest.approx([r["learning_rate"] for r in log], rel=1e-5)
    assert got["train/learning_rate"][0][1] > got["train/learning_rate"][-1][1] > 0  # the cosine schedule
    # the checkpoints folder (the Trainer's output_dir) is gone; the curves stay beside the adapter
    assert not (out / "checkpoints").exists() and (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "mathdistill.json").read_text())["config"]["report_to"] == "tensorboard"


def test_a_runs_results_and_teacher_bill_are_logged(tmp_path):
    pytest.importorskip("tensorboard")
    rows = [{"method": "etd", "dataset": "gsm8k", "n": 10, "accuracy": 0.3},
            {"method": "etd:pot+calc", "dataset": "svamp", "n": 20, "accuracy": 0.45}]
    sent = tracking.log_run(["tensorboard"], tmp_path / "myrun", rows, {"requests": 120, "cost": 0.42})
    got = scalars(tmp_path / "myrun" / "tensorboard")
    assert got["eval/etd/gsm8k/accuracy"] == [(0, pytest.approx(0.3))]
    assert got["eval/etd:pot+calc/svamp/accuracy"] == [(0, pytest.approx(0.45))]
    assert got["teacher/requests"] == [(0, 120.0)] and got["teacher/cost_usd"] == [(0, pytest.approx(0.42))]
    assert set(sent) == set(got)
    assert tracking.log_run("none", tmp_path / "other", rows) == {} and not (tmp_path / "other").exists()


def test_run_names_and_report_to_values():
    root = Path("/x/runs/siked")
    assert tracking.run_name(root, root / "train" / "student") == "siked"
    assert tracking.run_name(root, root / "iteration-1" / "train" / "student") == "siked/iteration-1/student"
    assert tracking.trackers("none") == [] and tracking.trackers("wandb") == ["wandb"]
    assert tracking.trackers(["tensorboard", "mlflow", "tensorboard"]) == ["tensorboard", "mlflow"]


def test_a_tracker_not_installed_is_refused(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(InputError, match=r"train.report_to: wandb not installed: pip install 'mathdistill\[track\]'"):
        tracking.check(["wandb"])
    from mathdistill.student.train import TrainSettings

    assert TrainSettings().report_to == "none"  # default: no tracker
    with pytest.raises(ValueError):
        TrainSettings(report_to="neptune")
