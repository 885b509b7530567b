"""Distillation at real scale: each method's own recipe on all of GSM8K train, evaluated on all of GSM8K test
and SVAMP, through `mathdistill.methods.run` (the same code as `mathdistill run`).

    python benchmarks/scale.py --methods cot                       # on a GPU: -> benchmarks/results/scale.json
    python benchmarks/scale.py --methods cot,etd --profile cpu-smoke   # the same code at a tiny budget on a CPU
    python benchmarks/scale.py --methods all --profile cpu-smoke --runs-dir /tmp/smoke --out /tmp/smoke/scale.json

Profiles and per-method settings (epochs, LoRID 20 iterations, FDD 2 rounds, SIKeD 2 iterations with k = 4)
are in benchmarks/scale.yaml; methods are the entries of benchmarks/experiments/ (their recipe and variant).
A method whose recipe names a method mathdistill does not have (yet) is skipped with a note. Every method
runs in an ordinary resumable run folder under benchmarks/runs/scale-<profile>/ (git-ignored): re-run the
same command after a kill. Its rows (contract 9 names) replace the rows of the same name and dataset in the
profile's results file, every other row is kept; each row adds eval_seconds, gen_tokens_per_s and
train_tokens_per_s (all tokens, prompts included, of the method's trainings over their seconds), and the
file says on which device it was measured (top-level `device`, and per row); it is rewritten after each method,
so a later method's failure keeps the rows before it. Also written: a plot (.png) and a markdown table (.md)
beside it, for benchmarks/README.md. benchmarks/results/scale.json takes only the gpu profile's rows, and no
results file mixes profiles.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from accuracy import EXPERIMENTS, RECIPES, STUDENT  # noqa: E402

from mathdistill.io import InputError, read_json, read_yaml_mapping, write_json, write_text  # noqa: E402

PROFILES_FILE = HERE / "scale.yaml"
OUT = {"gpu": HERE / "results" / "scale.json"}  # other profiles: in their runs folder (not results)


def device_name() -> dict:
    """The machine the rows were measured on."""
    import torch

    if torch.cuda.is_available():
        return {"kind": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                "torch": torch.__version__}
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"kind": "cpu", "name": cpu, "count": os.cpu_count(), "torch": torch.__version__}


def overrides(name: str, profile: str, spec: dict, runs_dir: Path) -> tuple[str, list[str]] | None:
    """(method, overrides) of experiment `name` under `profile`; None when its method is not registered."""
    from mathdistill.methods import METHODS
    from mathdistill.methods.config import DistillConfig

    exp = EXPERIMENTS[name]
    method = read_yaml_mapping(RECIPES / exp.recipe).get("method")
    if method not in METHODS:
        return None
    prof = spec["profiles"][profile]
    fields = METHODS[method].config.model_fields
    evals = ", ".join(f"{{dataset: {d}, split: test, limit: {'null' if prof['eval_limit'] is None else prof['eval_limit']}}}"
                      for d in prof["datasets"])
    out = [f"runs_dir={runs_dir}", f"data.eval=[{evals}]"]
    if issubclass(METHODS[method].config, DistillConfig):
        out.append(f"data.train.limit={'null' if prof['train_limit'] is None else prof['train_limit']}")
    out += [o for o in prof["common"] if o.split(".", 1)[0].split("=", 1)[0] in fields]
    out += exp.overrides + (spec.get("methods", {}).get(name, {}) or {}).get(profile, [])
    return method, out + [f"name={name}-{profile}"]


def train_rate(folder: Path) -> float | None:
    """Trained tokens (all tokens of one pass x epochs, over every training of the run) per second of training."""
    results = [read_json(f) for f in folder.rglob("train_result.json")]
    results = [r for r in results if r.get("tokens") and r.get("seconds") and not r.get("skipped")]
    seconds = sum(r["seconds"] for r in results)
    return round(sum(r["tokens"] * r["epoch"] for r in results) / seconds, 1) if seconds else None


def run_method(name: str, profile: str, spec: dict, runs_dir: Path, dev: dict) -> dict:
    from mathdistill import runtime
    from mathdistill.methods import run
    from mathdistill.methods.config import load_config

    runtime.quiet()
    method, ovr = overrides(name, profile, spec, runs_dir)
    cfg = load_config(RECIPES / EXPERIMENTS[name].recipe, ovr)
    t0 = time.time()
    folder = run(cfg, command=[sys.executable, *sys.argv])
    seconds = round(time.time() - t0, 1)
    rate = train_rate(folder)
    now = dt.datetime.now().astimezone().isoformat(timespec="minutes")
    rows = [{**r, "eval_seconds": r.get("eval_seconds"), "gen_tokens_per_s": r.get("gen_tokens_per_s"),
             "train_tokens_per_s": rate, "experiment": name, "profile": profile, "run": str(folder),
             "device": dev["name"], "measured": now} for r in read_json(folder / "results.json")["rows"]]
    return {"rows": rows, "seconds": seconds, "overrides": ovr, "method": method}


def merge(out: Path, results: dict, skipped: dict, profile: str, spec: dict, dev: dict) -> dict:
    """The results file with these rows replacing those of the same name and dataset (contract 9)."""
    old = read_json(out) if out.exists() else {}
    if old.get("profile", profile) != profile:
        raise SystemExit(f"--out: {out} holds rows of profile '{old['profile']}', not '{profile}'; "
                         "give this profile its own file")
    new = [r for res in results.values() for r in res["rows"]]
    keys = {(r["method"], r["dataset"]) for r in new}
    rows = [r for r in old.get("rows", []) if (r["method"], r["dataset"]) not in keys] + new
    order = list(EXPERIMENTS)
    rows.sort(key=lambda r: (order.index(r.get("experiment")) if r.get("experiment") in order else len(order),
                             r["method"], r["dataset"]))
    prof = spec["profiles"][profile]
    runs = dict(old.get("experiments", {}))
    for name, res in results.items():
        runs[name] = {"seconds": res["seconds"], "overrides": res["overrides"], "measured": res["rows"][0]["measured"]
                      if res["rows"] else None, "device": dev["name"]}
    doc = {"student": STUDENT, "device": dev, "profile": profile,
           "train_problems": prof["train_limit"] if prof["train_limit"] is not None else "all",
           "eval_limit": prof["eval_limit"] if prof["eval_limit"] is not None else "all",
           "experiments": runs, "skipped": {**old.get("skipped", {}), **skipped}, "rows": rows}
    for name in results:
        doc["skipped"].pop(name, None)
    write_json(out, doc)
    return doc


def table(rows: list[dict]) -> str:
    """The markdown table of benchmarks/README.md's real-scale section."""
    def num(x, fmt="{:,.0f}"):
        return fmt.format(x) if isinstance(x, (int, float)) else "n/a"

    lines = ["| row | dataset | n | accuracy (95% CI) | train s | train tok/s | eval s | gen tok/s | device |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(f"| {r['method']} | {r['dataset']} | {r['n']} | {r['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) | "
                     f"{num(r.get('train_seconds'))} | {num(r.get('train_tokens_per_s'))} | {num(r.get('eval_seconds'))} | "
                     f"{num(r.get('gen_tokens_per_s'))} | {r.get('device', '?')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", required=True, help=f"comma list of {', '.join(EXPERIMENTS)}; or all")
    ap.add_argument("--profile", default="gpu", help="gpu | cpu-smoke (benchmarks/scale.yaml)")
    ap.add_argument("--runs-dir", default=None, help="default: benchmarks/runs/scale-<profile>")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/scale.json (gpu), else in the runs dir")
    args = ap.parse_args()
    spec = read_yaml_mapping(PROFILES_FILE)
    if args.profile not in spec["profiles"]:
        raise SystemExit(f"--profile: unknown '{args.profile}'; known: {', '.join(spec['profiles'])}")
    names = list(EXPERIMENTS) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in EXPERIMENTS]
    if unknown or not names:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(EXPERIMENTS)}")
    runs_dir = Path(args.runs_dir or HERE / "runs" / f"scale-{args.profile}")
    out = Path(args.out or OUT.get(args.profile, runs_dir / "scale.json"))
    if args.profile != "gpu" and out.resolve() == OUT["gpu"].resolve():
        raise SystemExit(f"--out: {OUT['gpu']} holds the gpu profile's rows; write '{args.profile}' elsewhere")
    dev = device_name()
    if args.profile == "gpu" and dev["kind"] != "cuda":
        print("note: the gpu profile on a machine without CUDA; the rows will say so", file=sys.stderr)

    t0 = time.time()
    results, skipped = {}, {}
    for name in names:
        if overrides(name, args.profile, spec, runs_dir) is None:
            method = read_yaml_mapping(RECIPES / EXPERIMENTS[name].recipe).get("method")
            skipped[name] = f"method '{method}' is not registered in this mathdistill"
            print(f"{name}: skipped ({skipped[name]})", file=sys.stderr)
            continue
        try:
            results[name] = run_method(name, args.profile, spec, runs_dir, dev)
        except InputError as e:  # e.g. a run folder of another config: named, no traceback
            raise SystemExit(f"{name}: {e}") from None
        print(f"{name}: {results[name]['seconds']:.0f}s", file=sys.stderr, flush=True)
        merge(out, {name: results[name]}, {}, args.profile, spec, dev)  # kept if a later method fails
    doc = merge(out, {}, skipped, args.profile, spec, dev)
    from mathdistill.report import plot_accuracy

    plot_accuracy(doc["rows"], out.with_suffix(".png"), title=f"{STUDENT} at real scale ({dev['name']})")
    write_text(out.with_suffix(".md"), table(doc["rows"]))
    for r in doc["rows"]:
        if r.get("experiment") in results:
            print(f"{r['method']:14s} {r['dataset']:6s} n={r['n']:5d} acc={r['accuracy']:.3f} "
                  f"train_tok/s={r.get('train_tokens_per_s')} gen_tok/s={r.get('gen_tokens_per_s')} "
                  f"eval_s={r.get('eval_seconds')}")
    print(f"wall {time.time() - t0:.0f}s -> {out}")


if __name__ == "__main__":
    main()
