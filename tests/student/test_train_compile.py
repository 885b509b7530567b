"""Training at GPU speed, checked on the CPU: the compiled path (torch.compile, packed rows padded to one
fixed shape, TRL's chunked LM head + cross-entropy that never materialises the logits) gives the losses of
today's path (eager, same chunked head) and of a plain full-logits cross-entropy, within 1e-3 relative,
over 20 steps on the same packed batches. A tiny random Llama with the student's tokenizer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mathdistill.student import sft  # noqa: E402
from mathdistill.student.train import TrainConfig, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_train_identity import tiny_model  # noqa: E402

ROWS = [{"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}. The answer is {a + b}." * (1 + a % 3)}
        for a, b in [(i, 3 * i + 1) for i in range(40)]]


def losses(folder: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


TRAINER = sft.trainer_class


def plain_trainer():
    """The Trainer with the model's own full-logits cross-entropy in place of TRL's chunked head."""
    base = TRAINER()

    class Plain(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs, use_cache=False)
            return out.loss

    return Plain


@pytest.mark.timeout(600)
def test_compiled_chunked_loss_equals_eager_and_full_logits(tmp_path, student_path, monkeypatch):
    model = tiny_model(tmp_path / "m", student_path, 0, hidden=32)
    common = dict(model=model, full=True, packing="bfd", attention="sdpa", precision="fp32", max_seq_len=96,
                  batch_size=2, max_steps=20, lr=1e-3, warmup=0, logging_steps=1, save_steps=100)
    eager = train(TrainConfig(**common), ROWS, tmp_path / "eager")
    compiled = train(TrainConfig(compile=True, **common), ROWS, tmp_path / "compiled")
    monkeypatch.setattr(sft, "trainer_class", plain_trainer)
    plain = train(TrainConfig(**common), ROWS, tmp_path / "plain")
    a, b, c = (losses(tmp_path / name) for name in ("eager", "compiled", "plain"))
    assert len(a) == len(b) == len(c) == 20 and a[-1] < a[0]  # it learns
    for x, y, z in zip(a, b, c):
        assert abs(y - x) <= 1e-3 * abs(x) and abs(z - x) <= 1e-3 * abs(x), (a, b, c)
    assert eager.global_step == compiled.global_step == plain.global_step == 20


def test_bf16_lora_keeps_a_bf16_base_and_fp32_adapter_weights(tmp_path, student_path):
    from mathdistill.student.train_model import build_model

    model = tiny_model(tmp_path / "m", student_path, 0)
    lora, _ = build_model(TrainConfig(model=model), "bfloat16")
    dtypes = {(p.requires_grad, p.dtype) for p in lora.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    full, _ = build_model(TrainConfig(model=model, full=True), "bfloat16")
    assert {p.dtype for p in full.parameters()} == {torch.float32}  # fp32 master weights
