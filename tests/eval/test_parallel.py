"""Data-parallel evaluation: the shares cover every problem once, and merging them gives the evaluation of a
single process; for real with 2 CPU processes under `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mathdistill.eval import wilson_ci
from mathdistill.eval.parallel import merge, shard


def test_shares_cover_every_problem_once():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items and [len(p) for p in parts] == [4, 4, 3]
    assert shard(items, 0, 1) == items


def test_merge_puts_rows_in_problem_order_and_adds_up_metrics():
    def part(ids, correct, seconds, tokens):
        rows = [{"id": i, "correct": c, "prediction": "1" if c else None} for i, c in zip(ids, correct)]
        n = len(rows)
        return rows, {"dataset": "gsm8k", "n": n, "correct": sum(correct), "accuracy": sum(correct) / n,
                      "no_answer": n - sum(correct), "generated": n, "reused": 0, "generated_tokens": tokens,
                      "seconds": seconds, "mean_output_tokens": tokens / n, "key": "k", "loop_stopped": 0}

    order = ["a", "b", "c", "d", "e"]
    rows, m = merge(order, [part(["a", "c", "e"], [True, False, True], 2.0, 30), part(["b", "d"], [True, True], 3.0, 50)])
    assert [r["id"] for r in rows] == order
    assert (m["n"], m["correct"], m["no_answer"], m["generated_tokens"], m["seconds"]) == (5, 4, 1, 80, 3.0)
    assert m["accuracy"] == 0.8 and m["ci95"] == list(wilson_ci(4, 5)) and m["processes"] == 2
    assert m["tokens_per_second"] == pytest.approx(80 / 3) and m["mean_output_tokens"] == pytest.approx(16.0)
    assert "key" not in m


@pytest.mark.slow
def test_two_cpu_processes_give_the_single_process_predictions(tmp_path, student_path, data_dir):
    common = ["--model", student_path, "--dataset", "gsm8k", "--limit", "3", "--max-new-tokens", "24",
              "--batch-size", "1", "--data-dir", str(data_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "mathdistill.cli", "eval", *common, "--out", str(tmp_path / "one"),
                          "--no-progress"], capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    # --multi_gpu on a machine without GPUs: torch.distributed.run starts 2 CPU processes (gloo)
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "-m", "mathdistill.eval.parallel", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    rows = [[json.loads(line) for line in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    keys = ("id", "question", "gold", "output", "prediction", "correct", "num_tokens")
    assert [[r[k] for k in keys] for r in rows[1]] == [[r[k] for k in keys] for r in rows[0]]
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    shares = sorted((tmp_path / "two" / "shards").iterdir())
    assert [p.name for p in shares] == ["0-of-2", "1-of-2"] and m2["processes"] == 2
    assert [len((p / "predictions.jsonl").read_text().splitlines()) for p in shares] == [2, 1]
    assert {k: m2[k] for k in ("n", "correct", "accuracy", "ci95", "generated_tokens")} == \
        {k: m1[k] for k in ("n", "correct", "accuracy", "ci95", "generated_tokens")}
    assert [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")] == [m2]  # main process only
