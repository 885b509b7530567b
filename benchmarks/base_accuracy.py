"""Accuracy of the base (untrained) default student, measured with the real `mathdistill eval` CLI.

    flock /tmp/md-heavy.lock python benchmarks/base_accuracy.py [--model smollm2-135m] [--limit 200]

Runs GSM8K test (0-shot and 4-shot, CoT prompt) and SVAMP (0-shot) on the first LIMIT problems,
each as `mathdistill eval ... --out runs/base_accuracy/<name>` (re-running resumes), and writes
benchmarks/results/base_accuracy.json with each run's metrics, command and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("gsm8k_0shot", "gsm8k", 0), ("gsm8k_4shot", "gsm8k", 4), ("svamp_0shot", "svamp", 0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "base_accuracy"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "base_accuracy.json"))
    args = ap.parse_args()

    exe = shutil.which("mathdistill")
    base = [exe] if exe else [sys.executable, "-m", "mathdistill.cli"]
    results = {}
    for name, dataset, shots in RUNS:
        out = Path(args.runs_dir) / name
        cmd = ["mathdistill", "eval", "--model", args.model, "--dataset", dataset, "--limit", str(args.limit),
               "--shots", str(shots), "--batch-size", str(args.batch_size), "--out", str(out)]
        load = os.getloadavg()
        t0 = time.perf_counter()
        subprocess.run(base + cmd[1:], check=True)
        wall = time.perf_counter() - t0
        m = json.loads((out / "metrics.json").read_text())
        results[name] = {
            "dataset": dataset, "shots": shots, "n": m["n"], "correct": m["correct"], "accuracy": m["accuracy"],
            "ci95": m["ci95"], "no_answer": m["no_answer"], "seconds_generation": m["seconds"],
            "seconds_wall": round(wall, 1), "generated_tokens": m["generated_tokens"],
            "mean_output_tokens": m["mean_output_tokens"], "max_new_tokens": m["max_new_tokens"],
            "reused_from_earlier_run": m["reused"], "loadavg_at_start": load, "command": " ".join(cmd),
        }
        print(name, json.dumps(results[name]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "limit": args.limit, "runs": results,
                                          "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
