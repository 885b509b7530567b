"""`mathdistill run RECIPE --plan`: what a recipe will ask of its teachers and of its student, before anything runs.

    p = plan(cfg)                  # nothing is sent, written, trained or downloaded
    print_plan(p)                  # the tables `--plan` prints; p is JSON-able (`--plan --json`)
    w = estimate(cfg)              # the student side alone (`benchmarks/scale.py --plan`)

Teacher side, per teach stage (`teacher_stages`): the requests it would send (problems x samples, less what its
reply cache holds), their prompt and completion tokens and their cost at the configured prices
(`mathdistill.teacher.bill`), and what the run's budget (`teach.max_cost`) has left. Student side: the one
workload estimator (`estimate`, the figures of `mathdistill.workload`): its trainings and generation per stage,
and their seconds given a speeds file.

Both are the method's own declarations (`Method.teacher_plan`, `Method.workload` in `methods.registry`, written
in its recipe file). A method without a teacher plan gets one teach stage per format it teaches
(`Method.formats`: teach.samples rationales per problem); LoRID's and KPDD's add knowledge / key points (a
teacher's, or the recorded plans standing in for them: offline, free), FDD's count its rounds (round 0 on the
seeds; later rounds on problems the run will make, so their counts are upper bounds).
"""

from __future__ import annotations

from pathlib import Path

from mathdistill.io import InputError, read_json
from mathdistill.methods import steps
from mathdistill.methods.config import DistillConfig
from mathdistill.methods.leakage import STAGE
from mathdistill.methods.registry import METHODS
from mathdistill.teacher.bill import Stage, number, plan_console, print_teacher_plan, teacher_plan
from mathdistill.workload import Speeds, Workload


def teacher_stages(cfg) -> list[Stage]:
    """The teach stages of recipe `cfg`, in the order it runs them (module docstring)."""
    if not isinstance(cfg, DistillConfig):
        return []
    method = METHODS[cfg.method]
    problems = _kept(cfg, steps.problems(cfg.data.train, cfg.data.data_dir))
    if method.teacher_plan is not None:
        return method.teacher_plan(cfg, problems)
    return [steps.teach_stage(cfg, t, problems, cfg.teach.samples) for t in method.formats(cfg)]


def _kept(cfg, problems: list) -> list:
    """`problems` less those the run's decontaminate stage dropped, when it has run (else all: the plan does not
    compute it, and says so)."""
    done = cfg.run_dir / "stages" / f"{STAGE}.json"
    if not done.is_file():
        return problems
    dropped = set(read_json(done)["value"]["dropped"])
    return [p for p in problems if p.id not in dropped]


def estimate(cfg) -> Workload:
    """The student's workload of recipe `cfg` (a validated config): its training problems and evaluation
    slices counted from the data (`data.load`, no model), then what its method's stages add."""
    w = Workload(cfg.method)
    for s in cfg.data.eval:
        w.eval_problems[s.dataset] = w.eval_problems.get(s.dataset, 0) + _count(s, cfg.data.data_dir)
    if isinstance(cfg, DistillConfig):
        w.train_problems = _count(cfg.data.train, cfg.data.data_dir)
    method = METHODS[cfg.method]
    if method.workload is None:
        raise InputError(f"method '{cfg.method}' does not say what its stages cost (Method.workload): no plan")
    method.workload(cfg, w)
    return w


def _count(split, data_dir) -> int:
    """Problems in a configured slice [offset, offset + limit) of its dataset split."""
    from mathdistill.data import load

    total = len(load(split.dataset, split.split, data_dir=data_dir))
    left = max(0, total - split.offset)
    return left if split.limit is None else min(split.limit, left)


def plan(cfg, speeds: str | Path | None = None) -> dict:
    """The plan of recipe `cfg` (module docstring): {"run_dir", "teacher": {stages, totals, budget},
    "student": {loads, totals, seconds, notes}}. Nothing is sent or written."""
    teach = getattr(cfg, "teach", None)
    caps = (teach.max_cost, teach.max_requests) if teach is not None else (None, None)
    teacher = teacher_plan(teacher_stages(cfg), cfg.run_dir, *caps)
    student = None
    try:
        w = estimate(cfg)
    except Exception as e:  # a method without Method.workload: no student plan, said so
        student = {"error": str(e)}
    else:
        secs = Speeds.read(speeds) if speeds else None
        loads = [{"stage": x.stage, "kind": x.kind, "examples": x.examples, "tokens": x.tokens,
                  "sequences": x.sequences, "max_new_tokens": x.max_new_tokens, "note": x.note,
                  "seconds": round(w.seconds_of(x, secs), 1) if secs else None} for x in w.loads]
        student = {"loads": loads, "totals": w.totals(), "notes": w.notes, "speeds": secs.source if secs else None,
                   "seconds": round(w.seconds(secs), 1) if secs else None,
                   "train_problems": w.train_problems, "eval_problems": w.eval_problems}
    decontaminated = (cfg.run_dir / "stages" / f"{STAGE}.json").is_file()
    if isinstance(cfg, DistillConfig) and cfg.data.decontaminate and not decontaminated:
        teacher.setdefault("notes", []).append(
            "requests counted for every training problem: the run first drops those that meet a test set (stage "
            f"{STAGE}; e.g. 18 of the 7,473 GSM8K train problems), so it sends a little less")
    return {"run_dir": str(cfg.run_dir), "method": cfg.method, "teacher": teacher, "student": student}


def print_plan(p: dict, console=None) -> None:
    """The plan as tables (stdout): the teacher's (`teacher.bill.print_teacher_plan`), then the student's."""
    from rich.table import Table

    console = console or plan_console()
    print_teacher_plan(p["teacher"], f"Plan of {p['method']} in {p['run_dir']}", console)
    s = p["student"]
    if s is None:
        return
    if "error" in s:
        console.print(f"student: {s['error']}")
        return
    table = Table("stage", "kind", "examples", "tokens", "sequences", "max new", "seconds", "note", title="Student")
    for x in s["loads"]:
        table.add_row(x["stage"], x["kind"], number(x["examples"] or None), number(x["tokens"]),
                      number(x["sequences"] or None), number(x["max_new_tokens"] or None), number(x["seconds"]), x["note"])
    console.print(table)
    tot = s["totals"]
    secs = f"; ~{s['seconds'] / 3600:.2f} h at {s['speeds']}" if s["seconds"] is not None else \
        " (--speeds FILE, a gpu_speed.json, gives seconds)"
    console.print(f"student: {tot['trainings']} trainings, {tot['train_tokens']:,} training tokens, "
                  f"{tot['sequences']:,} generated sequences, {tot['generated_tokens']:,} generated tokens{secs}")
    for note in s["notes"]:
        console.print(f"  {note}")
