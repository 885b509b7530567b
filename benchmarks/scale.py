"""Distillation at real scale: each method's own recipe on GSM8K train, evaluated on whole test sets, through
`mathdistill.methods.run` (the same code as `mathdistill run`), every method of a profile in one invocation.

    python benchmarks/scale.py --methods all --profile gpu-table --plan          # the workload and seconds, nothing run
    python benchmarks/scale.py --methods all --profile gpu-table --out DIR       # on one GPU: the table, into DIR
    python benchmarks/scale.py --methods all --profile gpu-dryrun --out /tmp/dry # that plan on a CPU, random 2 layers
    python benchmarks/scale.py --methods cot,etd --profile cpu-smoke             # the same code at a tiny budget

Profiles (benchmarks/scale.yaml) set the training problems (the same for every method; `auto`: as many as the
profile's budget allows at the speeds of benchmarks/results/gpu_speed.json), test sets, shared overrides and each
method's trims; methods are the entries of benchmarks/experiments/ (recipe, variant overrides, row name).

`--plan` prints, per method, what it asks of the student (`mathdistill.methods.plan.estimate`: trainings and their
problems and tokens, generated sequences and tokens, model loads) and its estimated seconds, and the total; a plan
over the budget (`--budget`, else the profile's) is refused before anything runs, naming the methods to trim.

Every method runs in an ordinary resumable run folder under benchmarks/runs/scale-<profile>/ (git-ignored):
re-run the same command after a kill. `--out DIR` receives scale.json, scale.md and scale.png after every
finished evaluation (each written to a temporary file and renamed), so a call killed at its time limit keeps
every row finished before it. Rows (contract 9 names) replace the rows of the same name and dataset, every other
row is kept; each row says where it was measured (`device`, `measured`), its training and evaluation seconds and
tokens/s, its overrides, its training problems and epochs, and where its training data came from (`teacher`,
`offline_stand_in`). benchmarks/results/scale.json holds only gpu-table rows, and no results file mixes profiles.
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
SPEEDS_FILE = HERE / "results" / "gpu_speed.json"
RESULTS = HERE / "results"
OUT = {"gpu-table": RESULTS, "gpu": RESULTS / "scale-gpu"}  # other profiles: in their runs folder (not results)
GSM8K_TRAIN = 7473


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


# ----------------------------------------------------------------------------- profiles


def profile_of(spec: dict, name: str) -> dict:
    """Profile `name` with what it inherits (`like`): its own keys win, `common` and method overrides add up."""
    if name not in spec["profiles"]:
        raise SystemExit(f"--profile: unknown '{name}'; known: {', '.join(spec['profiles'])}")
    prof = dict(spec["profiles"][name])
    parent = prof.get("like")
    if parent:
        base = profile_of(spec, parent)
        prof = {**base, **prof, "common": base["common"] + prof.get("common", []), "chain": base["chain"] + [name]}
    else:
        prof["chain"] = [name]
    return prof


def overrides(name: str, profile: str, spec: dict, runs_dir: Path, train_limit=None, datasets=None,
              trims: tuple = ()) -> tuple[str, list[str]] | None:
    """(method, overrides) of experiment `name` under `profile`; None when its method is not registered.
    `train_limit` / `datasets`: in place of the profile's (a plan's choice); `trims`: the profile's trims applied."""
    from mathdistill.methods.config import DistillConfig
    from mathdistill.methods.registry import METHODS

    exp = EXPERIMENTS[name]
    method = exp.method_name()
    if method not in METHODS:
        return None
    prof = profile_of(spec, profile)
    limit = prof["train_limit"] if train_limit is None else train_limit
    fields = METHODS[method].config.model_fields
    eval_limit = "null" if prof["eval_limit"] is None else prof["eval_limit"]
    evals = ", ".join(f"{{dataset: {d}, split: test, limit: {eval_limit}}}" for d in (datasets or prof["datasets"]))
    out = [f"runs_dir={runs_dir}", f"data.eval=[{evals}]"]
    if prof.get("student") == "random-2-layer":
        out.append(f"student.model={dryrun_student(runs_dir)}")  # made by run_method before it runs
    if issubclass(METHODS[method].config, DistillConfig):
        out.append(f"data.train.limit={'null' if limit is None else limit}")
    out += [o for o in prof["common"] if o.split(".", 1)[0].split("=", 1)[0] in fields]
    out += exp.overrides
    for p in prof["chain"]:
        out += (spec.get("methods", {}).get(name, {}) or {}).get(p, [])
    out += [o for t in trims if t["method"] == name for o in t["overrides"]]
    return method, out + [f"name={name}-{profile}"]


def dryrun_student(runs_dir: Path, make: bool = False) -> str:
    """The dry run's student: a random 2-layer copy of the default student (architecture, tokenizer) in the runs
    folder, made once (`make`)."""
    from mathdistill.models import DEFAULT_STUDENT, random_model

    folder = runs_dir / "student-random-2-layer"
    return random_model(DEFAULT_STUDENT, folder) if make else str(folder)


# ----------------------------------------------------------------------------- the plan


def estimates(names: list[str], profile: str, spec: dict, runs_dir: Path, train_limit, datasets, trims) -> dict:
    """{experiment: Workload} at these settings (configs built and validated, nothing run)."""
    from mathdistill.methods.plan import estimate

    out = {}
    for name in names:
        method, ovr = overrides(name, profile, spec, runs_dir, train_limit, datasets, trims)
        out[name] = estimate(EXPERIMENTS[name].load(ovr))
    return out


def plan(names: list[str], profile: str, spec: dict, runs_dir: Path, speeds, budget: float | None) -> dict:
    """The profile's settings for this invocation: training problems (auto: the largest that fits `budget`), test
    sets (optional ones when they fit), trims, and each method's workload and estimated seconds."""
    prof = profile_of(spec, profile)
    datasets, trims = list(prof["datasets"]), []
    if prof.get("student") == "random-2-layer" and prof.get("like"):  # a dry run: the trims its GPU plan makes
        parent = profile_of(spec, prof["like"])
        trims = plan(names, prof["like"], spec, runs_dir, speeds, parent.get("budget"))["trims"]

    def total(limit, ds, tr) -> float:
        ws = estimates(names, profile, spec, runs_dir, limit, ds, tr)
        return speeds.startup_seconds + sum(w.seconds(speeds, startup=False) for w in ws.values())

    limit = prof["train_limit"]
    if limit == "auto":
        limit = prof.get("train_min", 500)
        if budget is not None:
            for trim in prof.get("trim", []):  # rows dropped before any training set falls below train_min
                if total(limit, datasets, trims) <= budget:
                    break
                trims.append(trim)
            for d in prof.get("optional_datasets", []):
                if total(limit, datasets + [d], trims) <= budget:
                    datasets.append(d)
            # the largest size that fits: train_min and up in steps of 100 (then all), or below it down to the floor
            fits = total(limit, datasets, trims) <= budget
            sizes = ([limit, *range(limit // 100 * 100 + 100, GSM8K_TRAIN, 100), GSM8K_TRAIN] if fits else
                     [*range(prof.get("train_floor", 100), limit, 100)])
            lo, hi = 0, len(sizes) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if total(sizes[mid], datasets, trims) <= budget else (lo, mid - 1)
            limit = sizes[lo] if sizes else limit
    ws = estimates(names, profile, spec, runs_dir, limit, datasets, trims)
    seconds = {n: w.seconds(speeds, startup=False) for n, w in ws.items()}
    return {"train_limit": limit, "datasets": datasets, "trims": trims, "workloads": ws, "seconds": seconds,
            "total": speeds.startup_seconds + sum(seconds.values()), "budget": budget}


def print_plan(p: dict, speeds, profile: str) -> None:
    lines = [f"plan of profile {profile}: training problems {p['train_limit'] or 'all'} (GSM8K train, every method), "
             f"test sets {', '.join(p['datasets'])} (whole), speeds from {speeds.source}",
             f"{'method':10s} {'train problems':>14s} {'trainings':>9s} {'train tokens':>13s} {'sequences':>10s} "
             f"{'gen tokens':>11s} {'passes':>6s} {'loads':>5s} {'est. s':>7s}"]
    for name, w in p["workloads"].items():
        t = w.totals()
        evals = sum(1 for x in w.loads if x.kind == "generate")
        lines.append(f"{name:10s} {w.train_problems:>14,} {t['trainings']:>9} {t['train_tokens']:>13,} "
                     f"{t['sequences']:>10,} {t['generated_tokens']:>11,} {evals:>6} {t['model_loads']:>5} "
                     f"{p['seconds'][name]:>7.0f}")
    lines.append(f"{'start-up':10s} {'':>71s} {speeds.startup_seconds:>7.0f}")
    budget = f" (budget {p['budget']:.0f} s)" if p["budget"] is not None else ""
    lines.append(f"{'total':10s} {'':>71s} {p['total']:>7.0f}{budget}")
    lines += [f"trimmed to fit: {t['drops']}" for t in p["trims"]]
    lines += sorted({f"note: {n}" for w in p["workloads"].values() for n in w.notes})
    print("\n".join(lines))


def over_budget(p: dict) -> str | None:
    """Why the plan cannot run within its budget (None: it can)."""
    if p["budget"] is None or p["total"] <= p["budget"]:
        return None
    costly = sorted(p["seconds"], key=lambda n: -p["seconds"][n])
    return (f"the plan needs {p['total']:.0f} s, over the budget of {p['budget']:.0f} s by "
            f"{p['total'] - p['budget']:.0f} s; trim the costliest methods first: "
            + ", ".join(f"{n} ({p['seconds'][n]:.0f} s)" for n in costly[:4]))


# ----------------------------------------------------------------------------- running


def train_rate(folder: Path) -> float | None:
    """Trained tokens (all tokens of one pass x epochs, over every training of the run) per second of training."""
    results = [read_json(f) for f in folder.rglob("train_result.json")]
    results = [r for r in results if r.get("tokens") and r.get("seconds") and not r.get("skipped")]
    seconds = sum(r["seconds"] for r in results)
    return round(sum(r["tokens"] * r["epoch"] for r in results) / seconds, 1) if seconds else None


def _is_rows(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(r, dict) and {"method", "dataset", "n", "accuracy"} <= set(r) for r in value)


class Table:
    """The results of one invocation in `out` (scale.json, .md, .png), rewritten after every finished evaluation."""

    def __init__(self, out: Path, profile: str, dev: dict, settings: dict, order: list[str]):
        self.out, self.profile, self.dev, self.settings = out, profile, dev, settings
        self.order = order + [n for n in EXPERIMENTS if n not in order]  # rows in the profile's order of methods
        self.path = out / "scale.json"

    def stamp(self, rows: list[dict], name: str, method: str, overrides: list[str], folder: Path | None) -> list[dict]:
        """`rows` of experiment `name` as table rows: named as the experiment says, with where and how measured."""
        now = dt.datetime.now().astimezone().isoformat(timespec="minutes")
        return [{**r, "train_tokens_per_s": train_rate(folder) if folder else None, "experiment": name,
                 "profile": self.profile, "train_problems": self.settings["train_limit"], "overrides": overrides,
                 "device": self.dev["name"], "measured": now, **({"run": str(folder)} if folder else {})}
                for r in EXPERIMENTS[name].rows(rows, method)]

    def write(self, rows: list[dict], runs: dict | None = None, skipped: dict | None = None) -> dict:
        """Merge `rows` (replacing rows of the same name and dataset, keeping every other: contract 9) and write
        scale.json, scale.md and scale.png, each atomically."""
        old = read_json(self.path) if self.path.exists() else {}
        if old.get("profile", self.profile) != self.profile:
            raise SystemExit(f"--out: {self.path} holds rows of profile '{old['profile']}', not '{self.profile}'; "
                             "give this profile its own folder")
        keys = {(r["method"], r["dataset"]) for r in rows}
        merged = [r for r in old.get("rows", []) if (r["method"], r["dataset"]) not in keys] + rows
        merged.sort(key=lambda r: (self.order.index(r["experiment"]) if r.get("experiment") in self.order
                                   else len(self.order), r["method"], r["dataset"]))
        doc = {"student": STUDENT, "device": self.dev, "profile": self.profile,
               "train_problems": self.settings["train_limit"] if self.settings["train_limit"] is not None else "all",
               "datasets": self.settings["datasets"], "trimmed": [t["drops"] for t in self.settings["trims"]],
               "plan_seconds": self.settings.get("total"),
               "experiments": {**old.get("experiments", {}), **(runs or {})},
               "skipped": {**old.get("skipped", {}), **(skipped or {})}, "rows": merged}
        for name in runs or {}:
            doc["skipped"].pop(name, None)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.path, doc)
        write_text(self.out / "scale.md", table(merged))
        from mathdistill.report import plot_accuracy

        plot_accuracy(merged, self.out / "scale.png", title=f"{STUDENT} at real scale ({self.dev['name']})")
        return doc


def run_method(name: str, profile: str, spec: dict, runs_dir: Path, settings: dict, tab: Table) -> dict:
    """Run experiment `name` (resuming its folder); its rows reach `tab` as each evaluation finishes."""
    from mathdistill import runtime
    from mathdistill.methods.provenance import with_provenance
    from mathdistill.methods.runner import run

    runtime.quiet()
    if profile_of(spec, profile).get("student") == "random-2-layer":
        dryrun_student(runs_dir, make=True)
    method, ovr = overrides(name, profile, spec, runs_dir, settings["train_limit"], settings["datasets"],
                            settings["trims"])
    cfg = EXPERIMENTS[name].load(ovr)

    def on_stage(stage: str, value) -> None:
        if _is_rows(value):  # an evaluation finished: its rows now, before the method's end
            tab.write(tab.stamp(with_provenance(cfg.run_dir, value), name, cfg.method, ovr, None))

    t0 = time.time()
    folder = run(cfg, command=[sys.executable, *sys.argv], on_stage=on_stage)
    seconds = round(time.time() - t0, 1)
    rows = tab.stamp(read_json(folder / "results.json")["rows"], name, cfg.method, ovr, folder)
    disk = max((read_json(f).get("disk_bytes") or 0 for f in folder.rglob("train_result.json")), default=0)
    info = {"seconds": seconds, "plan_seconds": round(settings["seconds"].get(name, 0), 1), "overrides": ovr,
            "measured": rows[0]["measured"] if rows else None, "device": tab.dev["name"],
            "peak_training_disk_bytes": disk}
    tab.write(rows, {name: info})
    return {"rows": rows, **info}


def table(rows: list[dict]) -> str:
    """The markdown table of benchmarks/README.md's real-scale section."""
    def num(x, fmt="{:,.0f}"):
        return fmt.format(x) if isinstance(x, (int, float)) else "n/a"

    lines = ["| row | dataset | n | accuracy (95% CI) | train problems | train s | train tok/s | eval s | gen tok/s "
             "| device |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        lines.append(f"| {r['method']} | {r['dataset']} | {r['n']} | {r['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) | "
                     f"{num(r.get('train_problems'))} | {num(r.get('train_seconds'))} | "
                     f"{num(r.get('train_tokens_per_s'))} | "
                     f"{num(r.get('eval_seconds'))} | {num(r.get('gen_tokens_per_s'))} | {r.get('device', '?')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", required=True, help=f"comma list of {', '.join(EXPERIMENTS)}; all: the profile's")
    ap.add_argument("--profile", default="gpu-table", help="gpu-table | gpu-dryrun | gpu | cpu-smoke (scale.yaml)")
    ap.add_argument("--plan", action="store_true", help="print the workload and estimated seconds; run nothing")
    ap.add_argument("--budget", type=float, default=None, help="seconds the plan must fit (default: the profile's)")
    ap.add_argument("--speeds", default=os.path.relpath(SPEEDS_FILE), help="measured speeds the plan uses")
    ap.add_argument("--runs-dir", default=None, help="default: benchmarks/runs/scale-<profile>")
    ap.add_argument("--out", default=None, help="folder for scale.json/.md/.png (default: benchmarks/results for "
                                                "gpu-table, else the runs dir)")
    args = ap.parse_args()
    spec = read_yaml_mapping(PROFILES_FILE)
    prof = profile_of(spec, args.profile)
    names = (prof.get("methods") or list(EXPERIMENTS)) if args.methods == "all" else \
        [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in EXPERIMENTS]
    if unknown or not names:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(EXPERIMENTS)}")
    runs_dir = Path(args.runs_dir or HERE / "runs" / f"scale-{args.profile}")
    out = Path(args.out or OUT.get(args.profile, runs_dir))
    if out.suffix == ".json":
        raise SystemExit(f"--out: {out} is a file name; --out names a folder (it receives scale.json, .md, .png)")
    if args.profile != "gpu-table" and out.resolve() == RESULTS.resolve():
        raise SystemExit(f"--out: {RESULTS}/scale.json holds the gpu-table profile's rows; "
                         f"write '{args.profile}' elsewhere")

    from mathdistill.workload import Speeds

    skipped = {}
    for name in list(names):
        if overrides(name, args.profile, spec, runs_dir) is None:
            method = EXPERIMENTS[name].method_name()
            skipped[name] = f"method '{method}' is not registered in this mathdistill"
            print(f"{name}: skipped ({skipped[name]})", file=sys.stderr)
            names.remove(name)
    speeds = Speeds.read(args.speeds)
    budget = args.budget if args.budget is not None else prof.get("budget")
    try:
        settings = plan(names, args.profile, spec, runs_dir, speeds, budget)
    except InputError as e:
        raise SystemExit(f"plan: {e}") from None
    print_plan(settings, speeds, args.profile)
    refused = over_budget(settings)
    if refused:
        raise SystemExit(f"refused: {refused}")
    if args.plan:
        return
    dev = device_name()
    if args.profile.startswith("gpu") and args.profile != "gpu-dryrun" and dev["kind"] != "cuda":
        print(f"note: the {args.profile} profile on a machine without CUDA; the rows will say so", file=sys.stderr)
    tab = Table(out, args.profile, dev, settings, names)
    t0 = time.time()
    tab.write([], skipped=skipped)
    for name in names:
        try:
            res = run_method(name, args.profile, spec, runs_dir, settings, tab)
        except InputError as e:  # e.g. a run folder of another config: named, no traceback
            raise SystemExit(f"{name}: {e}") from None
        print(f"{name}: {res['seconds']:.0f}s (planned {res['plan_seconds']:.0f}s)", file=sys.stderr, flush=True)
        for r in res["rows"]:
            print(f"{r['method']:14s} {r['dataset']:6s} n={r['n']:5d} acc={r['accuracy']:.3f} "
                  f"train_tok/s={r.get('train_tokens_per_s')} gen_tok/s={r.get('gen_tokens_per_s')} "
                  f"eval_s={r.get('eval_seconds')}")
    print(f"wall {time.time() - t0:.0f}s (planned {settings['total']:.0f}s) -> {out}")


if __name__ == "__main__":
    main()
