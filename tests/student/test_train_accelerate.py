"""The same `mathdistill train` under `accelerate launch`: 2-process DDP on CPU (gloo); shipped configs parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mathdistill.student.train import is_trained

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize("name", ["cpu_ddp", "multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert cfg.num_machines == 1 and cfg.num_processes >= 2
    # MULTI_CPU (or use_cpu) makes `accelerate launch` start a single process unless mpirun is set up
    assert cfg.distributed_type.value != "MULTI_CPU" and not cfg.use_cpu


@pytest.mark.slow
def test_two_process_ddp_on_cpu_saves_one_adapter(tmp_path, student_path):
    rows = [{"prompt": f"What is {a} minus {b}?", "completion": f"{a} - {b} = {a - b}."} for a, b in
            [(9, 2), (8, 3), (7, 5), (6, 1), (9, 9), (5, 4), (8, 8), (7, 2)]]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_ddp.yaml"),
           "-m", "mathdistill.cli", "train", "--model", student_path, "--data", str(data), "--out", str(out),
           "--max-steps", "2", "--batch-size", "2", "--max-seq-len", "128", "--adapter-name", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a small machine
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"out_dir"')]
    assert len(results) == 2 and all(r["global_step"] == 2 for r in results)  # both ranks ran the same steps
    assert is_trained(out) and (out / "adapter_model.safetensors").exists()
    # 8 rows / (2 processes x 2 rows per step) = 2 steps per epoch: the data was split across both ranks
    assert all(r["epoch"] == 1.0 for r in results)
    assert not list(out.glob(".final-*")) and not (out / "ddp").exists()
