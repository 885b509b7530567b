"""Cost of choosing the adapter per call: one base + N LoRA adapters switched per call, against merged copies.

LoRID-style inference: three adapters (here "ir", "kg", "dr", r 16 on every linear layer of the student,
random but small weights with a fixed seed) take turns, each call one batch with one adapter. Measured:
  * the switch itself: `set_adapter` (as PEFT does it by default, and with inference_mode=True),
    `disable_adapter()` (adapter "base"), and the per-call context `generate(adapter=...)` enters;
  * generated tokens/s over the same calls (N GSM8K test prompts, CoT student prompt, greedy, max new
    tokens, one batch per call) in four set-ups, interleaved round by round:
      merged    three merged copies of the base, call i on copy i % 3 (the LoRID paper's way: 3x memory)
      switch    one base + 3 adapters, call i with adapter i % 3 (`generate(..., adapter=name)`)
      one       one base + 3 adapters, always the first, no switch (`adapter=None`)
      alone     one base + that first adapter only (is an inactive adapter free?)
    plus whether each call's text equals the merged copy's (switch, one) and `alone`'s (one).

    flock /tmp/md-heavy.lock python benchmarks/adapter_switch.py        # 16 prompts, 64 tokens, 3 calls x 2 rounds
    python benchmarks/adapter_switch.py --n 4 --max-new-tokens 8 --rounds 1    # smoke run

Writes benchmarks/results/adapter_switch.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("ir", "kg", "dr")


def make_adapters(base_dir: str, out: Path, r: int, std: float, seed: int) -> dict[str, Path]:
    """Three LoRA adapters on every linear layer of `base_dir`: PEFT's init (B = 0) with B then drawn from
    N(0, std) (seeded), so each one changes the text a little, as a trained adapter does."""
    import torch
    from peft import LoraConfig, get_peft_model

    from mathdistill.models import load_model

    base, _ = load_model(base_dir, dtype="float32", device="cpu")
    torch.manual_seed(seed)
    folders = {}
    peft_model = None
    for name in NAMES:
        cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
        if peft_model is None:
            peft_model = get_peft_model(base, cfg, adapter_name=name)
        else:
            peft_model.add_adapter(name, cfg)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if f"lora_B.{name}." in n:
                    p.normal_(0, std)
        peft_model.save_pretrained(out, selected_adapters=[name])  # -> out/<name>/ (a non-default name)
        folders[name] = out / name
    return folders


def time_switches(model, repeats: int) -> dict:
    """Median (and mean) milliseconds of one switch, alternating over the adapters."""
    from mathdistill.student.generation import BASE, adapter_context

    def median_ms(step) -> dict:
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            step(NAMES[i % len(NAMES)])
            times.append((time.perf_counter() - t0) * 1e3)
        return {"median_ms": round(statistics.median(times), 3), "mean_ms": round(statistics.fmean(times), 3)}

    def disable(_):
        with model.disable_adapter():
            pass

    def context(name):
        with adapter_context(model, name):
            pass

    def context_base(_):
        with adapter_context(model, BASE):
            pass

    out = {
        "set_adapter": median_ms(lambda name: model.set_adapter(name)),
        "set_adapter_inference_mode": median_ms(lambda name: model.set_adapter(name, inference_mode=True)),
        "disable_adapter_enter_exit": median_ms(disable),
        "generate_adapter_context_enter_exit": median_ms(context),
        "generate_base_context_enter_exit": median_ms(context_base),
    }
    model.set_adapter(NAMES[0], inference_mode=True)
    for p in model.parameters():  # PEFT's default set_adapter made the active adapter trainable
        p.requires_grad_(False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=16, help="GSM8K test prompts per call (one batch)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--calls", type=int, default=3, help="generate calls per set-up per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--std", type=float, default=0.01, help="std of the adapters' lora_B weights")
    ap.add_argument("--switch-repeats", type=int, default=100)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adapter_switch.json"))
    args = ap.parse_args()

    import peft
    import torch
    import transformers

    from mathdistill import data
    from mathdistill.eval import build_prompts
    from mathdistill.io import write_json
    from mathdistill.paths import data_dir
    from mathdistill.student.adapters import load_merged, load_with_adapters
    from mathdistill.student.generate import generate
    from mathdistill.models import resolve_model

    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load = {"start": os.getloadavg()}
    base_dir = resolve_model(args.model)
    problems = data.load("gsm8k", "test", data_dir=data_dir(args.data_dir), limit=args.n)

    with tempfile.TemporaryDirectory(prefix="adapter-switch-") as tmp:
        folders = make_adapters(base_dir, Path(tmp), args.r, args.std, seed=0)
        t0 = time.perf_counter()
        multi, tok = load_with_adapters(base_dir, folders)
        load_seconds = time.perf_counter() - t0
        alone, _ = load_with_adapters(base_dir, {NAMES[0]: folders[NAMES[0]]})
        merged = {name: load_merged(base_dir, folder)[0] for name, folder in folders.items()}
    prompts = build_prompts(tok, "cot", [p.question for p in problems])

    switches = time_switches(multi, args.switch_repeats)
    print("switch:", {k: v["median_ms"] for k, v in switches.items()}, file=sys.stderr)

    def call(model, adapter):
        t0 = time.perf_counter()
        gens = generate(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.n, adapter=adapter,
                        progress=False)
        return time.perf_counter() - t0, [g.text for g in gens], sum(g.num_tokens[0] for g in gens)

    setups = {  # name -> call i -> (model, adapter, which adapter's text it gives)
        "merged": lambda i: (merged[NAMES[i % 3]], None, NAMES[i % 3]),
        "switch": lambda i: (multi, NAMES[i % 3], NAMES[i % 3]),
        "one": lambda i: (multi, None, NAMES[0]),
        "alone": lambda i: (alone, None, NAMES[0]),
    }
    for setup in setups.values():  # warm-up: first-call costs (attention registration, allocator)
        model, adapter, _ = setup(0)
        generate(model, tok, prompts[:2], max_new_tokens=4, adapter=adapter, progress=False)

    figures = {name: {"seconds": 0.0, "tokens": 0, "calls": 0, "rounds": []} for name in setups}
    texts: dict[tuple[str, str], list[str]] = {}  # (setup, adapter) -> texts of its first call
    for rnd in range(args.rounds):
        for name, setup in setups.items():
            seconds = tokens = 0
            for i in range(args.calls):
                model, adapter, which = setup(i)
                s, t, n = call(model, adapter)
                seconds, tokens = seconds + s, tokens + n
                texts.setdefault((name, which), t)
            f = figures[name]
            f["seconds"], f["tokens"], f["calls"] = f["seconds"] + seconds, f["tokens"] + tokens, f["calls"] + args.calls
            f["rounds"].append(round(tokens / seconds, 2))
            print(f"round {rnd + 1} {name}: {tokens / seconds:.1f} tok/s", file=sys.stderr)
    for f in figures.values():
        f["tokens_per_second"] = round(f["tokens"] / f["seconds"], 2)
        f["seconds"] = round(f["seconds"], 2)
    load["end"] = os.getloadavg()

    def same(a, b) -> float:
        return sum(x == y for x, y in zip(texts[a], texts[b])) / len(texts[a])

    lora_params = {name: sum(p.numel() for n, p in multi.named_parameters() if f".{name}." in n and "lora_" in n)
                   for name in NAMES}
    base_params = sum(p.numel() for n, p in multi.named_parameters() if "lora_" not in n)
    merged_tps = figures["merged"]["tokens_per_second"]
    result = {
        "date": started,
        "load_average": {k: [round(x, 2) for x in v] for k, v in load.items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "settings": {"model": args.model, "n": args.n, "max_new_tokens": args.max_new_tokens, "calls": args.calls,
                     "rounds": args.rounds, "r": args.r, "lora_alpha": 2 * args.r, "target_modules": "all-linear",
                     "lora_B_std": args.std, "adapters": list(NAMES), "batch_size": args.n, "dataset": "gsm8k test",
                     "thought": "cot", "greedy": True},
        "switch": switches,
        "generation": figures,
        "ratio_to_merged": {name: round(f["tokens_per_second"] / merged_tps, 3) for name, f in figures.items()},
        "identical_texts": {
            "switch_vs_merged": {a: same(("switch", a), ("merged", a)) for a in NAMES},
            "one_vs_alone": same(("one", NAMES[0]), ("alone", NAMES[0])),
            "one_vs_merged": same(("one", NAMES[0]), ("merged", NAMES[0])),
            "adapters_differ": len({tuple(texts[("switch", a)]) for a in NAMES}) == len(NAMES),
        },
        "memory": {"base_params": base_params, "lora_params_per_adapter": lora_params,
                   "lora_mb_per_adapter_fp32": round(4 * lora_params[NAMES[0]] / 2**20, 1),
                   "base_mb_fp32": round(4 * base_params / 2**20, 1)},
        "load_with_adapters_seconds": round(load_seconds, 2),
    }
    write_json(args.out, result)
    print(json.dumps({"tokens_per_second": {k: v["tokens_per_second"] for k, v in figures.items()},
                      "ratio_to_merged": result["ratio_to_merged"], "set_adapter_ms": switches["set_adapter"]["median_ms"]}))


if __name__ == "__main__":
    main()
