"""The cross-format vote (ETD's inference): per problem, the majority answer over every format's
answers (all samples of each), ties to the earliest format in `preference`.

    res = vote_formats({"cot": cot_result, "pot": pot_result, "eot": eot_result}, ["pot", "eot", "cot"], out_dir)
    res.metrics["accuracy"], res.rows[0]["chosen_format"]

Any method can use it over any evaluations of the same problems (EvalResults of `eval.evaluate`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from mathdistill.answers import is_equivalent, vote
from mathdistill.eval.results import EvalResult, summarize, write_result
from mathdistill.io import InputError


def vote_formats(per_format: Mapping, preference: Sequence[str], out_dir: str | Path | None = None):
    """An EvalResult of the vote over `per_format` ({format: EvalResult}); writes out_dir/predictions.jsonl
    and metrics.json when given."""
    from mathdistill.eval import generation_timing

    if not per_format:
        raise InputError("nothing to vote over: no evaluations given")
    formats = list(per_format)
    first = per_format[formats[0]]
    ids = [r["id"] for r in first.rows]
    for f in formats[1:]:
        if [r["id"] for r in per_format[f].rows] != ids:
            raise InputError(f"the evaluations in {formats[0]} and {f} are not of the same problems")
    rows = []
    for i, base in enumerate(first.rows):
        answers = {f: per_format[f].rows[i].get("predictions") or [per_format[f].rows[i]["prediction"]] for f in formats}
        pred, winner = vote(answers, preference)
        rows.append({"id": base["id"], "question": base["question"], "gold": base["gold"],
                     "output": per_format[winner].rows[i]["output"] if winner else base["output"],
                     "prediction": pred, "correct": pred is not None and is_equivalent(pred, base["gold"]),
                     "chosen_format": winner, "answers": answers})
    m = first.metrics
    metrics = summarize(rows, m.get("dataset"), m.get("split"), variant="vote", formats=formats,
                        preference=list(preference), chosen=dict(Counter(r["chosen_format"] for r in rows)),
                        seconds=round(sum(generation_timing(per_format[f].metrics).get("seconds") or 0
                                          for f in formats), 3))
    if out_dir is not None:
        write_result(out_dir, rows, metrics)
    return EvalResult(rows, metrics)
