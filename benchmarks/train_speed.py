"""Training throughput: `mathdistill.student.train` vs TRL `SFTTrainer` with its defaults (no packing).

Same model, same data (GSM8K train reference CoT rationales), same LoRA adapter (r 16, all linear
layers), same batch size (TRL's default 8) and the same number of optimizer steps (one epoch).
Each side runs in a fresh process; the time is `trainer.train()` alone (no model load, no data prep).

    flock /tmp/md-heavy.lock python benchmarks/train_speed.py [--examples 64] [--model smollm2-135m]

Writes benchmarks/results/train_speed.json: {"ours": {...}, "trl_defaults": {...}, "ratio": x, ...}.
"ratio" is supervised (completion) tokens/s, ours over TRL's. Model FLOP/s is 6 x parameters x
tokens/s (every token processed, prompt included), compared with the best fp32 matmul FLOP/s
measured on this machine just before.
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

from mathdistill.thoughts.reference import training_rows

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"
BATCH = 8  # TRL's default per-device batch size; ours uses the same
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")


def matmul_flops(n: int = 2048, reps: int = 5) -> float:
    """Best fp32 matmul FLOP/s of torch on this machine (all its threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def run_ours(model: str, data: list[dict], steps: int) -> dict:
    from mathdistill.models import load_tokenizer
    from mathdistill.student.train import TrainConfig, tokenize_rows, train

    cfg = TrainConfig(model=model, max_steps=steps, batch_size=BATCH, lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                      lora_dropout=LORA["lora_dropout"], save_steps=10**6, resume=False)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, data, Path(tmp) / "out")
    examples, _ = tokenize_rows(load_tokenizer(model), data, cfg.max_seq_len)
    return {"seconds": result.seconds, "steps": result.global_step, "examples": result.examples,
            "completion_tokens": result.completion_tokens, "tokens": sum(len(e["input_ids"]) for e in examples),
            "config": {"batch_size": cfg.batch_size, "packing": cfg.packing, "precision": "fp32",
                       "gradient_checkpointing": cfg.gradient_checkpointing,
                       "lm_head": "completion positions only (sft.completion_scores)"}}


def run_trl(model: str, data: list[dict], steps: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from mathdistill.student.chat import render_completion, render_prompt
    from mathdistill.models import load_model

    base, tok = load_model(model, dtype="float32", device="cpu")
    ds = Dataset.from_list([{"prompt": render_prompt(tok, r["prompt"]), "completion": render_completion(tok, r["completion"])}
                            for r in data])
    with tempfile.TemporaryDirectory() as tmp:
        # defaults, except what a CPU-only run needs (use_cpu: TRL's default bf16 refuses to start without it)
        # and what a benchmark must not do (save checkpoints, report to trackers)
        args = SFTConfig(output_dir=tmp, max_steps=steps, use_cpu=True, save_strategy="no", report_to="none")
        trainer = SFTTrainer(model=base, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))
        t = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t
    labels = trainer.train_dataset["labels"]
    return {"seconds": round(seconds, 2), "steps": trainer.state.global_step, "examples": len(ds),
            "completion_tokens": sum(sum(1 for x in row[1:] if x != -100) for row in labels),
            "tokens": sum(len(row) for row in labels),
            "config": {"batch_size": args.per_device_train_batch_size, "packing": args.packing, "bf16": args.bf16,
                       "gradient_checkpointing": args.gradient_checkpointing, "padding_free": args.padding_free}}


def side(name: str, model: str, examples: int) -> dict:
    """Run one side in a fresh process; return its measurements."""
    proc = subprocess.run([sys.executable, __file__, "--side", name, "--model", model, "--examples", str(examples)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--examples", type=int, default=64, help="rows; one epoch of examples/8 steps on each side")
    ap.add_argument("--side", choices=["ours", "trl_defaults"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.examples % BATCH:
        raise SystemExit(f"--examples must be a multiple of {BATCH} (whole steps, one epoch)")
    steps = args.examples // BATCH
    if args.side:
        import logging

        logging.disable(logging.WARNING)
        data = training_rows(args.examples)
        run = run_ours if args.side == "ours" else run_trl
        print(json.dumps(run(args.model, data, steps)))
        return

    import torch
    from transformers import AutoConfig

    from mathdistill.models import resolve_model

    load_before = os.getloadavg()
    peak = matmul_flops()
    cfg = AutoConfig.from_pretrained(resolve_model(args.model))
    from transformers import AutoModelForCausalLM

    params = AutoModelForCausalLM.from_config(cfg).num_parameters()
    out = {}
    for name in ("ours", "trl_defaults"):
        r = side(name, args.model, args.examples)
        r["completion_tokens_per_s"] = round(r["completion_tokens"] / r["seconds"], 2)
        r["tokens_per_s"] = round(r["tokens"] / r["seconds"], 2)
        r["model_flops_per_s"] = 6 * params * r["tokens"] / r["seconds"]
        r["fraction_of_matmul_flops"] = round(r["model_flops_per_s"] / peak, 4)
        out[name] = r
        print(name, json.dumps(r), flush=True)
    result = {
        **out,
        "ratio": round(out["ours"]["completion_tokens_per_s"] / out["trl_defaults"]["completion_tokens_per_s"], 2),
        "model": args.model, "parameters": params, "examples": args.examples, "steps": steps,
        "data": "GSM8K train reference CoT rationales (mathdistill.thoughts.reference)",
        "lora": LORA, "matmul_fp32_flops_per_s": peak,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio", "loadavg_before", "loadavg_after")}))


if __name__ == "__main__":
    main()
