"""The quickstart recipe end to end at a tiny budget: killed in the middle of training, re-run,
it resumes (no teacher stage redone, training continues from its checkpoint) and writes the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from killing import kill_when, has_checkpoint
ROOT = Path(__file__).resolve().parents[2]

TINY = [
    "data.train.limit=8",
    "train.max_steps=6",
    "train.batch_size=4",
    "train.max_seq_len=256",
    "train.save_steps=1",
    "data.eval=[{dataset: gsm8k, split: test, limit: 3}, {dataset: svamp, split: test, limit: 3}]",
    "eval.max_new_tokens=48",
    "eval.batch_size=6",
]


def _cmd(runs_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mathdistill.cli", "run", str(ROOT / "recipes" / "quickstart.yaml"),
            "name=qs", f"runs_dir={runs_dir}", *TINY]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quickstart_killed_mid_training_resumes_and_reports(tmp_path, data_dir, student_path):
    env = {**os.environ, "MATHDISTILL_DATA": str(data_dir)}
    run_dir = tmp_path / "runs" / "qs"
    ckpts = run_dir / "train" / "student" / "checkpoints"
    kill_when(_cmd(tmp_path / "runs"), lambda: has_checkpoint(ckpts), env, tmp_path, timeout=1200)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "running"  # killed: never mistaken for done
    assert [s for s, e in manifest["stages"].items() if e["status"] == "done"] == ["decontaminate", "teach-cot",
                                                                                   "teach-pot", "teach-eot", "data"]
    teach_outputs = {p: p.stat().st_mtime_ns for p in run_dir.glob("teach/*/rationales.jsonl")}
    assert len(teach_outputs) == 3

    second = subprocess.run(_cmd(tmp_path / "runs"), cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    log = second.stdout + second.stderr
    # teacher stages were not redone: their outputs untouched, and said so
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("teach/*/rationales.jsonl")} == teach_outputs
    assert "stage teach-cot: done earlier, skipped" in log
    # training continued from the checkpoint and ended at max_steps
    summary = json.loads((run_dir / "train" / "student" / "train_summary.json").read_text())
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 1
    assert summary["steps"] == 6
    assert (run_dir / "train" / "student" / "adapter_config.json").exists()
    # evaluation in every format plus the vote, results and report
    results = json.loads((run_dir / "results.json").read_text())
    names = {(r["method"], r["dataset"], r["variant"]) for r in results["rows"]}
    assert names == {(n, d, v) for d in ("gsm8k", "svamp")
                     for n, v in (("etd:cot", "cot"), ("etd:pot", "pot"), ("etd:eot", "eot"), ("etd", "vote"))}
    for r in results["rows"]:
        assert r["n"] == 3 and 0.0 <= r["accuracy"] <= 1.0 and len(r["ci95"]) == 2
        assert r["train_steps"] == 6 and r["train_tokens"] > 0
    html = (run_dir / "report" / "index.html").read_text()
    assert "qs" in html and "still running" not in html
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["finished"] and len(manifest["resumed"]) == 1
    assert manifest["stages"]["train"]["attempts"] == 2 and manifest["versions"]["torch"]
    assert "Q4_1" in manifest["student"]["quantisation"]

    # a third run finds everything done and changes nothing
    third = subprocess.run(_cmd(tmp_path / "runs"), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0
    assert "stage train: done earlier, skipped" in third.stderr + third.stdout


