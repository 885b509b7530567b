"""Eval throughput: mathdistill's evaluator against lm-evaluation-harness (HF backend) on identical work.

Same loaded model object, the same N GSM8K test problems, the same k-shot chat prompt text
(lm-eval's gsm8k task format — "Question: ...\\nAnswer:" with the gold solutions of the first k
GSM8K train problems as earlier turns — read from local files; the script checks that both
sides' prompt strings are identical), greedy, the same max new tokens and stop strings, the
same batch size. Both run in this one process, one after the other.

    flock /tmp/md-heavy.lock python benchmarks/eval_speed.py            # N=100, 4-shot, 256 tokens
    python benchmarks/eval_speed.py --n 8 --max-new-tokens 32           # quick smoke run

Writes benchmarks/results/eval_speed.json: {"ours": {...}, "lm_eval": {...}, "ratio": x, ...}.
FLOP figures count 2 x parameters FLOP per token the system actually ran through the model
(prompt tokens + generated tokens; our shared k-shot prefix counts once) and compare them with
this machine's measured float32 matmul FLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STOP = ["Question:", "</s>", "<|im_end|>"]  # lm-eval's gsm8k `until`

TASK_YAML = """task: gsm8k_local
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
output_type: generate_until
training_split: train
fewshot_split: train
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
fewshot_config:
  sampler: first_n
generation_kwargs:
  until: {until}
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_new_tokens}
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: "take_first"
"""


def matmul_flops(n: int = 1536, seconds: float = 3.0) -> float:
    """Best float32 matmul FLOP/s of this machine (n x n x n, all torch threads)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best, end = 0.0, time.perf_counter() + seconds
    a @ b
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def flops_summary(seconds, processed, logical, params, peak, n, generated):
    return {
        "seconds": round(seconds, 2),
        "problems_per_second": round(n / seconds, 4),
        "generated_tokens": generated,
        "generated_tokens_per_second": round(generated / seconds, 2),
        "tokens_processed": processed,
        "achieved_gflops": round(2 * params * processed / seconds / 1e9, 2),
        "fraction_of_matmul_peak": round(2 * params * processed / seconds / peak, 4),
        "fraction_of_matmul_peak_same_work": round(2 * params * logical / seconds / peak, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_speed.json"))
    args = ap.parse_args()

    import lm_eval
    import torch
    import transformers
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from mathdistill import data
    from mathdistill.eval import evaluate
    from mathdistill.paths import data_dir
    from mathdistill.student.chat import render_few_shot
    from mathdistill.student.generation import common_prefix
    from mathdistill.models import load_model
    from mathdistill.thoughts import get

    root = data_dir(args.data_dir)
    load = {"start": os.getloadavg()}
    peak = matmul_flops()
    model, tok = load_model(args.model)
    params = sum(p.numel() for p in model.parameters())
    problems = data.load("gsm8k", "test", data_dir=root, limit=args.n)
    shots = data.load("gsm8k", "train", data_dir=root, limit=args.shots)

    def user(question: str) -> str:  # lm-eval gsm8k doc_to_text
        return f"Question: {question}\nAnswer:"

    exemplars = [(user(p.question), p.extra["solution"]) for p in shots]
    prompts = [render_few_shot(tok, exemplars, user(p.question)) for p in problems]
    prompt_tokens = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = common_prefix(prompt_tokens)  # what generate() runs once for the whole call

    # --- ours: the full evaluator (prompts given, generation, scoring) ---
    load["ours"] = os.getloadavg()
    t0 = time.perf_counter()
    ours = evaluate(model, tok, problems, prompts=prompts, max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size, stop=STOP, progress=True)
    t_ours = time.perf_counter() - t0

    # --- lm-eval: HF backend on the same model object, its gsm8k task format from local files ---
    load["lm_eval"] = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "gsm8k_local.yaml").write_text(TASK_YAML.format(
            train=root / "gsm8k" / "train.jsonl", test=root / "gsm8k" / "test.jsonl",
            until=json.dumps(STOP), max_new_tokens=args.max_new_tokens))
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size)
        gen_seconds = []
        generate_until = lm.generate_until

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return generate_until(*a, **kw)
            finally:
                gen_seconds.append(time.perf_counter() - t)

        lm.generate_until = timed
        t0 = time.perf_counter()
        result = simple_evaluate(model=lm, tasks=["gsm8k_local"], num_fewshot=args.shots, limit=args.n,
                                 apply_chat_template=True, fewshot_as_multiturn=True, log_samples=True,
                                 bootstrap_iters=0, task_manager=TaskManager(include_path=tmp))
        t_lm = time.perf_counter() - t0
    load["end"] = os.getloadavg()

    # one sample per document (this lm-eval version may log a document once per filter)
    samples = sorted({s["doc_id"]: s for s in reversed(result["samples"]["gsm8k_local"])}.values(),
                     key=lambda s: s["doc_id"])
    lm_prompts = [s["arguments"]["gen_args_0"]["arg_0"] if isinstance(s["arguments"], dict) else s["arguments"][0][0]
                  for s in samples]
    same_prompts = sum(a == b for a, b in zip(lm_prompts, prompts))
    if same_prompts != len(prompts):
        raise SystemExit(f"prompt text differs between lm-eval and mathdistill ({same_prompts}/{len(prompts)} equal)")
    lm_out = [s["resps"][0][0] for s in samples]
    our_out = [r["output"] for r in ours.rows]
    cot = get("cot")
    lm_scored = cot.score_batch(lm_out, [p.answer for p in problems])
    res = result["results"]["gsm8k_local"]

    def ntok(texts):
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    n, all_prompt = len(problems), sum(len(t) for t in prompt_tokens)
    gen_ours, gen_lm = ntok(our_out), ntok(lm_out)
    ours_summary = flops_summary(t_ours, shared + sum(len(t) - shared for t in prompt_tokens) + gen_ours,
                                 all_prompt + gen_ours, params, peak, n, gen_ours)
    ours_summary.update(accuracy=ours.metrics["accuracy"], correct=ours.metrics["correct"],
                        generated_tokens_exact=ours.metrics["generated_tokens"])
    lm_summary = flops_summary(t_lm, all_prompt + gen_lm, all_prompt + gen_lm, params, peak, n, gen_lm)
    lm_summary.update(
        generate_until_seconds=round(sum(gen_seconds), 2),
        accuracy_flexible_extract=res["exact_match,flexible-extract"],
        accuracy_strict_match=res["exact_match,strict-match"],
        accuracy_mathdistill_scorer=sum(s.correct for s in lm_scored) / n,
    )
    out = {
        "ours": ours_summary,
        "lm_eval": lm_summary,
        "ratio": round(t_lm / t_ours, 3),
        "ratio_generation_only": round(sum(gen_seconds) / t_ours, 3),
        "identical_outputs": sum(a == b for a, b in zip(our_out, lm_out)) / n,
        "identical_prompts": same_prompts / n,
        "settings": {"model": args.model, "params": params, "n": n, "shots": args.shots,
                     "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "stop": STOP,
                     "greedy": True, "prompt_tokens_total": all_prompt, "shared_prefix_tokens": shared,
                     "mean_prompt_tokens": all_prompt / n},
        "machine": {"matmul_gflops": round(peak / 1e9, 1), "torch_threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "loadavg": load, "torch": torch.__version__, "transformers": transformers.__version__,
                    "lm_eval": lm_eval.__version__},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
