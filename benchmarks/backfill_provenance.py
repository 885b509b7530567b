"""Back-fill `teacher`, `offline_stand_in` and `teacher_note` (contract 9) into the rows of
benchmarks/results/accuracy.json and base_accuracy.json measured before every row carried them.

    python benchmarks/backfill_provenance.py            # rewrites both files; rows that have the fields are kept

A row's run folder is gone, so its teach summaries are rebuilt from what made it: its experiment file
(benchmarks/experiments/<name>.yaml: recipe + overrides; rows recorded before experiments were named get
theirs from the row's method family: base, cot, eotd, etd, pot) and that recipe, in the words the teach
stages write (`TeacherConfig.describe`; the recorded plans LoRID and KPDD convert; FDD's pool teacher for
rounds >= 1), and given to the same `methods.provenance.row_provenance` that new rows go through. Base rows
are untrained (teacher null). The recipes' offline teachers have not changed since the first rows were
measured (commit 9325089: recorded Llama-3-70B CoT, reference PoT/EoT), so the rebuilt words are theirs.
Ran once on 2026-11-27; the result is committed.
"""

from __future__ import annotations

import re
from pathlib import Path

from mathdistill.io import read_json, write_json

HERE = Path(__file__).resolve().parent
#: what the plans stand in for, in the recipes' own words (methods/lorid.py, methods/kpdd.py: steps.plans_stand_in)
PLANS_FOR = {"lorid": ("knowledge", "general knowledge: they are problem-specific plans"),
             "kpdd": ("keypoints", "key points: their steps, not the facts of the problem KPDD extracts")}


def summaries(cfg) -> list[tuple[str | None, str, dict]]:
    """(scope, format, summary) as the recipe's teach stages write them (offline recipes only)."""
    from mathdistill.methods.config import DistillConfig
    from mathdistill.methods.registry import METHODS
    from mathdistill.methods.steps import plans_stand_in
    from mathdistill.teacher.config import TeacherConfig
    from mathdistill.teacher.pool import DESCRIPTION

    if not isinstance(cfg, DistillConfig):
        return []
    scope = "round-0" if cfg.method == "fdd" else None
    out, taught = [], METHODS[cfg.method].formats(cfg)
    for t in taught:
        spec = cfg.teach.for_thought(t)
        out.append((scope, t, {"teacher": spec.describe(t), "offline_stand_in": spec.offline_stand_in}))
    if cfg.method in PLANS_FOR and getattr(cfg, "plans", None):
        fmt, what = PLANS_FOR[cfg.method]
        derived = f"{Path(cfg.plans).stem}.{fmt}.json"
        out.append((None, fmt, {"teacher": TeacherConfig(kind="replay", replay=[derived]).describe(fmt),
                                "offline_stand_in": plans_stand_in(cfg, what)}))
    if cfg.method == "fdd" and cfg.generate.teacher is None:
        out += [(f"round-{i}", t, {"teacher": f"{s['teacher']}, on problems drawn by the pool teacher (simulation)",
                                   "offline_stand_in": DESCRIPTION})
                for i in range(1, cfg.rounds + 1) for _, t, s in out[:len(taught)]]
    return out


def experiment_config(name: str):
    from mathdistill.io import read_yaml_mapping
    from mathdistill.methods.registry import load_config

    exp = read_yaml_mapping(HERE / "experiments" / f"{name}.yaml")
    return load_config(HERE.parent / "recipes" / exp["recipe"], exp.get("overrides", []))


def backfill(rows: list[dict]) -> int:
    """Add the provenance fields to the rows that lack them; returns how many changed."""
    from mathdistill.methods.provenance import FIELDS, row_provenance

    made = {}
    changed = 0
    for r in rows:
        if all(k in r for k in FIELDS):
            continue
        name = r.get("experiment") or re.split(r"[:+]", r["method"])[0]
        if name not in made:
            made[name] = summaries(experiment_config(name))
        r.update({k: v for k, v in row_provenance(made[name], r).items() if k not in r})
        changed += 1
    return changed


def main() -> None:
    from mathdistill.methods.provenance import UNTRAINED

    acc = HERE / "results" / "accuracy.json"
    doc = read_json(acc)
    n = backfill(doc["rows"])
    write_json(acc, doc)
    base = HERE / "results" / "base_accuracy.json"
    bdoc = read_json(base)
    m = 0
    for run in bdoc["runs"].values():
        if "teacher" not in run:
            run.update(teacher=None, offline_stand_in=False, teacher_note=UNTRAINED)
            m += 1
    write_json(base, bdoc)
    print(f"accuracy.json: {n} of {len(doc['rows'])} rows back-filled; base_accuracy.json: {m} of {len(bdoc['runs'])}")


if __name__ == "__main__":
    main()
