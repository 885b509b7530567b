"""Generation engines on the same work: transformers' own continuous batching (`generate_batch`, paged
attention), `student.generate`'s batches and its slot engine (`student.engine`), greedy.

    python benchmarks/engine_speed.py                            # 64 GSM8K CoT prompts, 128 tokens, 16 rows
    python benchmarks/engine_speed.py --batch-sizes 16,64 --sides slots,batches

The same loaded model object (fp32 on a CPU), the same prompts (0-shot CoT chat prompts of the first N GSM8K
test problems), greedy, the same token limit and the same rows decoded together; `generate_batch` gets its
`max_requests_per_batch` (no CUDA graphs off CUDA) and is run twice (the first run warms it up; the second is
timed). Sides run one after the other in one process, in the order given, so run it on an idle machine and read
the ratios. Writes benchmarks/results/engine_speed.json: tokens/s per side and batch size, and how many outputs
equal the slot engine's. The student is smollm2-135m (SmolLM2-135M-Instruct, a dequantised Q4_1 GGUF).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_side(side: str, model, tok, prompts, ids, max_new: int, rows: int) -> tuple[float, list[str]]:
    """(seconds, texts) of one side."""
    from mathdistill.student.generate import generate

    if side in ("slots", "batches"):
        t0 = time.perf_counter()
        gens = generate(model, tok, prompts, max_new_tokens=max_new, batch_size=rows, progress=False,
                        slots=side == "slots")
        return time.perf_counter() - t0, [g.text for g in gens]
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    config = GenerationConfig(max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id,
                              eos_token_id=model.generation_config.eos_token_id)
    cb = ContinuousBatchingConfig(max_requests_per_batch=rows, use_cuda_graph=False)
    for _ in range(2):  # the first call warms up; the second is timed
        t0 = time.perf_counter()
        out = model.generate_batch(ids, generation_config=config, continuous_batching_config=cb, warmup=False)
        seconds = time.perf_counter() - t0
    seqs = [out[k].generated_tokens for k in sorted(out, key=lambda k: int(k.split("_")[-1]))]
    return seconds, [tok.decode(s, skip_special_tokens=True) for s in seqs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-sizes", default="16")
    ap.add_argument("--sides", default="slots,batches,hf_generate_batch")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine_speed.json"))
    args = ap.parse_args()

    import torch
    import transformers

    from mathdistill import data
    from mathdistill.eval import build_prompts
    from mathdistill.io import write_json
    from mathdistill.paths import data_dir
    from mathdistill.student.chat import prompt_token_ids
    from mathdistill.models import load_model

    model, tok = load_model(args.model)
    problems = data.load("gsm8k", "test", data_dir=data_dir(args.data_dir), limit=args.n)
    prompts = build_prompts(tok, "cot", [p.question for p in problems])
    ids = [prompt_token_ids(tok, p) for p in prompts]
    result = {"model": args.model, "n": len(prompts), "max_new_tokens": args.max_new_tokens, "greedy": True,
              "dtype": str(next(model.parameters()).dtype), "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "transformers": transformers.__version__,
              "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": []}
    for rows in map(int, args.batch_sizes.split(",")):
        texts = {}
        for side in args.sides.split(","):
            load = os.getloadavg()
            seconds, texts[side] = run_side(side, model, tok, prompts, ids, args.max_new_tokens, rows)
            tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts[side])
            run = {"side": side, "rows": rows, "seconds": round(seconds, 2), "text_tokens": tokens,
                   "tokens_per_s": round(tokens / seconds, 1), "loadavg": [round(x, 2) for x in load]}
            if "slots" in texts:
                run["same_text_as_slots"] = sum(a == b for a, b in zip(texts[side], texts["slots"]))
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
