"""SIKeD end to end at a tiny budget (iterations 0 and 1): killed while iteration 1 samples, re-run,
it resumes with nothing re-sampled (the finished strategy's samples are read back: generated == 0; the
interrupted one generates only what is missing), nothing of iteration 0 redone, and it reports rows
with scopes, alpha and the chosen-strategy histogram."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from killing import kill_when
ROOT = Path(__file__).resolve().parents[2]
N = 4  # training problems, and test problems

TINY = [
    "strategies=[cot, pot, eot]",  # offline: no L2M teacher (tests/methods/test_siked_live.py has one)
    "iterations=1",
    f"data.train.limit={N}",
    "sample.k=2",
    "sample.max_new_tokens=16",
    "sample.batch_size=2",
    "train.max_steps=2",
    "train.batch_size=4",
    "train.max_seq_len=256",
    f"data.eval=[{{dataset: gsm8k, split: test, limit: {N}}}]",
    "eval.max_new_tokens=16",
    "eval.batch_size=4",
]


def _cmd(runs_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mathdistill.cli", "run", str(ROOT / "recipes" / "siked.yaml"), "name=sk",
            f"runs_dir={runs_dir}", *TINY]


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}")) if path.exists() else 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_siked_killed_while_sampling_resumes_without_resampling(tmp_path, data_dir, student_path):
    env = {**os.environ, "MATHDISTILL_DATA": str(data_dir)}
    run_dir = tmp_path / "runs" / "sk"
    sampled = run_dir / "iteration-1" / "sample" / "gsm8k-train"
    # kill as soon as the first strategy's samples of iteration 1 are complete
    kill_when(_cmd(tmp_path / "runs"), lambda: (sampled / "cot" / "samples.jsonl").exists(), env, tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["iteration-1/sample"]["status"] == "running"  # killed inside the stage
    assert [s for s, e in manifest["stages"].items() if e["status"] == "done"] == [
        "decontaminate", "teach-cot", "teach-pot", "teach-eot", "iteration-0/data", "iteration-0/train",
        "iteration-0/eval"]
    cot_samples = (sampled / "cot" / "samples.jsonl").read_text()
    pot_before = _lines(sampled / "pot" / "samples.partial.jsonl")
    first_adapter = (run_dir / "iteration-0" / "train" / "student" / "adapter_model.safetensors").read_bytes()

    second = subprocess.run(_cmd(tmp_path / "runs"), cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    log = second.stdout + second.stderr
    for stage in ("teach-cot", "iteration-0/train", "iteration-0/eval"):
        assert f"stage {stage}: done earlier, skipped" in log
    # nothing re-sampled: cot came back from its cache, pot generated only the problems it had not finished
    stats = json.loads((run_dir / "stages" / "iteration-1" / "sample.json").read_text())["value"]
    assert stats["cot"]["generated"] == 0 and stats["cot"]["reused"] == N
    assert stats["pot"]["reused"] == pot_before and stats["pot"]["generated"] == N - pot_before
    assert all(s["generated"] + s["reused"] == N and s["k"] == 2 for s in stats.values())
    assert (sampled / "cot" / "samples.jsonl").read_text() == cot_samples
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["stages"]["iteration-1/sample"]["attempts"] == 2
    assert manifest["stages"]["iteration-0/train"]["attempts"] == 1
    assert all(manifest["scopes"][f"iteration-{i}"]["status"] == "done" for i in (0, 1))

    # iteration 1 mixed its own correct samples with the teacher's rows and continued iteration 0's adapter
    data = json.loads((run_dir / "iteration-1" / "data" / "summary.json").read_text())
    assert data["examples"] == data["self_rows"] + data["teacher_rows"] > 0
    assert data["mixing"] == "per-strategy" and data["problems"] == N
    assert data["alpha"] == pytest.approx(data["teacher_rows"] / data["examples"])
    assert sum(c["samples"] for c in data["per_strategy"].values()) == 3 * N * 2
    record = json.loads((run_dir / "iteration-1" / "train" / "student" / "mathdistill.json").read_text())
    import hashlib

    assert record["init_adapter"] == hashlib.sha256(first_adapter).hexdigest()
    assert record["config"]["init_adapter"].endswith("iteration-0/train/student")
    train_rows = [json.loads(line) for line in (run_dir / "iteration-1" / "data" / "train.jsonl").read_text().splitlines()]
    assert all(r["completion"].startswith(("[CoT]\n", "[PoT]\n", "[EoT]\n")) for r in train_rows)
    assert all(r["prompt"].endswith("Choose a strategy ([CoT], [PoT] or [EoT]), write its tag first, then solve.")
               for r in train_rows)

    results = json.loads((run_dir / "results.json").read_text())
    rows = {r["method"]: r for r in results["rows"]}
    assert list(rows) == ["siked-i0", "siked-i1", "siked-i1:cot", "siked-i1:pot", "siked-i1:eot"]
    assert [rows[m]["scope"] for m in rows] == ["iteration-0"] + ["iteration-1"] * 4
    assert rows["siked-i0"]["alpha"] == 1.0 and rows["siked-i1"]["alpha"] == pytest.approx(data["alpha"])
    for r in rows.values():
        assert r["n"] == N and 0.0 <= r["accuracy"] <= 1.0 and len(r["ci95"]) == 2
        assert set(r["strategies"]) == {"cot", "pot", "eot", "none"} and sum(r["strategies"].values()) == N
    assert rows["siked-i1:pot"]["strategies"]["pot"] == N  # forced: its tag prefilled
    assert rows["siked-i1"]["train_steps"] == 4 and rows["siked-i0"]["train_steps"] == 2  # iterations 0..i
    predictions = (run_dir / "iteration-1" / "eval" / "gsm8k" / "pot" / "predictions.jsonl").read_text().splitlines()
    assert all(json.loads(p)["output"].startswith("[PoT]\n") for p in predictions)
    tables = {t["title"]: t["rows"] for t in results["tables"]}
    assert [r["iteration"] for r in tables["SIKeD: training data per iteration (alpha = teacher share)"]] == [0, 1]
    chosen = tables["SIKeD: accuracy, alpha and the strategy the student chose, per iteration"]
    assert [(r["iteration"], r["accuracy"], r["alpha"]) for r in chosen] == [
        (i, rows[f"siked-i{i}"]["accuracy"], rows[f"siked-i{i}"]["alpha"]) for i in (0, 1)]
    assert all(sum(r[t] for t in ("cot", "pot", "eot", "none")) == N for r in chosen)
    assert [f["file"] for f in results["figures"]] == ["figures/siked-strategies.png"]
    assert (run_dir / "figures" / "siked-strategies.png").stat().st_size > 0
    assert any("L2M" in n for n in results["notes"])
    stand_in = next(n for n in results["notes"] if n.startswith("Offline stand-ins"))
    assert all(f"{t}: " in stand_in for t in ("cot", "pot", "eot")) and "replay" in stand_in
    copied = list((run_dir / "report").glob("*-siked-strategies.png"))  # the report copies the figure
    assert len(copied) == 1 and copied[0].name in (run_dir / "report" / "index.html").read_text()
    md = (run_dir / "report" / "report.md").read_text()  # what a reader sees: the table, the stand-ins
    assert "SIKeD: accuracy, alpha and the strategy the student chose, per iteration" in md
    assert "Offline stand-ins (not a live teacher)" in md and "offline stand-in:" in md
