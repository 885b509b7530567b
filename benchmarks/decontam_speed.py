"""What the shared decontamination step costs and drops at full size: every GSM8K train problem (recipes/
siked.yaml's slice, all 7,473) checked against its evaluation slices (all of GSM8K test and SVAMP) and every
test set of the data root, 13-gram and TF-IDF cosine (`methods.leakage`), then the same stage resumed.

    python benchmarks/decontam_speed.py          # writes benchmarks/results/decontam_speed.json

Also: what the CPU profile's first 100 training problems meet against their own evaluation slices alone
(the rows of accuracy.json measured before decontamination trained on them).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

from mathdistill.io import write_json

HERE = Path(__file__).resolve().parent


def main() -> None:
    from mathdistill.data.decontam import Decontaminator
    from mathdistill.methods import steps
    from mathdistill.methods.config import dump_config
    from mathdistill.methods.leakage import checked
    from mathdistill.methods.registry import load_config
    from mathdistill.methods.run import Run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(HERE.parent / "recipes" / "siked.yaml", [f"runs_dir={tmp}"])
        t0 = time.perf_counter()
        steps.train_problems(Run.open(cfg.run_dir, dump_config(cfg), ["bench"]), cfg)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = Run.open(cfg.run_dir, dump_config(cfg), ["bench"])
        steps.train_problems(again, cfg)
        resumed = time.perf_counter() - t0
        value = checked(again)
    profile = {}
    for evals in (["{dataset: gsm8k, split: test, limit: 100}"],
                  ["{dataset: gsm8k, split: test, limit: 300}", "{dataset: svamp, split: test, limit: 300}"]):
        c = load_config(HERE.parent / "recipes" / "cot.yaml",
                        [f"data.eval=[{', '.join(evals)}]", "data.train.limit=100"])
        rows = Decontaminator([p for s in c.data.eval for p in steps.problems(s, None)]).check(
            [p.question for p in steps.problems(c.data.train, None)])
        profile[" + ".join(evals)] = {"flagged": [i for i, r in enumerate(rows) if r["contaminated"]],
                                      "largest_cosine": max(r["cosine"] for r in rows)}
    out = {"checked": value["checked"], "test_questions": value["tests"], "dropped": value["dropped"],
           "first_3000_dropped": [x for x in value["dropped"] if int(x.rsplit("-", 1)[1]) < 3000],
           "seconds": round(first, 2), "seconds_resumed": round(resumed, 2),
           "cpu_profile_first_100_vs_its_eval_slices": profile,
           "threads": os.environ.get("OMP_NUM_THREADS"), "machine": platform.platform(),
           "measured": dt.datetime.now().astimezone().isoformat(timespec="minutes")}
    write_json(HERE / "results" / "decontam_speed.json", out)
    print(f"{value['checked']} checked against {sum(value['tests'].values())} test questions in {first:.1f} s "
          f"(resumed {resumed:.2f} s): {len(value['dropped'])} dropped, {len(out['first_3000_dropped'])} of the first "
          f"3,000; CPU profile vs its own eval slices: {profile}")


if __name__ == "__main__":
    main()
