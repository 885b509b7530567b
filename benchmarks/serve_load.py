"""Load test of `mathdistill serve` on the loopback: N requests at once against the same N one by one.

    flock /tmp/md-heavy.lock python benchmarks/serve_load.py                 # 200 requests, 32 tokens each
    python benchmarks/serve_load.py --requests 8 --max-tokens 8              # smoke run
    python benchmarks/serve_load.py --run runs/etd --model-name etd:cot      # a run's student

The server is the `serve` command in a subprocess (default: the default student, `--model
smollm2-135m --thought cot`, greedy) with its default limits (64 requests answered at once, the
rest queued). The requests are the first N GSM8K test questions through the official `openai`
async client:
  concurrent   all N sent at once (one connection each)
  sequential   the same N, each sent when the previous one is answered
Each phase is bounded (`--deadline` seconds; past it the run fails). Recorded per phase: errors,
wall seconds, requests/s, generated (completion) tokens/s, latency p50/p95; the server's batching
counters (generate calls, largest call); and how many replies have the same text in both phases
(greedy: batched and one-by-one decoding differ only by floating-point order).

Writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_server(args) -> tuple[subprocess.Popen, dict]:
    target = [str(args.run)] if args.run else ["--model", args.model, "--thought", "cot"]
    cmd = [sys.executable, "-m", "mathdistill.cli", "serve", *target, "--port", "0", "--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the server did not start: {' '.join(cmd)}")
    return proc, json.loads(line)


async def phase(url: str, model: str, questions: list[str], max_tokens: int, concurrent: bool, deadline: float) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=deadline)
    out: list[dict] = [{} for _ in questions]

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            r = await client.chat.completions.create(model=model, max_tokens=max_tokens,
                                                     messages=[{"role": "user", "content": questions[i]}])
            out[i] = {"text": r.choices[0].message.content, "tokens": r.usage.completion_tokens,
                      "answer": r.choices[0].model_extra["mathdistill"]["answer"]}
        except Exception as e:  # noqa: BLE001 - counted, reported
            out[i] = {"error": f"{type(e).__name__}: {e}"}
        out[i]["seconds"] = time.perf_counter() - t0

    async def run_all() -> None:
        if concurrent:
            await asyncio.gather(*(one(i) for i in range(len(questions))))
        else:
            for i in range(len(questions)):
                await one(i)

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(run_all(), deadline)
    except asyncio.TimeoutError:
        raise SystemExit(f"{'concurrent' if concurrent else 'sequential'} phase passed its {deadline:.0f} s bound")
    finally:
        await client.close()
    wall = time.perf_counter() - t0
    tokens = sum(r.get("tokens", 0) for r in out)
    lat = sorted(r["seconds"] for r in out)
    return {"requests": len(out), "errors": sum("error" in r for r in out),
            "error_examples": [r["error"] for r in out if "error" in r][:3], "wall_seconds": round(wall, 2),
            "requests_per_s": round(len(out) / wall, 3), "generated_tokens": tokens,
            "generated_tokens_per_s": round(tokens / wall, 1), "latency_p50_s": round(statistics.median(lat), 2),
            "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 2), "replies": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--model", default="smollm2-135m", help="served with --model (ignored with --run)")
    ap.add_argument("--run", type=Path, help="serve this run folder instead")
    ap.add_argument("--model-name", default=None, help="the served name to ask (default: the first one)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--deadline", type=float, default=900.0, help="seconds each phase may take")
    ap.add_argument("--data-dir", default=os.environ.get("MATHDISTILL_DATA"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load.json")
    args = ap.parse_args()

    from mathdistill.data import load

    questions = [p.question for p in load("gsm8k", "test", data_dir=args.data_dir)[: args.requests]]
    load_start = os.getloadavg()
    proc, ready = start_server(args)
    model = args.model_name or ready["models"][0]
    try:
        import httpx

        health = ready["url"].removesuffix("/v1") + "/health"
        concurrent = asyncio.run(phase(ready["url"], model, questions, args.max_tokens, True, args.deadline))
        batching = httpx.get(health).json()["batching"]
        sequential = asyncio.run(phase(ready["url"], model, questions, args.max_tokens, False, args.deadline))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    same = sum(a.get("text") is not None and a.get("text") == b.get("text")
               for a, b in zip(concurrent["replies"], sequential["replies"]))
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "load_average": {"start": load_start, "end": os.getloadavg()},
        "served": str(args.run) if args.run else args.model, "model_name": model, "requests": args.requests,
        "max_tokens": args.max_tokens, "server_threads": args.threads,
        "concurrent": {k: v for k, v in concurrent.items() if k != "replies"},
        "sequential": {k: v for k, v in sequential.items() if k != "replies"},
        "batching_during_concurrent": batching,
        "speedup_requests_per_s": round(concurrent["requests_per_s"] / sequential["requests_per_s"], 2),
        "same_text": same,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("concurrent", "sequential", "speedup_requests_per_s", "same_text")}))
    if concurrent["errors"] or sequential["errors"]:
        raise SystemExit(f"errors: {concurrent['errors']} concurrent, {sequential['errors']} sequential")


if __name__ == "__main__":
    main()
