"""Teacher engine throughput: 500 requests at concurrency 32 against a fake server with 200 ms latency.

Ideal wall time = 500 x 0.2 s / 32 = 3.125 s (the server's latency perfectly overlapped). The
engine is measured end to end: cache look-up, requests through the official openai async client,
one sqlite commit per reply, cost accounting, then verification of all 500 rationales (cot).
The fake server (tests/fake_server.py, the test suite's scripted server) runs as a script in its
own process, so it does not compete with the engine for the GIL; run this from a checkout.

    flock /tmp/md-heavy.lock python benchmarks/teacher_speed.py    # -> benchmarks/results/teacher_speed.json
    python benchmarks/teacher_speed.py --transports aiohttp httpx --out /tmp/ab.json   # paired comparison
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mathdistill.data import Problem
from mathdistill.io import write_json
from mathdistill.teacher import TeacherConfig, make_backend, teach

RESULTS = Path(__file__).parent / "results" / "teacher_speed.json"
FAKE_SERVER = Path(__file__).resolve().parents[1] / "tests" / "fake_server.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=5, help="report the median run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--transports", nargs="+", default=["auto"], choices=["auto", "aiohttp", "httpx"],
                    help="several: paired comparison, runs alternate between them in one process (drift hits all alike)")
    args = ap.parse_args()

    server = subprocess.Popen([sys.executable, str(FAKE_SERVER), "--latency", str(args.latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        problems = [Problem(f"b{i}", f"Benchmark problem {i}: how many words are in this question?", "9", "bench")
                    for i in range(args.requests)]
        cfgs = {t: TeacherConfig(url=url, model="fake-teacher", concurrency=args.concurrency, timeout=30, max_tokens=64,
                                 prices={"fake-teacher": {"prompt": 1.0, "completion": 2.0}}, transport=t)
                for t in args.transports}
        # warm-up (one request each): imports are paid once per process, not per request
        for cfg in cfgs.values():
            with tempfile.TemporaryDirectory() as tmp:
                teach(problems[:1], "cot", make_backend(cfg), config=cfg, cache=Path(tmp) / "cache.sqlite")
        load_before = os.getloadavg()
        runs = []
        for i in range(args.repeats * len(cfgs)):
            transport = args.transports[i % len(cfgs)]
            cfg = cfgs[transport]
            with tempfile.TemporaryDirectory() as tmp:  # a fresh cache: every request really goes out
                t0 = time.perf_counter()
                result = teach(problems, "cot", make_backend(cfg), config=cfg, cache=Path(tmp) / "cache.sqlite")
                wall = time.perf_counter() - t0
            s = result.summary
            assert s["requests"] == args.requests and s["failures"] == 0, s
            runs.append({"transport": transport, "wall_s": round(wall, 3), "verify_s": s["verify_s"], "requests": s["requests"]})
            print(f"{transport}: wall {wall:.3f}s (verification {s['verify_s']:.3f}s)", flush=True)
    finally:
        server.terminate()
        server.wait(10)

    ideal = args.requests * args.latency / args.concurrency
    by = {t: sorted((r for r in runs if r["transport"] == t), key=lambda r: r["wall_s"]) for t in args.transports}
    mid = args.repeats // 2
    median = by[args.transports[0]][mid]  # the headline: the first transport listed
    out = {
        "transport": args.transports[0],
        "wall_s": median["wall_s"],
        "ideal_s": round(ideal, 3),
        "fraction_of_ideal": round(ideal / median["wall_s"], 3),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "verify_s": median["verify_s"],
        "runs": runs,
        "median_by_transport": {t: {"wall_s": r[mid]["wall_s"], "fraction_of_ideal": round(ideal / r[mid]["wall_s"], 3)}
                                for t, r in by.items()},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("wall_s", "ideal_s", "fraction_of_ideal", "loadavg_before")}))


if __name__ == "__main__":
    main()
