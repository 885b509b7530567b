"""The evaluator: Wilson CI, k-shot exemplars from GSM8K train only, resume, and one real
end-to-end `mathdistill eval` run of the default student."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from mathdistill import data
from mathdistill.eval import PARTIAL, build_prompts, evaluate, few_shot_exemplars, wilson_ci
from mathdistill.io import InputError


@pytest.mark.parametrize(
    "correct,n,lo,hi",
    # Newcombe (1998), Stat. Med. 17:857, Table II, method 3 (Wilson score interval)
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_ci_known_values(correct, n, lo, hi):
    got = wilson_ci(correct, n)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_wilson_ci_edges():
    assert wilson_ci(0, 0) == (0.0, 1.0)
    lo, hi = wilson_ci(10, 10)
    assert hi == 1.0 and 0.69 < lo < 0.73
    a, b = wilson_ci(3, 10), wilson_ci(7, 10)
    assert a[0] == pytest.approx(1 - b[1]) and a[1] == pytest.approx(1 - b[0])  # symmetric


def test_shots_come_from_gsm8k_train_only(data_dir):
    train = {p.id: p.question for p in data.load("gsm8k", "train", data_dir=data_dir)}
    test_questions = {p.question for p in data.load("gsm8k", "test", data_dir=data_dir)}
    shots = few_shot_exemplars("cot", 4, data_dir)
    assert len(shots) == 4
    for pid, user, answer in shots:
        assert pid in train and pid.startswith("gsm8k-train-")
        assert train[pid] not in test_questions and train[pid] in user
        assert answer.rstrip().endswith(".") and "The answer is" in answer
    # a problem under evaluation is never its own exemplar
    first = train[shots[0][0]]
    assert shots[0][0] not in [s[0] for s in few_shot_exemplars("cot", 4, data_dir, exclude=[first])]
    with pytest.raises(InputError, match="reference"):
        few_shot_exemplars("l2m", 2, data_dir)


def test_k_shot_prompt_puts_exemplars_before_the_question(data_dir):
    from mathdistill.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    shots = few_shot_exemplars("cot", 2, data_dir)
    [prompt] = build_prompts(tok, "cot", ["How many legs do 3 cats have?"], shots)
    positions = [prompt.index(shots[0][2]), prompt.index(shots[1][2]), prompt.index("How many legs do 3 cats have?")]
    assert positions == sorted(positions)
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_resume_reuses_finished_generations(student, tmp_path, data_dir):
    model, tok = student
    problems = data.load("svamp", data_dir=data_dir, limit=3)
    kw = dict(max_new_tokens=6, batch_size=3, out_dir=tmp_path, progress=False)
    first = evaluate(model, tok, problems, **kw)
    assert first.metrics["generated"] == 3 and not (tmp_path / PARTIAL).exists()
    # all reused: this call's seconds are 0; `measured` keeps the timing of the call that generated them
    reused = evaluate(model, tok, problems, **kw).metrics
    assert (reused["generated"], reused["seconds"], reused["tokens_per_second"]) == (0, 0, None)
    assert reused["measured"] == {k: first.metrics[k] for k in ("n", "seconds", "generated_tokens",
                                                                 "tokens_per_second")}
    assert first.metrics["seconds"] > 0 and evaluate(model, tok, problems, **kw).metrics["measured"] == reused["measured"]
    # an interrupted run leaves finished rows in the partial file: keep two, drop the summary files
    key = first.metrics["key"]
    with (tmp_path / PARTIAL).open("w") as f:
        for row in first.rows[:2]:
            f.write(json.dumps({"key": key, "id": row["id"], "texts": ["The answer is 99999."], "num_tokens": [6]}) + "\n")
        f.write('{"key": "' + key + '", "id": "cut sho')  # a line cut short by a kill
    (tmp_path / "metrics.json").unlink()
    again = evaluate(model, tok, problems, **kw)
    assert again.metrics["reused"] == 2 and again.metrics["generated"] == 1
    assert [r["prediction"] for r in again.rows[:2]] == ["99999", "99999"]  # taken from the partial file
    assert again.rows[2]["output"] == first.rows[2]["output"]
    # a finished run with the same settings is loaded (generated in two calls: no whole timing), one with
    # other settings is redone
    loaded = evaluate(model, tok, problems, **kw).metrics
    assert loaded["generated"] == 0 and "measured" not in loaded
    assert evaluate(model, tok, problems, **{**kw, "max_new_tokens": 5}).metrics["generated"] == 3


def run_cli(*args, cwd):
    """The installed console command (contract 1); `python -m mathdistill.cli` if it is not on PATH."""
    exe = shutil.which("mathdistill")
    cmd = [exe] if exe else [sys.executable, "-m", "mathdistill.cli"]
    return subprocess.run([*cmd, "eval", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_cli_end_to_end_on_4_gsm8k_problems(tmp_path, data_dir):
    out = tmp_path / "eval"
    args = ["--model", "smollm2-135m", "--dataset", "gsm8k", "--limit", "4", "--max-new-tokens", "32",
            "--batch-size", "4", "--data-dir", str(data_dir), "--out", str(out), "--threads", "1"]
    proc = run_cli(*args, cwd=tmp_path)  # with the progress bar: it goes to stderr
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "generate" in proc.stderr and "4/4" in proc.stderr
    [line] = proc.stdout.splitlines()  # stdout carries the result only
    assert set(json.loads(line)) == {"dataset", "n", "correct", "accuracy", "ci95"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    gold = data.load("gsm8k", data_dir=data_dir, limit=4)
    assert [r["id"] for r in rows] == [p.id for p in gold]
    for r, p in zip(rows, gold):
        assert {"id", "question", "gold", "output", "prediction", "correct"} <= set(r)
        assert r["question"] == p.question and r["gold"] == p.answer
        assert isinstance(r["output"], str) and r["output"].strip()
        assert isinstance(r["correct"], bool) and 0 < r["num_tokens"] <= 32
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "gsm8k" and m["n"] == 4
    assert m["correct"] == sum(r["correct"] for r in rows) and m["accuracy"] == m["correct"] / 4
    assert len(m["ci95"]) == 2 and m["ci95"] == pytest.approx(list(wilson_ci(m["correct"], 4)))
    assert json.loads(line)["n"] == 4
    assert m["model"] == "smollm2-135m" and len(m["weights"]["model"]["sha256"]) == 64  # the GGUF file's
    assert not (out / PARTIAL).exists()
    # the same command again: nothing is regenerated
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and json.loads((out / "metrics.json").read_text())["reused"] == 4
    assert len(again.stdout.splitlines()) == 1


def test_cli_bad_input_is_a_clear_error(tmp_path, data_dir):
    proc = run_cli("--dataset", "nosuch", "--out", str(tmp_path / "x"), "--data-dir", str(data_dir), cwd=tmp_path)
    assert proc.returncode == 2 and "unknown dataset 'nosuch'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("--dataset", "svamp", "--adapter", str(tmp_path), "--out", str(tmp_path / "x"),
                   "--data-dir", str(data_dir), cwd=tmp_path)
    assert proc.returncode == 2 and "adapter_config.json" in proc.stderr


def save_lora(model_path, folder, seed):
    """A random (non-zero) LoRA adapter for the model, saved in `folder` (over whatever is there)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from mathdistill.models import load_model

    model, _ = load_model(model_path)  # own copy: PEFT edits it in place
    torch.manual_seed(seed)
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder)


@pytest.mark.slow
def test_cli_adapter_changes_the_model_and_a_retrained_one_is_evaluated_again(student, student_path, tmp_path, data_dir):
    adapter, out = tmp_path / "adapter", tmp_path / "eval"
    save_lora(student_path, adapter, seed=0)
    problems = data.load("svamp", data_dir=data_dir, limit=2)
    base = evaluate(*student, problems, max_new_tokens=8, progress=False)
    args = ["--dataset", "svamp", "--limit", "2", "--max-new-tokens", "8", "--adapter", str(adapter),
            "--data-dir", str(data_dir), "--out", str(out), "--no-progress", "--threads", "1"]

    def run():
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        return [r["output"] for r in rows], json.loads((out / "metrics.json").read_text())

    first, m = run()
    assert first != [r["output"] for r in base.rows] and m["generated"] == 2
    assert str(adapter.resolve()) in m["model"]
    # retrained in the same folder, file times kept (as a copy with `cp -p` / rsync keeps them)
    weights = adapter / "adapter_model.safetensors"
    stamp = weights.stat()
    save_lora(student_path, adapter, seed=1)
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    second, m = run()
    assert m["generated"] == 2 and m["reused"] == 0 and second != first


@pytest.mark.slow
def test_library_evaluate_keys_the_cache_by_the_weights_in_memory(student_path, tmp_path, data_dir):
    """A caller that names the model the same way after retraining (the recipe's `model+adapter`)
    and passes no `weights`: the tensors themselves decide."""
    from mathdistill.student.adapters import load_merged

    adapter, out = tmp_path / "adapter", tmp_path / "eval"
    problems = data.load("svamp", data_dir=data_dir, limit=2)
    kw = dict(max_new_tokens=6, batch_size=2, out_dir=out, progress=False, model_name="smollm2-135m+adapter")
    save_lora(student_path, adapter, seed=0)
    assert evaluate(*load_merged(student_path, adapter), problems, **kw).metrics["generated"] == 2
    save_lora(student_path, adapter, seed=1)
    model, tok = load_merged(student_path, adapter)
    assert evaluate(model, tok, problems, **kw).metrics["generated"] == 2
    assert evaluate(model, tok, problems, **kw).metrics["reused"] == 2


def test_weights_identity_follows_the_bytes_not_the_path(tmp_path):
    from mathdistill.eval import weights_identity

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(b"A" * 64)
    (adapter / "README.md").write_text("model card")
    first = weights_identity("HuggingFaceTB/SmolLM2-135M-Instruct", adapter)
    assert set(first["adapter_sha256"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert first["model"]["origin"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id: its name (and cached revision)
    stamp = weights.stat()
    weights.write_bytes(b"B" * 65)  # (sha256_file memoises by path, size and mtime within a process)
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert weights_identity("HuggingFaceTB/SmolLM2-135M-Instruct", adapter) != first
    (adapter / "README.md").write_text("another card")  # not weights: no change
    assert weights_identity("HuggingFaceTB/SmolLM2-135M-Instruct", adapter) == weights_identity(
        "HuggingFaceTB/SmolLM2-135M-Instruct", adapter)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"M")
    ident = weights_identity(str(model))
    assert ident["model"]["sha256"] == hashlib.sha256(b"M").hexdigest() and "adapter_sha256" not in ident
    assert str(tmp_path) not in json.dumps(ident)  # where it sits on this machine is not part of it


def test_self_consistency_vote_counts_equivalent_answers_as_one():
    from mathdistill.eval import _vote

    assert _vote(["7", "5", "5.0", None], [False, True, True, False]) == ("5", True)
    assert _vote(["7", "5"], [False, True]) == ("7", False)  # a tie goes to the earliest sample
    assert _vote([None, None], [False, False]) == (None, False)
