"""PoT programs/s: the warm sandbox pool vs a fresh `python -c` subprocess per program.

Both sides run the same 500 programs (reference PoT programs converted from GSM8K train gold
solutions) with the same isolation: user+net+mount+PID namespaces (`unshare`), read-only
filesystem + private /tmp + dropped capabilities (`jail.lock_down`), rlimits, a scrubbed
environment, and the same answer conventions (`program.run_program`). Same parallelism
(one worker / one concurrent subprocess per CPU).

    flock /tmp/md-heavy.lock python benchmarks/sandbox_speed.py [--n 500] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mathdistill.answers import is_equivalent
from mathdistill.data import load
from mathdistill.sandbox import Limits, Pool
from mathdistill.sandbox.pool import UNSHARE, _worker_env
from mathdistill.thoughts.reference import convert

OUT = Path(__file__).parent / "results" / "sandbox_speed.json"

# what a fresh process does per program: the same lock-down, limits and conventions as a task
RUNNER = r"""
import json, os, sys
from mathdistill.sandbox import jail
env = lambda k: [p for p in os.environ.get(k, "").split(":") if p]
jail.lock_down(tmp_size_mb=256, hide_dirs=env("MATHDISTILL_SANDBOX_HIDE"), keep=env("MATHDISTILL_SANDBOX_KEEP"))
os.makedirs("/tmp/task", exist_ok=True); os.chdir("/tmp/task")
jail.set_limits(cpu_s=5, memory_mb=1024, nproc=16, fsize_mb=16)
from mathdistill.sandbox.program import run_program
out = os.dup(1)
r = run_program(sys.argv[1])
os.write(out, json.dumps(r).encode())
"""


def programs(n: int) -> tuple[list[str], list[str]]:
    codes, golds = [], []
    for p in load("gsm8k", "train"):
        code = convert(p, "pot")
        if code:
            codes.append(code)
            golds.append(p.answer)
        if len(codes) == n:
            break
    return codes, golds


def fresh_one(code: str, timeout: float) -> str | None:
    r = subprocess.run(UNSHARE + [sys.executable, "-c", RUNNER, code], capture_output=True,
                       timeout=timeout + 5, env=_worker_env(), cwd="/")
    if r.returncode != 0:
        raise RuntimeError(f"fresh subprocess failed: {r.stderr.decode()[-500:]}")
    return json.loads(r.stdout).get("value")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    codes, golds = programs(args.n)
    load_before = os.getloadavg()
    limits = Limits(timeout=5.0)

    t0 = time.monotonic()
    pool = Pool(workers=args.workers, mode="strict")
    pool.map("python", codes[: 2 * args.workers], limits)  # every worker started and warm
    startup = time.monotonic() - t0
    t0 = time.monotonic()
    ours = pool.map("python", codes, limits)
    ours_s = time.monotonic() - t0
    pool.close()

    t0 = time.monotonic()
    with ThreadPoolExecutor(args.workers) as ex:
        fresh = list(ex.map(lambda c: fresh_one(c, limits.timeout), codes))
    fresh_s = time.monotonic() - t0

    ours_vals = [r.value for r in ours]
    same = sum(a == b for a, b in zip(ours_vals, fresh))
    if same != len(codes):  # both sides must do the same work
        raise SystemExit(f"the two runners disagree on {len(codes) - same} programs")
    result = {
        "ours": {"programs": len(codes), "seconds": round(ours_s, 3),
                 "programs_per_s": round(len(codes) / ours_s, 1), "workers": args.workers,
                 "pool_startup_s": round(startup, 3), "errors": sum(r.error is not None for r in ours),
                 "correct": sum(is_equivalent(v, g) for v, g in zip(ours_vals, golds))},
        "fresh_subprocess": {"programs": len(codes), "seconds": round(fresh_s, 3),
                             "programs_per_s": round(len(codes) / fresh_s, 1), "concurrency": args.workers,
                             "correct": sum(is_equivalent(v, g) for v, g in zip(fresh, golds))},
        "ratio": round(fresh_s / ours_s, 1),
        "same_answers": same,
        "isolation": {"namespaces": "user+net+mount+pid", "readonly_fs": True, "rlimits": True,
                      "scrubbed_env": True},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
