"""Mean token counts of each format's training example and target with the default student's tokenizer, on the
first N GSM8K train problems: the figures `mathdistill.workload.TOKENS` plans with.

    python benchmarks/token_lengths.py [--n 500]

prompt: the student prompt as evaluation renders it (chat template, trigger, instruction); target: the training
completion (cot: the recorded Llama-3-70B rationale; pot/eot: the gold-derived reference; keypoints/knowledge:
the recorded Gemini-1.5-Flash plan, the stand-in LoRID and KPDD use). Nothing here is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mathdistill import thoughts
from mathdistill.data import load
from mathdistill.student.chat import render_completion, render_prompt
from mathdistill.models import DEFAULT_STUDENT, load_tokenizer
from mathdistill.thoughts.reference import convert

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def recorded(name: str) -> dict[str, str]:
    return {r["instruction"].strip(): r["output"] for r in json.loads((DATA / "teacher" / name).read_text())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    tok = load_tokenizer(DEFAULT_STUDENT)
    problems = load("gsm8k", "train", data_dir=DATA)[: args.n]
    cot, plan = recorded("gsm8k_train_llama3-70b_cot.json"), recorded("gsm8k_train_gemini-1.5-flash_plan.json")
    targets = {"cot": lambda p: cot.get(p.question.strip()), "pot": lambda p: convert(p, "pot"),
               "eot": lambda p: convert(p, "eot"), "keypoints": lambda p: plan.get(p.question.strip()),
               "knowledge": lambda p: plan.get(p.question.strip())}

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    out = {}
    for name, target in targets.items():
        fmt = thoughts.get(name)
        pairs = [(p, target(p)) for p in problems]
        pairs = [(p, t) for p, t in pairs if t]
        prompt = statistics.mean(n_tokens(render_prompt(tok, fmt.student_prompt(p.question))) for p, _ in pairs)
        completion = statistics.mean(n_tokens(render_completion(tok, fmt.student_target(t))) for _, t in pairs)
        out[name] = {"problems": len(pairs), "prompt": round(prompt), "target": round(completion)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
