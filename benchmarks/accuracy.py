"""The real experiment: CoT vs EoTD vs PoT vs ETD distilled into the default student.

Every method trains a fresh LoRA on the same GSM8K-train problems (offline teachers: the
recorded Llama-3-70B CoT; verified conversions of the gold solutions for PoT/EoT) and is
evaluated greedily on the same GSM8K-test and SVAMP slices. The untrained student is the
`base` row. Each method is an ordinary run folder (resumable: re-run the same command after a
kill and finished stages are skipped).

    python benchmarks/accuracy.py                       # the budget documented in benchmarks/README.md
    python benchmarks/accuracy.py --train-problems 64 --eval-limit 20   # a smoke run

Writes benchmarks/results/accuracy.json and benchmarks/results/accuracy.png.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from mathdistill.io import read_json, write_json
from mathdistill.methods import METHODS
from mathdistill.methods.config import load_config
from mathdistill.report import plot_accuracy

HERE = Path(__file__).resolve().parent
# method -> formats it trains (ETD: all three, answered in each and combined by vote)
METHOD_THOUGHTS = {"cot": ["cot"], "eotd": ["eot"], "pot": ["pot"], "etd": ["cot", "pot", "eot"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-problems", type=int, default=200)
    ap.add_argument("--eval-limit", type=int, default=300)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default="base,cot,eotd,pot,etd")
    ap.add_argument("--runs-dir", default=str(HERE / "runs"))
    ap.add_argument("--out", default=str(HERE / "results" / "accuracy.json"))
    args = ap.parse_args()

    common = [
        f"runs_dir={args.runs_dir}",
        f"data.train.limit={args.train_problems}",
        f"data.eval=[{{dataset: gsm8k, split: test, limit: {args.eval_limit}}},"
        f" {{dataset: svamp, split: test, limit: {args.eval_limit}}}]",
        f"train.epochs={args.epochs}",
        f"eval.max_new_tokens={args.max_new_tokens}",
        f"eval.batch_size={args.batch_size}",
    ]
    tag = f"n{args.train_problems}-e{args.eval_limit}"
    rows, t_start = [], time.time()
    for method in args.methods.split(","):
        if method == "base":
            # the untrained student, answering in CoT (its natural format), through the same evaluator
            from mathdistill.methods import stages
            from mathdistill.methods.runner import Run

            cfg = load_config(HERE.parent / "recipes" / "cot.yaml", common + [f"name=base-{tag}", "eval.vote=false"])
            run = Run(cfg)
            path = run.path("results.json")
            if not path.exists():
                stages.write_results(run, stages.evaluate(run, None), None, method="base")
            result_rows = read_json(path)["rows"]
        else:
            thoughts = METHOD_THOUGHTS[method]
            cfg = load_config(
                HERE.parent / "recipes" / "etd.yaml",
                common + [f"name={method}-{tag}", f"method={method}", f"thoughts=[{', '.join(thoughts)}]"],
            )
            run_dir = METHODS[method](cfg)
            result_rows = read_json(run_dir / "results.json")["rows"]
        for r in result_rows:
            name = r["method"]
            if method == "etd":
                name = "etd" if r["variant"] == "vote" else f"etd:{r['variant']}"
            rows.append({"method": name, "dataset": r["dataset"], "variant": r["variant"], "n": r["n"],
                         "accuracy": r["accuracy"], "ci95": r["ci95"], "train_seconds": r["train_seconds"]})
    out = Path(args.out)
    write_json(out, {
        "student": "smollm2-135m", "train_problems": args.train_problems, "eval_limit": args.eval_limit,
        "epochs": args.epochs, "max_new_tokens": args.max_new_tokens, "wall_seconds": round(time.time() - t_start, 1),
        "loadavg": os.getloadavg(), "rows": rows,
    })
    plot_accuracy(rows, out.with_suffix(".png"), title=f"smollm2-135m distilled on {args.train_problems} GSM8K problems")
    for r in rows:
        print(f"{r['method']:10s} {r['dataset']:6s} n={r['n']:4d} acc={r['accuracy']:.3f} "
              f"ci95=[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")


if __name__ == "__main__":
    main()
