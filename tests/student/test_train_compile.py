"""Training at GPU speed, checked on the CPU: the compiled path (torch.compile, packed rows padded to one
fixed shape, TRL's chunked LM head + cross-entropy that never materialises the logits) gives the losses of
the eager path with the same chunked head, of the CPU's eager path (the LM head on completion positions
only: `sft.completion_scores`) and of a plain full-logits cross-entropy, within 1e-3 relative, over 20 steps
on the same packed batches. A tiny random Llama with the student's tokenizer."""

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
    calls = []
    real = sft.compact_head
    monkeypatch.setattr(sft, "compact_head", lambda *a: calls.append(real(*a)) or calls[-1])
    eager = train(TrainConfig(**common), ROWS, tmp_path / "eager")
    assert calls and all(calls)  # a CPU's eager steps score completion positions only
    compiled = train(TrainConfig(compile=True, **common), ROWS, tmp_path / "compiled")
    assert not any(calls[-20:])  # compiled: TRL's fused head (fixed shapes)
    monkeypatch.setattr(sft, "compact_head", lambda *a: False)
    fused = train(TrainConfig(**common), ROWS, tmp_path / "fused")
    monkeypatch.setattr(sft, "trainer_class", plain_trainer)
    plain = train(TrainConfig(**common), ROWS, tmp_path / "plain")
    a, b, c, d = (losses(tmp_path / name) for name in ("eager", "compiled", "plain", "fused"))
    assert len(a) == len(b) == len(c) == len(d) == 20 and a[-1] < a[0]  # it learns
    for x, *others in zip(a, b, c, d):
        assert all(abs(y - x) <= 1e-3 * abs(x) for y in others), (a, b, c, d)
    assert eager.global_step == compiled.global_step == plain.global_step == fused.global_step == 20


def test_completion_scores_equal_trls_fused_head(tmp_path, student_path):
    """One padding-free row, LoRA: the CPU head's per-token log-probabilities, entropy and top-1 flags are TRL's."""
    from trl.trainer.utils import add_fused_lm_head

    from mathdistill.student.train_model import build_model

    model, _ = build_model(TrainConfig(model=tiny_model(tmp_path / "m", student_path, 0, hidden=32)))
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, 1000, (1, 40))
    labels = ids.clone()
    labels[:, :15] = -100
    inputs = {"input_ids": ids, "labels": labels, "position_ids": torch.arange(40)[None], "use_cache": False}
    assert sft.compact_head(model, inputs, compiling=False) and not sft.compact_head(model, inputs, compiling=True)
    log_p, entropy, top1, mask = sft.completion_scores(model, dict(inputs))
    ref = model(**inputs, fused_lm_head=True)
    assert torch.equal(mask, ref.label_mask) and int(mask.sum()) == 25
    torch.testing.assert_close(log_p, ref.log_probs[ref.label_mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, ref.entropy[ref.label_mask], rtol=1e-4, atol=1e-4)
    assert torch.equal(top1, ref.is_top1[ref.label_mask])
    (-log_p.sum()).backward()  # gradients reach the adapter
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)


def test_bf16_lora_keeps_a_bf16_base_and_fp32_adapter_weights(tmp_path, student_path):
    from mathdistill.student.train_model import build_model

    model = tiny_model(tmp_path / "m", student_path, 0)
    lora, _ = build_model(TrainConfig(model=model), "bfloat16")
    dtypes = {(p.requires_grad, p.dtype) for p in lora.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}
    full, _ = build_model(TrainConfig(model=model, full=True), "bfloat16")
    assert {p.dtype for p in full.parameters()} == {torch.float32}  # fp32 master weights
