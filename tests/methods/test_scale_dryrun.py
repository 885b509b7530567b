"""The GPU table's plan, run on this CPU (heavy: run under flock): `--profile gpu-dryrun` runs every method of
gpu-table with its stages and settings (full fine-tuning for cot-full, the calculator, bfd packing of 8,192-token
steps, bf16 autocast, eval batches of 1,536) on a random 2-layer student of the default student's architecture
and tokenizer (~2.5 min); a run killed part-way leaves every finished row in `--out`, and resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from killing import kill_when

from mathdistill.io import read_json

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCALE = [sys.executable, str(ROOT / "benchmarks" / "scale.py")]


def test_the_gpu_table_plan_runs_on_this_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([*SCALE, "--methods", "all", "--profile", "gpu-dryrun", "--runs-dir", str(tmp_path / "runs"),
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = read_json(out / "scale.json")
    names = {r["method"] for r in doc["rows"]}
    assert {"base", "cot", "cot+calc", "cot-full", "pot", "eotd", "etd", "etd:cot", "etd:pot", "etd:eot", "kpdd-cot",
            "kpdd-pot", "lorid", "lorid:ir", "lorid:dr", "fdd-r0", "fdd-r1", "siked-i0", "siked-i1"} <= names
    assert doc["profile"] == "gpu-dryrun" and doc["device"]["kind"] in ("cpu", "cuda") and doc["train_problems"] == 8
    assert not doc["skipped"] and set(doc["experiments"]) == set(read_json(out / "scale.json")["experiments"])
    for r in doc["rows"]:
        assert r["n"] == 4 and r["device"] and r["measured"] and r["overrides"], r["method"]
        assert "teacher" in r and "offline_stand_in" in r, r["method"]  # where its training data came from
        if r["method"] != "base":
            assert r["train_seconds"] and r["train_tokens_per_s"] and r["train_problems"] == 8, r["method"]
    full = tmp_path / "runs" / "cot-full-gpu-dryrun" / "train" / "student"
    record = read_json(full / "mathdistill.json")["config"]
    assert record["full"] and record["packing"] == "bfd" and record["precision"] == "bf16"
    assert record["batch_tokens"] == 8192 and record["save_steps"] is None  # no mid-training checkpoint
    assert doc["experiments"]["cot-full"]["peak_training_disk_bytes"] >= (full / "model.safetensors").stat().st_size
    assert (out / "scale.md").is_file() and (out / "scale.png").is_file()


def test_a_run_killed_part_way_keeps_every_finished_row(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    cmd = [*SCALE, "--methods", "base,cot-calc,cot-full", "--profile", "gpu-dryrun", "--runs-dir", str(runs),
           "--out", str(out)]

    def cot_rows_written() -> bool:
        try:
            return "cot+calc" in {r["method"] for r in read_json(out / "scale.json")["rows"]}
        except Exception:  # not written yet, or caught between two writes of the reader
            return False

    kill_when(cmd, cot_rows_written, dict(os.environ), ROOT, timeout=600)
    doc = read_json(out / "scale.json")  # whole: every write is a rename
    assert {r["method"] for r in doc["rows"]} == {"base", "cot", "cot+calc"}  # finished before the kill; no cot-full
    assert all(r["offline_stand_in"] for r in doc["rows"] if r["method"] != "base")  # a recorded teacher, said so
    assert (out / "scale.md").read_text().count("| cot") == 2
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stage eval: done earlier, skipped" in proc.stderr  # base and cot are not evaluated again
    assert {r["method"] for r in read_json(out / "scale.json")["rows"]} == {"base", "cot", "cot+calc", "cot-full"}
