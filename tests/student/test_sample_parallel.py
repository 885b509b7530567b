"""Data-parallel sampling: merging the shares gives one sampling's rows and stats; for real with 2 CPU processes
under `accelerate launch`, which give exactly the samples of one process for the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mathdistill.io import InputError
from mathdistill.student.parallel import merge, sample_parallel


def _part(ids, corrects, seconds, tokens, k=2, generated=None):
    rows = [{"id": i, "outputs": ["a"] * k, "corrects": c, "key": f"k-{i}"} for i, c in zip(ids, corrects)]
    n = len(rows)
    generated = n if generated is None else generated
    return rows, {"thought": "cot", "k": k, "n": n, "generated": generated, "reused": n - generated,
                  "seconds": seconds, "score_seconds": seconds / 10, "generated_tokens": tokens,
                  "sample_accuracy": sum(map(sum, corrects)) / (n * k),
                  "pass_at_k": sum(map(any, corrects)) / n, "samples_per_second": generated * k / seconds,
                  "tokens_per_second": tokens / seconds}


def test_the_sampling_command_is_built_from_sample_config():
    """`python -m mathdistill.student.parallel`'s sampling options are SampleConfig's fields (defaults, bounds, help):
    nothing re-typed, so `sample` and the command cannot drift apart."""
    import inspect

    import typer
    from typer.testing import CliRunner

    from mathdistill.student.parallel import parallel_sample_command
    from mathdistill.student.sample import DEFAULTS, SampleConfig

    params = inspect.signature(parallel_sample_command).parameters
    for name, field in SampleConfig.model_fields.items():
        option = params[name].default
        assert option.default == getattr(DEFAULTS, name) and option.help.rstrip(".").lower() in (
            field.description.lower(), "completions generated together, per process"), name
    app = typer.Typer()
    app.command()(parallel_sample_command)
    for bad in (["--top-p", "1.5"], ["--top-p", "0"], ["--k", "0"], ["--max-new-tokens", "0"]):
        res = CliRunner().invoke(app, ["--dataset", "gsm8k", "--out", "unused", *bad])
        assert res.exit_code == 2 and bad[0] in res.output, (bad, res.output)


def test_merge_puts_rows_in_problem_order_and_adds_up_stats():
    order = ["a", "b", "c", "d", "e"]
    rows, s = merge(order, [_part(["a", "c", "e"], [[True, False], [False, False], [True, True]], 2.0, 60),
                            _part(["b", "d"], [[True, True], [False, True]], 4.0, 40, generated=1)])
    assert [r["id"] for r in rows] == order and rows[0]["key"] == "k-a"  # the rows keep their resume keys
    assert (s["n"], s["generated"], s["reused"], s["generated_tokens"], s["seconds"]) == (5, 4, 1, 100, 4.0)
    assert s["sample_accuracy"] == pytest.approx(6 / 10) and s["pass_at_k"] == pytest.approx(4 / 5)
    assert s["tokens_per_second"] == pytest.approx(100 / 4) and s["samples_per_second"] == pytest.approx(4 * 2 / 4)
    assert s["processes"] == 2 and s["shard_seconds"] == [2.0, 4.0] and s["score_seconds"] == 0.4


def test_inputs_are_checked_before_any_process_starts(tmp_path):
    from mathdistill.data import Problem

    ps = [Problem(id=f"p{i}", question="q", answer="1", source="gsm8k") for i in range(2)]
    with pytest.raises(InputError, match="prompts: 1 items for 2 problems"):
        sample_parallel(None, None, ps, "cot", out_dir=tmp_path, prompts=["x"])
    with pytest.raises(InputError, match="prefill: 3 items"):
        sample_parallel(None, None, ps, "cot", out_dir=tmp_path, prefill=["a", "b", "c"])
    with pytest.raises(InputError, match="not unique"):
        sample_parallel(None, None, ps + ps[:1], "cot", out_dir=tmp_path)
    with pytest.raises(InputError, match="empty"):
        sample_parallel(None, None, [], "cot", out_dir=tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        sample_parallel(None, None, ps, "cot", out_dir=tmp_path / "a_file" / "out")


@pytest.mark.slow
def test_two_cpu_processes_give_the_single_process_samples(tmp_path, student, student_path, data_dir):
    from mathdistill import data
    from mathdistill.eval import weights_identity
    from mathdistill.student.sample import sample

    settings = dict(k=2, temperature=0.7, top_p=0.95, seed=3, max_new_tokens=16, batch_size=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --multi_gpu on a machine without GPUs: torch.distributed.run starts 2 CPU processes (gloo)
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "-m", "mathdistill.student.parallel", "--model", student_path, "--dataset", "gsm8k",
                          "--split", "train", "--limit", "4", "--data-dir", str(data_dir), "--thought", "cot",
                          *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()],
                          "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    problems = data.load("gsm8k", split="train", data_dir=data_dir, limit=4)
    model, tok = student
    one = sample(model, tok, problems, "cot", progress=False, **settings)
    merged = [json.loads(line) for line in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    keys = ("id", "outputs", "predictions", "corrects", "num_tokens", "looped")
    assert [[r[k] for k in keys] for r in merged] == [[r[k] for k in keys] for r in one.rows]
    assert len({o for r in merged for o in r["outputs"]}) > 4  # really sampled: the two samples differ
    shares = sorted((tmp_path / "two" / "shards").iterdir())
    assert [p.name for p in shares] == ["0-of-2", "1-of-2"]
    assert [[json.loads(line)["id"] for line in (p / "samples.jsonl").read_text().splitlines()] for p in shares] == \
        [[problems[0].id, problems[2].id], [problems[1].id, problems[3].id]]
    stats = json.loads((tmp_path / "two" / "samples.json").read_text())
    assert (stats["n"], stats["generated"], stats["processes"], stats["generated_tokens"]) == \
        (4, 4, 2, one.stats["generated_tokens"])
    assert stats["pass_at_k"] == pytest.approx(one.stats["pass_at_k"])
    assert [json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")] == [stats]  # main only
    # the merged file is a finished `sample` file: one process with the same settings reuses every row
    again = sample(model, tok, problems, "cot", progress=False, out_dir=tmp_path / "two",
                   weights=weights_identity(student_path, None), **settings)
    assert again.stats["generated"] == 0 and [r["outputs"] for r in again.rows] == [r["outputs"] for r in one.rows]
