"""A training output knows what produced it (data, base model, config): a folder trained on something else
is refused (naming what differs) unless restarted, and never passed off as done. Uses a tiny random
model with the student's tokenizer, so each training takes about a second."""

from __future__ import annotations

import json
import logging
import re

import pytest

from mathdistill.io import InputError
from mathdistill.student.train import TrainConfig, is_trained, train

ROWS_A = [{"prompt": f"What is {a} plus {b}?", "completion": f"{a} + {b} = {a + b}."} for a, b in [(1, 2), (3, 4)]]
ROWS_B = [{"prompt": f"What is {a} minus {b}?", "completion": f"{a} - {b} = {a - b}."} for a, b in [(9, 2), (8, 3)]]


def tiny_model(folder, tokenizer_dir, seed: int, hidden: int = 16) -> str:
    """A one-layer llama with random weights and the student's tokenizer (chat template included)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, student_path):
    root = tmp_path_factory.mktemp("tiny")
    return tiny_model(root / "a", student_path, 0), tiny_model(root / "b", student_path, 1)


def cfg(model, **kw) -> TrainConfig:
    return TrainConfig(model=model, **{**dict(max_steps=1, batch_size=2, max_seq_len=128, warmup=0, save_steps=100), **kw})


def test_a_folder_trained_on_something_else_is_refused_until_restarted(tmp_path, tiny, caplog):
    model_a, model_b = tiny
    out = tmp_path / "run"
    first = train(cfg(model_a), ROWS_A, out)
    assert is_trained(out) and not first.skipped

    with pytest.raises(InputError, match=r"data: sha256 [0-9a-f]{12}\.* -> [0-9a-f]{12}"):
        train(cfg(model_a), ROWS_B, out)  # today: "already trained; skipping" with the old loss
    with pytest.raises(InputError, match=r"lr: 0\.0002 -> 0\.0003"):
        train(cfg(model_a, lr=3e-4), ROWS_A, out)
    with pytest.raises(InputError, match=r"base model: .*sha256"):
        train(cfg(model_b), ROWS_A, out)
    assert json.loads((out / "train_result.json").read_text()) == first.model_dump(mode="json")  # left as it was

    again = train(cfg(model_a, resume=False), ROWS_B, out)  # --restart
    assert not again.skipped and again.examples == len(ROWS_B)
    with caplog.at_level(logging.INFO, logger="mathdistill"):
        same = train(cfg(model_a), ROWS_B, out)
    assert same.skipped and same.train_loss == again.train_loss
    assert "same data, base model and config" in caplog.text

    # what produced it is written down beside the adapter
    meta = json.loads((out / "mathdistill.json").read_text())
    assert meta["data"]["rows"] == len(ROWS_B) and len(meta["data"]["sha256"]) == 64
    assert meta["base_model"]["resolved_path"] == model_a and len(meta["base_model"]["sha256"]) == 64
    assert meta["config"]["max_steps"] == 1
    card = (out / "README.md").read_text()
    assert meta["data"]["sha256"] in card and meta["base_model"]["sha256"] in card


def test_a_partly_trained_folder_is_refused_for_other_data(tmp_path, tiny):
    """A killed run (a checkpoint, no train_result.json) is not resumed on other data."""
    model_a, _ = tiny
    out = tmp_path / "run"
    train(cfg(model_a, max_steps=2, save_steps=1, keep_checkpoints=True), ROWS_A, out)
    (out / "train_result.json").unlink()  # as if killed after its last checkpoint
    assert (out / "checkpoints" / "checkpoint-1").is_dir()
    with pytest.raises(InputError, match=r"data: sha256"):
        train(cfg(model_a, max_steps=2, save_steps=1), ROWS_B, out)
    resumed = train(cfg(model_a, max_steps=2, save_steps=1), ROWS_A, out)
    assert resumed.resumed_from == 2 and resumed.global_step == 2


def test_cli_names_the_difference_and_restart_retrains(tmp_path, tiny, monkeypatch, capsys):
    import torch

    model_a, _ = tiny
    out = tmp_path / "run"
    for name, rows in (("a.jsonl", ROWS_A), ("b.jsonl", ROWS_B)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", model_a, "--out", str(out), "--max-steps", "1", "--batch-size", "2", "--max-seq-len", "128",
              "--warmup", "0"]

    assert cli(monkeypatch, capsys, *common, "--data", str(tmp_path / "a.jsonl"))[0] == 0
    code, res = cli(monkeypatch, capsys, *common, "--data", str(tmp_path / "b.jsonl"))
    assert code == 2 and "data: sha256" in res.err and "--restart" in res.err and "Traceback" not in res.err
    threads = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "2")  # restored after the test, as --threads sets them
    try:
        code, res = cli(monkeypatch, capsys, *common, "--data", str(tmp_path / "b.jsonl"), "--restart", "--threads", "1")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0, res.err[-2000:]
    assert json.loads(res.out)["skipped"] is False  # stdout: the result alone (the Trainer's log lines go to stderr)


def cli(monkeypatch, capsys, *args):
    """(exit code, captured out/err) of `mathdistill train ARGS` run in this process."""
    from mathdistill.cli import main

    monkeypatch.setattr("sys.argv", ["mathdistill", "train", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr()


def test_an_adapter_of_another_base_is_a_clear_error(tmp_path, tiny, student_path):
    from mathdistill.student.adapters import load_with_adapters

    model_a, _ = tiny
    train(cfg(model_a), ROWS_A, tmp_path / "ad")
    other = tiny_model(tmp_path / "wide", student_path, 0, hidden=32)
    with pytest.raises(InputError, match=r"adapter 'cot': .*ad does not load on this base model"):
        load_with_adapters(other, {"cot": tmp_path / "ad"})
    with pytest.raises(InputError, match=r"adapter 'frozen': .*ad does not load on this base model"):
        train(cfg(other, frozen_adapters={"frozen": str(tmp_path / "ad")}, adapter_name="new"), ROWS_B, tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}"], r"is a folder; give a JSONL file"),
    (["--out", "{tmp}/a.jsonl"], r"a.jsonl: is a file; the training output \(--out\) must be a folder"),
    (["--batch-size", "0"], r"--batch-size: Input should be greater than 0 \(got 0\)"),
    (["--max-steps", "-5"], r"--max-steps: Input should be greater than 0 \(got -5\)"),
    (["--packing", "zip"], r"--packing: Input should be 'auto', 'padding_free', 'bfd' or 'none' \(got 'zip'\)"),
    (["--thought", "xyz"], r"--thought: unknown thought 'xyz'"),
    (["--with-adapter", "x={tmp}/nope"], r"adapter 'x': .*nope not found"),
])
def test_cli_bad_inputs_exit_2_before_the_model_loads(tmp_path, monkeypatch, capsys, args, message):
    data = tmp_path / "a.jsonl"
    data.write_text(json.dumps(ROWS_A[0]) + "\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    # a model that does not exist: each error must come before the model is looked at
    code, res = cli(monkeypatch, capsys, "--model", "no-such-model", "--data", str(data), "--out", str(tmp_path / "out"),
                    *args)
    assert code == 2 and "Traceback" not in res.err and res.out == ""
    assert re.search(message, res.err), res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]  # nothing written
