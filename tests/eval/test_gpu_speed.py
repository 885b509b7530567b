"""benchmarks/gpu_speed.py at its tiny size on this CPU: every phase runs and reports its speed, in the schema
the GPU plan reads (`workload.Speeds`), and a CPU run never writes the GPU results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_run_reports_every_speed_and_leaves_the_gpu_file(tmp_path, data_dir, monkeypatch):
    import gpu_speed

    results = gpu_speed.RESULTS.read_bytes() if gpu_speed.RESULTS.exists() else None
    out = tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", ["gpu_speed.py", "--tiny", "--data-dir", str(data_dir), "--out", str(out)])
    gpu_speed.main()
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    assert doc["device"]["kind"] == "cpu" and doc["measured"] and doc["student"].startswith("smollm2-135m")
    for group, keys in (("train_tokens_per_s", ("full", "lora")), ("generated_tokens_per_s", ("greedy", "sample"))):
        assert all(doc[group][k] > 0 for k in keys), doc[group]
    assert doc["eval_problems_per_s"] > 0 and set(doc["mfu"]) >= {"train_full", "greedy"}
    assert (gpu_speed.RESULTS.read_bytes() if gpu_speed.RESULTS.exists() else None) == results
    monkeypatch.setattr(sys, "argv", ["gpu_speed.py", "--tiny", "--out", str(gpu_speed.RESULTS)])
    with pytest.raises(SystemExit, match="GPU figures"):
        gpu_speed.main()
