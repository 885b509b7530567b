"""How many rows the slot engine should run together on this CPU: the same problems at 16, 32 and 64 rows,
each in a fresh process (so its peak RSS is its own), greedy, tokens/s, peak RSS and whether the texts are
the same at every row count.

    python benchmarks/cpu_rows.py                                   # 64 GSM8K CoT prompts x 128 tokens, 0-shot
    python benchmarks/cpu_rows.py --shots 4 --rounds 1              # 4-shot (a ~650-token prefix, stored once)

Runs go through `student.generate.generate` (the slot engine wherever it runs: the default), one torch thread
each, in the order 16, 32, 64, then (a second round) 64, 32, 16, so a load that drifts favours no side. Writes
benchmarks/results/cpu_rows.json (or --out): per run the rows, seconds, generated tokens, tokens/s, peak RSS
(ru_maxrss of the child) and load average; per row count the median tokens/s; whether every row count gave
the same texts. The student is smollm2-135m (SmolLM2-135M-Instruct, a dequantised Q4_1 GGUF).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(args) -> dict:
    """One run in this process: generate, and report what it took."""
    import resource

    import torch

    from mathdistill import data
    from mathdistill.models import load_model
    from mathdistill.paths import data_dir
    from mathdistill.student.generate import generate
    from mathdistill.student.prompts import build_prompts, few_shot_exemplars

    torch.set_num_threads(1)
    model, tok = load_model(args.model)
    problems = data.load("gsm8k", "test", data_dir=data_dir(args.data_dir), limit=args.n)
    questions = [p.question for p in problems]
    exemplars = few_shot_exemplars("cot", args.shots, data_dir(args.data_dir), exclude=questions)
    prompts = build_prompts(tok, "cot", questions, exemplars)
    t0 = time.perf_counter()
    gens = generate(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.one, progress=False)
    seconds = time.perf_counter() - t0
    tokens = sum(g.num_tokens[0] for g in gens)
    return {"rows": args.one, "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "texts_sha256": hashlib.sha256(json.dumps([g.text for g in gens]).encode()).hexdigest()[:16],
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=64, help="GSM8K test problems (the first N)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--rows", default="16,32,64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_rows.json"))
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: this many rows
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args)), flush=True)
        return

    import torch
    import transformers

    from mathdistill.io import write_json

    sizes = [int(r) for r in args.rows.split(",")]
    runs = []
    for r in range(args.rounds):
        for rows in sizes if r % 2 == 0 else sizes[::-1]:
            cmd = [sys.executable, __file__, "--one", str(rows), "--model", args.model, "--n", str(args.n),
                   "--max-new-tokens", str(args.max_new_tokens), "--shots", str(args.shots)]
            cmd += ["--data-dir", args.data_dir] if args.data_dir else []
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    median = {rows: statistics.median(x["tokens_per_s"] for x in runs if x["rows"] == rows) for rows in sizes}
    result = {"model": args.model, "n": args.n, "max_new_tokens": args.max_new_tokens, "shots": args.shots,
              "greedy": True, "threads": 1, "torch": torch.__version__, "transformers": transformers.__version__,
              "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": runs,
              "median_tokens_per_s": median, "same_texts": len({x["texts_sha256"] for x in runs}) == 1}
    print(json.dumps({"median_tokens_per_s": median, "same_texts": result["same_texts"]}))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
