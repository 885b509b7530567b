"""Would the loop stop have changed any verdict? Re-score finished evaluations as if cut there.

For every predictions.jsonl under the given run folders (evaluated without the loop stop), each
output is re-tokenised, cut at the first point where `student.generate.ends_in_loop` fires, and
scored again with its format. Prints how many outputs would stop early, the generated tokens
saved, and how many predictions and verdicts change.

    python benchmarks/loop_stop_check.py benchmarks/runs/*      # any run or eval folders
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mathdistill import thoughts
from mathdistill.io import iter_jsonl, read_json
from mathdistill.student.generate import ends_in_loop
from mathdistill.models import load_tokenizer


def first_loop(ids: list[int]) -> int | None:
    for n in range(1, len(ids) + 1):
        if ends_in_loop(ids[:n]):
            return n
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--model", default="smollm2-135m", help="whose tokenizer counts the tokens")
    args = ap.parse_args()
    tok = load_tokenizer(args.model)
    totals = dict(outputs=0, stopped=0, tokens=0, saved=0, changed=0, lost=0, gained=0)
    for folder in args.folders:
        for preds in sorted(folder.rglob("predictions.jsonl")):
            metrics = read_json(preds.with_name("metrics.json"))
            if "thought" not in metrics or metrics.get("loop_stop"):
                continue  # a vote folder, or already evaluated with the loop stop
            fmt = thoughts.get(metrics["thought"])
            for _, row in iter_jsonl(preds):
                totals["outputs"] += 1
                totals["tokens"] += row["num_tokens"]
                ids = tok(row["output"], add_special_tokens=False)["input_ids"]
                n = first_loop(ids)
                if n is None:
                    continue
                totals["stopped"] += 1
                totals["saved"] += max(0, row["num_tokens"] - n)
                s = fmt.score(tok.decode(ids[:n]), row["gold"])
                totals["changed"] += s.prediction != row["prediction"]
                if bool(s.correct) != bool(row["correct"]):
                    totals["lost" if row["correct"] else "gained"] += 1
                    print(f"verdict changes: {preds} {row['id']}")
    share = totals["saved"] / max(totals["tokens"], 1)
    print(json.dumps({**totals, "saved_share": round(share, 3)}))


if __name__ == "__main__":
    main()
