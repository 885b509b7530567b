"""`mathdistill run RECIPE --plan`: what a recipe will ask of its teachers and of its student, before anything runs.

    p = plan(cfg)                  # nothing is sent, written, trained or downloaded
    print_plan(p)                  # the tables `--plan` prints; p is JSON-able (`--plan --json`)

Teacher side, per teach stage (`teacher_stages`): the requests it would send (problems x samples, less what its
reply cache holds), their prompt and completion tokens and their cost at the configured prices
(`mathdistill.teacher.bill`), and what the run's budget (`teach.max_cost`) has left. Student side: the one
workload estimator (`mathdistill.workload.estimate`, as `benchmarks/scale.py --plan`): its trainings and
generation per stage, and their seconds given a speeds file.

The teach stages are the recipes' own: one per trained format (`train_formats`: teach.samples rationales per
problem), LoRID's and KPDD's knowledge / key points (a teacher's, or the recorded plans standing in for them:
offline, free), FDD's rounds (round 0 on the seeds; later rounds on problems the run will make, so their counts
are upper bounds: every new problem kept, `generate.per_problem` per training problem).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mathdistill.teacher.bill import Stage, stage_bill
from mathdistill.teacher.cache import FILE
from mathdistill.teacher.config import TeacherConfig


def teacher_stages(cfg) -> list[Stage]:
    """The teach stages of recipe `cfg`, in the order it runs them (module docstring)."""
    from mathdistill.methods import steps
    from mathdistill.methods.config import DistillConfig, train_formats

    if not isinstance(cfg, DistillConfig):
        return []
    problems = _kept(cfg, steps.problems(cfg.data.train, cfg.data.data_dir))
    run = cfg.run_dir
    if cfg.method == "fdd":
        return _fdd(cfg, problems)
    plans = getattr(cfg, "plans", None)
    if cfg.method == "kpdd":
        from mathdistill.thoughts.keypoints import KeyPoints

        solution = [_teach(cfg, t, problems, cfg.teach.samples, run) for t in cfg.thoughts] if plans else []
        return solution + [_teach(cfg, KeyPoints(solution=cfg.solution), problems, 1, run, plans)]
    stages = [_teach(cfg, t, problems, cfg.teach.samples, run) for t in train_formats(cfg)]
    if cfg.method == "lorid":
        stages.append(_teach(cfg, "knowledge", problems, 1, run, plans))
    return stages


def _kept(cfg, problems: list) -> list:
    """`problems` less those the run's decontaminate stage dropped, when it has run (else all: the plan does not
    compute it, and says so)."""
    from mathdistill.io import read_json
    from mathdistill.methods.leakage import STAGE

    done = cfg.run_dir / "stages" / f"{STAGE}.json"
    if not done.is_file():
        return problems
    dropped = set(read_json(done)["value"]["dropped"])
    return [p for p in problems if p.id not in dropped]


def _teach(cfg, thought, problems, samples: int, scope: Path, plans: str | None = None, **kw) -> Stage:
    """Stage teach-<format> in `scope`: the format's teacher, or with `plans` the recorded stand-in."""
    name = thought if isinstance(thought, str) else thought.name
    teacher = TeacherConfig(kind="replay", replay=[plans]) if plans else cfg.teach.for_thought(name)
    prefix = "" if scope == cfg.run_dir else f"{scope.name}/"
    return Stage(f"{prefix}teach-{name}", thought, teacher, problems, samples, scope / "teach" / name / FILE, **kw)


def _fdd(cfg, seeds: list) -> list[Stage]:
    """Round 0 teaches the seeds; round i writes `per_problem` new problems per training problem (easy ones: a
    harder variation; planned all as that prompt) and labels each (`label_samples` per format), or, with no
    generate.teacher, teaches the pool's draws; counts as if every new problem were kept."""
    from mathdistill.teacher.generate import ProblemWriter

    g, run, stages = cfg.generate, cfg.run_dir, []
    stages += [_teach(cfg, t, seeds, cfg.paths_per_problem, run / "round-0") for t in cfg.thoughts]
    training = len(seeds)
    for i in range(1, cfg.rounds + 1):
        new = training * g.per_problem
        why = f"round {i}: at most {new} new problems ({training} training problems x {g.per_problem})"
        scale = new / len(seeds) if seeds else 0.0
        if g.teacher is not None:
            stages.append(Stage(f"round-{i}/generate", ProblemWriter("harder"), g.teacher, seeds, g.per_problem,
                                None, scale=training / len(seeds),
                                estimated=f"round {i}: {training} training problems x {g.per_problem}"))
            stages += [Stage(f"round-{i}/label-{t}", t, g.teacher, seeds, g.label_samples, None, scale=scale,
                             estimated=why) for t in cfg.thoughts]
        else:
            stages += [_teach(cfg, t, seeds, cfg.paths_per_problem, run / f"round-{i}", scale=scale,
                              estimated=why + ", drawn by the pool teacher") for t in cfg.thoughts]
        training += new
    return stages


def plan(cfg, speeds: str | Path | None = None) -> dict:
    """The plan of recipe `cfg` (module docstring): {"run_dir", "teacher": {stages, totals, budget},
    "student": {loads, totals, seconds, notes}}. Nothing is sent or written."""
    from mathdistill import workload

    teach = getattr(cfg, "teach", None)
    caps = (teach.max_cost, teach.max_requests) if teach is not None else (None, None)
    teacher = teacher_plan(teacher_stages(cfg), cfg.run_dir, *caps)
    student = None
    try:
        w = workload.estimate(cfg)
    except Exception as e:  # a method without Method.workload: no student plan, said so
        student = {"error": str(e)}
    else:
        secs = workload.Speeds.read(speeds) if speeds else None
        loads = [{"stage": x.stage, "kind": x.kind, "examples": x.examples, "tokens": x.tokens,
                  "sequences": x.sequences, "max_new_tokens": x.max_new_tokens, "note": x.note,
                  "seconds": round(w.seconds_of(x, secs), 1) if secs else None} for x in w.loads]
        student = {"loads": loads, "totals": w.totals(), "notes": w.notes, "speeds": secs.source if secs else None,
                   "seconds": round(w.seconds(secs), 1) if secs else None,
                   "train_problems": w.train_problems, "eval_problems": w.eval_problems}
    from mathdistill.methods.config import DistillConfig
    from mathdistill.methods.leakage import STAGE

    ran = (cfg.run_dir / "stages" / f"{STAGE}.json").is_file()
    if isinstance(cfg, DistillConfig) and cfg.data.decontaminate and not ran:
        teacher.setdefault("notes", []).append(
            "requests counted for every training problem: the run first drops those that meet a test set (stage "
            f"{STAGE}; e.g. 18 of the 7,473 GSM8K train problems), so it sends a little less")
    return {"run_dir": str(cfg.run_dir), "method": cfg.method, "teacher": teacher, "student": student}


def teacher_plan(stages: list[Stage], folder: Path, max_cost: float | None = None,
                 max_requests: int | None = None) -> dict:
    """{stages: a bill per stage, totals, unpriced: stages with no price, budget: the caps, what the reply caches
    under `folder` say was spent and what is left}."""
    from mathdistill.teacher.budget import spent

    rows = [stage_bill(s) for s in stages]
    totals = {k: sum(r[k] for r in rows) for k in ("requests", "cached", "in_batches", "to_send", "prompt_tokens",
                                                      "completion_tokens", "completion_max")}
    unpriced = [r["stage"] for r in rows if r["live"] and r["cost"] is None and r["to_send"]]
    totals["cost"] = None if unpriced else sum(r["cost"] or 0.0 for r in rows)
    totals["cost_max"] = None if unpriced else sum(r["cost_max"] or 0.0 for r in rows)
    budget = None
    if max_cost is not None or max_requests is not None:
        s = spent(folder)
        budget = {"max_cost": max_cost, "max_requests": max_requests, "spent": s["cost"], "requests": s["requests"],
                  "left": None if max_cost is None else max_cost - s["cost"]}
    return {"stages": rows, "totals": totals, "unpriced": unpriced, "budget": budget}


def _n(x) -> str:
    return "-" if x is None else f"{x:,}" if isinstance(x, int) else f"{x:,.0f}"


def _usd(x) -> str:
    return "no price" if x is None else f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def print_plan(p: dict, console=None) -> None:
    """The plan as tables (stdout)."""
    from rich.console import Console
    from rich.table import Table

    # no markup: URLs and notes print as they are; a pipe gets wide tables rather than 80 columns
    console = console or Console(width=None if sys.stdout.isatty() else 160, markup=False, highlight=False)
    t = p["teacher"]
    console.print(f"Plan of {p['method']} in {p['run_dir']} (nothing sent, nothing written)")
    if t["stages"]:
        table = Table("stage", "teacher", "requests", "cached", "to send", "prompt tok", "completion tok (max)",
                      "cost (max)", title="Teacher")
        for r in t["stages"]:
            table.add_row(r["stage"], r["teacher"], _n(r["requests"]),
                          _n(r["cached"] + r["in_batches"]), _n(r["to_send"]), _n(r["prompt_tokens"]),
                          f"{_n(r['completion_tokens'])} ({_n(r['completion_max'])})",
                          "-" if not r["live"] else f"{_usd(r['cost'])} ({_usd(r['cost_max'])})")
        tot = t["totals"]
        table.add_row("total", "", _n(tot["requests"]), _n(tot["cached"] + tot["in_batches"]), _n(tot["to_send"]),
                      _n(tot["prompt_tokens"]), f"{_n(tot['completion_tokens'])} ({_n(tot['completion_max'])})",
                      f"{_usd(tot['cost'])} ({_usd(tot['cost_max'])})")
        console.print(table)
        sending = [r for r in t["stages"] if r["live"] and r["to_send"]]
        for how in dict.fromkeys(r["tokens_by"] for r in sending):
            console.print(f"  prompt tokens ({', '.join(r['stage'] for r in sending if r['tokens_by'] == how)}): {how}")
        if sending:
            console.print("  completion tokens: " + "; ".join(f"{r['stage']}: {r['completion_by']}" for r in sending))
        for r in t["stages"]:
            if r["estimated"]:
                console.print(f"  {r['stage']}: an upper bound ({r['estimated']})")
        if t["unpriced"]:
            console.print(f"  no price for the teacher of {', '.join(t['unpriced'])}: set its prices.<model>")
        for note in t.get("notes", []):
            console.print(f"  {note}")
    b = t["budget"]
    if b:
        left = "" if b["left"] is None else f", ${b['left']:.4f} left"
        console.print(f"budget: max cost {b['max_cost']}, max requests {b['max_requests']}; spent so far (the reply "
                      f"caches): ${b['spent']:.4f}, {b['requests']} requests{left}")
    s = p["student"]
    if s is None:
        return
    if "error" in s:
        console.print(f"student: {s['error']}")
        return
    table = Table("stage", "kind", "examples", "tokens", "sequences", "max new", "seconds", "note", title="Student")
    for x in s["loads"]:
        table.add_row(x["stage"], x["kind"], _n(x["examples"] or None), _n(x["tokens"]), _n(x["sequences"] or None),
                      _n(x["max_new_tokens"] or None), _n(x["seconds"]), x["note"])
    console.print(table)
    tot = s["totals"]
    secs = f"; ~{s['seconds'] / 3600:.2f} h at {s['speeds']}" if s["seconds"] is not None else \
        " (--speeds FILE, a gpu_speed.json, gives seconds)"
    console.print(f"student: {tot['trainings']} trainings, {tot['train_tokens']:,} training tokens, "
                  f"{tot['sequences']:,} generated sequences, {tot['generated_tokens']:,} generated tokens{secs}")
    for note in s["notes"]:
        console.print(f"  {note}")
