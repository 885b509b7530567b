"""Sampling throughput: `student.sample` against transformers' batched `generate(do_sample=True,
num_return_sequences=4)` on identical work.

Same loaded model object (smollm2-135m), the same N GSM8K test problems and prompt text (chat
template, CoT instruction: `eval.build_prompts`), k=4 samples per problem at temperature 0.7 and
top-p 0.95 (no top-k on either side), the same max new tokens, the same stop strings (HF:
`stop_strings` + tokenizer), the same batch size in rows decoded together (HF: batch_size / k
prompts x k return sequences; prompts sorted by length, left padded). Our side is the whole
`sample` call (generation + scoring); HF's is generation only.

    flock /tmp/md-heavy.lock python benchmarks/sample_speed.py              # N=64, 192 tokens, ~16 min on 2 cores
    flock /tmp/md-heavy.lock python benchmarks/sample_speed.py --rounds 2   # ours, HF, HF, ours (~32 min)
    python benchmarks/sample_speed.py --k 8 --out benchmarks/results/sample_agreement.json  # 64 x 8: CIs
    python benchmarks/sample_speed.py --n 8 --max-new-tokens 32             # smoke run
    python benchmarks/sample_speed.py --n 32 --dtype bfloat16 --hf-dtypes bfloat16,float32  # bf16 weights (AMX)

`--dtype` sets our side's weights, `--hf-dtypes` one HF side per dtype (the first is `ratio`'s; the others
get `ratio_hf_<dtype>`); MATHDISTILL_COMPILE=1 compiles our decode step (recorded).
Writes benchmarks/results/sample_speed.json: {"ours": {...}, "hf": {...}, "ratio": x, ...}: wall-clock
samples/s (the target), and samples per CPU second of the process (less sensitive to other load on
a shared machine). Both sides' sample accuracy and mean length are recorded too, with 95 % CIs (Wilson;
normal for the mean) and whether they overlap: the two samplers draw from the same distribution.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP = ["<|im_start|>", "\nQuestion:", "\n\n\n"]
DTYPES = ("float32", "bfloat16", "float16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=16, help="rows decoded together (HF: batch_size/k prompts)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--rounds", type=int, default=1, help="repeat both sides, alternating which goes first")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dtype", default="float32", choices=DTYPES, help="weights of our side's model")
    ap.add_argument("--hf-dtypes", default=None,
                    help="comma-separated weights of one HF side each (default: --dtype; the first is `ratio`'s, each "
                         "other is reported as hf_<dtype> with its own ratio)")
    ap.add_argument("--skip-hf", action="store_true", help="time our side only (profiling; writes nothing)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sample_speed.json"))
    args = ap.parse_args()
    bad = [d for d in (args.hf_dtypes or args.dtype).split(",") if d not in DTYPES]
    if bad:
        ap.error(f"--hf-dtypes: {', '.join(map(repr, bad))} not one of {', '.join(DTYPES)}")

    import torch
    import transformers

    from mathdistill import data, thoughts
    from mathdistill.eval import build_prompts, wilson_ci
    from mathdistill.io import write_json
    from mathdistill.paths import data_dir
    from mathdistill.student.chat import prompt_token_ids
    from mathdistill.models import load_model
    from mathdistill.student.engine_run import COMPILE_ENV
    from mathdistill.student.sample import sample

    load = {"start": os.getloadavg()}
    model, tok = load_model(args.model, dtype=args.dtype)
    hf_dtypes = (args.hf_dtypes or args.dtype).split(",")
    hf_models = {d: model if d == args.dtype else load_model(args.model, dtype=d)[0] for d in hf_dtypes}
    problems = data.load("gsm8k", "test", data_dir=data_dir(args.data_dir), limit=args.n)
    prompts = build_prompts(tok, "cot", [p.question for p in problems])
    k, rows = args.k, args.batch_size
    common = dict(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    cot = thoughts.get("cot")

    def ours(round_: int) -> dict:
        res = sample(model, tok, problems, "cot", k=k, seed=round_, batch_size=rows, stop=STOP, engine="hf",
                     progress=True, **common)
        return {"tokens": sum(sum(r["num_tokens"]) for r in res.rows), "samples": len(problems) * k,
                "correct": sum(sum(r["corrects"]) for r in res.rows),
                "lengths": [n for r in res.rows for n in r["num_tokens"]]}

    def hf(round_: int, model=model) -> dict:
        """transformers: batched generate, k return sequences per prompt (prompts longest first)."""
        torch.manual_seed(round_)
        tok.padding_side = "left"
        order = sorted(range(len(prompts)), key=lambda i: -len(prompt_token_ids(tok, prompts[i])))
        per_batch, eos = max(1, rows // k), model.generation_config.eos_token_id
        texts, tokens, lengths = [], 0, []
        with torch.inference_mode():
            for start in range(0, len(order), per_batch):
                idx = order[start : start + per_batch]
                enc = tok.pad({"input_ids": [prompt_token_ids(tok, prompts[i]) for i in idx]}, return_tensors="pt")
                out = model.generate(**enc, do_sample=True, top_k=0, num_return_sequences=k, stop_strings=STOP,
                                     tokenizer=tok, pad_token_id=tok.pad_token_id, **common)
                for r, row in enumerate(out[:, enc["input_ids"].shape[1]:].tolist()):
                    n = next((p + 1 for p, t in enumerate(row) if t == eos), len(row))  # through EOS
                    tokens += n
                    lengths.append(n)
                    text = tok.decode(row[:n], skip_special_tokens=True)
                    cuts = [c for c in (text.find(s) for s in STOP) if c >= 0]
                    texts.append((problems[idx[r // k]], text[: min(cuts)] if cuts else text))
        scored = cot.score_batch([t for _, t in texts], [p.answer for p, _ in texts])
        return {"tokens": tokens, "samples": len(texts), "correct": sum(s.correct for s in scored), "lengths": lengths}

    sides = {"ours": ours}
    if not args.skip_hf:
        for i, d in enumerate(hf_dtypes):
            sides["hf" if i == 0 else f"hf_{d}"] = functools.partial(hf, model=hf_models[d])
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    lengths: dict[str, list[int]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name in (list(sides) if round_ % 2 == 0 else list(sides)[::-1]):
            load[f"{name}-{round_}"] = os.getloadavg()
            t0, c0 = time.perf_counter(), time.process_time()
            got = sides[name](round_)
            lengths[name] += got.pop("lengths")
            got.update(seconds=round(time.perf_counter() - t0, 2), cpu_seconds=round(time.process_time() - c0, 2))
            runs[name].append(got)
            print(name, round_, json.dumps(got), flush=True)
    load["end"] = os.getloadavg()

    def summary(name: str, rs: list[dict]) -> dict:
        seconds, cpu = sum(r["seconds"] for r in rs), sum(r["cpu_seconds"] for r in rs)
        samples, tokens = sum(r["samples"] for r in rs), sum(r["tokens"] for r in rs)
        n, mean = len(lengths[name]), tokens / samples
        half = 1.96 * (sum((x - mean) ** 2 for x in lengths[name]) / max(1, n - 1)) ** 0.5 / n ** 0.5
        return {"mean_tokens_ci95": [round(mean - half, 1), round(mean + half, 1)],
                "sample_accuracy_ci95": [round(x, 4) for x in wilson_ci(sum(r["correct"] for r in rs), samples)],
                "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "samples": samples,
                "samples_per_second": round(samples / seconds, 4), "samples_per_cpu_second": round(samples / cpu, 4),
                "generated_tokens": tokens, "tokens_per_second": round(tokens / seconds, 2),
                "mean_tokens_per_sample": round(tokens / samples, 1),
                "sample_accuracy": round(sum(r["correct"] for r in rs) / samples, 4), "rounds": rs}

    result = {"date": datetime.now().isoformat(timespec="seconds"), "model": args.model, "n": len(problems), "k": k,
              "batch_rows": rows, "stop": STOP, "thought": "cot",
              "prompts": "eval.build_prompts (chat template, CoT instruction, 0-shot)",
              "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
              "dtype": {"ours": args.dtype, **dict(zip([n for n in runs if n != "ours"], hf_dtypes))},
              "ours_decode_step_compiled": os.environ.get(COMPILE_ENV) == "1",
              **{name: summary(name, rs) for name, rs in runs.items()}}
    if "hf" in runs:
        result["ratio"] = round(result["ours"]["samples_per_second"] / result["hf"]["samples_per_second"], 3)
        result["ratio_cpu_time"] = round(result["ours"]["samples_per_cpu_second"] / result["hf"]["samples_per_cpu_second"], 3)
        result["ratio_per_round"] = [round(h["seconds"] / o["seconds"], 3) for o, h in zip(runs["ours"], runs["hf"])]
        for name in runs:
            if name.startswith("hf_"):
                ours_rate, their_rate = result["ours"]["samples_per_second"], result[name]["samples_per_second"]
                result[f"ratio_{name}"] = round(ours_rate / their_rate, 3)
        result["cis_overlap"] = {what: _overlap(result["ours"][what], result["hf"][what])
                                 for what in ("mean_tokens_ci95", "sample_accuracy_ci95")}
    result["load_average"] = {key: [round(x, 2) for x in v] for key, v in load.items()}
    result["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                         "torch": torch.__version__, "transformers": transformers.__version__}
    print(json.dumps({key: v for key, v in result.items() if key.startswith("ratio") or key == "cis_overlap"}))
    if "hf" in runs:
        write_json(args.out, result)


def _overlap(a: list[float], b: list[float]) -> bool:
    """Whether two intervals share a point (the two samplers agree within their 95 % CIs)."""
    return a[0] <= b[1] and b[0] <= a[1]


if __name__ == "__main__":
    main()
