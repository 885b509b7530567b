"""The real experiment: CoT vs EoTD vs PoT vs ETD distilled into the default student.

Every method trains a fresh LoRA on the same GSM8K-train problems (offline teachers: the
recorded Llama-3-70B CoT; verified conversions of the gold solutions for PoT/EoT) and is
evaluated greedily on the same GSM8K-test and SVAMP slices. The untrained student is the
`base` row. Each method is an ordinary run folder (resumable: re-run the same command after a
kill and finished stages are skipped).

    python benchmarks/accuracy.py                       # the budget documented in benchmarks/README.md
    python benchmarks/accuracy.py --train-problems 16 --eval-limit 8   # a smoke run

The methods run in two parallel processes ("lanes", one thread each: on this 2-core machine two
one-thread processes generate ~13 % more tokens per second together than one two-thread
process); when one lane is done the other takes both cores from its next method on.

Writes benchmarks/results/accuracy.json and benchmarks/results/accuracy.png.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mathdistill.io import read_json, write_json
from mathdistill.methods import METHODS
from mathdistill.methods.config import load_config
from mathdistill.report import plot_accuracy

HERE = Path(__file__).resolve().parent
# method -> formats it trains (ETD: all three, answered in each and combined by vote)
METHOD_THOUGHTS = {"cot": ["cot"], "eotd": ["eot"], "pot": ["pot"], "etd": ["cot", "pot", "eot"]}


DEFAULT_LANES = "etd;cot,pot,eotd,base"  # ETD alone costs about as much as the other four together


def run_method(method: str, common: list[str], tag: str) -> list[dict]:
    """Train (unless base) and evaluate one method through its recipe; its rows for accuracy.json."""
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
        result_rows = read_json(METHODS[method](cfg) / "results.json")["rows"]
    rows = []
    for r in result_rows:
        name = r["method"]
        if method == "etd":
            name = "etd" if r["variant"] == "vote" else f"etd:{r['variant']}"
        rows.append({"method": name, "dataset": r["dataset"], "variant": r["variant"], "n": r["n"],
                     "accuracy": r["accuracy"], "ci95": r["ci95"], "train_seconds": r["train_seconds"]})
    return rows


def run_lane(methods: list[str], common: list[str], tag: str, out: Path, done_dir: Path, lanes: int) -> None:
    """One lane (its own process, one thread): its methods in order. Once every other lane has
    finished, the next method gets all cores."""
    import torch

    torch.set_num_threads(1)
    rows, seconds = [], {}
    for method in methods:
        if len(list(done_dir.glob("*.done"))) >= lanes - 1:
            torch.set_num_threads(os.cpu_count() or 1)
        t = time.time()
        rows += run_method(method, common, tag)
        seconds[method] = round(time.time() - t, 1)
        print(f"[lane {out.stem}] {method} done in {seconds[method]:.0f}s (threads {torch.get_num_threads()})", flush=True)
    write_json(out, {"rows": rows, "seconds": seconds})
    (done_dir / f"{out.stem}.done").touch()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-problems", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=300)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lanes", default=DEFAULT_LANES,
                    help="methods per parallel process, lanes separated by ';' (each lane one thread until the others finish)")
    ap.add_argument("--runs-dir", default=str(HERE / "runs"))
    ap.add_argument("--out", default=str(HERE / "results" / "accuracy.json"))
    ap.add_argument("--lane-out", help=argparse.SUPPRESS)  # internal: run one lane, write its rows here
    ap.add_argument("--lane-done-dir", help=argparse.SUPPRESS)
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
    lanes = [[m for m in lane.split(",") if m] for lane in args.lanes.split(";") if lane.strip(",")]
    if args.lane_out:  # a child: one lane
        run_lane(lanes[0], common, tag, Path(args.lane_out), Path(args.lane_done_dir), int(os.environ["ACCURACY_LANES"]))
        return
    unknown = {m for lane in lanes for m in lane} - {"base", *METHOD_THOUGHTS}
    if unknown:
        raise SystemExit(f"--lanes: unknown method(s) {sorted(unknown)}; known: base, {', '.join(METHOD_THOUGHTS)}")

    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, lane in enumerate(lanes):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--lanes", ",".join(lane),
                   "--lane-out", f"{tmp}/lane{i}.json", "--lane-done-dir", tmp]
            procs.append(subprocess.Popen(cmd, env={**os.environ, "ACCURACY_LANES": str(len(lanes))}))
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a lane failed (exit codes {codes}); re-run the same command to resume")
        lane_results = [read_json(Path(tmp) / f"lane{i}.json") for i in range(len(lanes))]
    order = ["base", "cot", "eotd", "pot", "etd"]
    rows = sorted((r for res in lane_results for r in res["rows"]),
                  key=lambda r: (order.index(r["method"].split(":")[0]), r["method"], r["dataset"]))
    out = Path(args.out)
    write_json(out, {
        "student": "smollm2-135m", "train_problems": args.train_problems, "eval_limit": args.eval_limit,
        "epochs": args.epochs, "max_new_tokens": args.max_new_tokens, "wall_seconds": round(time.time() - t_start, 1),
        "lanes": lanes, "method_seconds": {m: s for res in lane_results for m, s in res["seconds"].items()},
        "loadavg": os.getloadavg(), "rows": rows,
    })
    plot_accuracy(rows, out.with_suffix(".png"), title=f"smollm2-135m distilled on {args.train_problems} GSM8K problems")
    for r in rows:
        print(f"{r['method']:10s} {r['dataset']:6s} n={r['n']:4d} acc={r['accuracy']:.3f} "
              f"ci95=[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
    print(f"wall {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
