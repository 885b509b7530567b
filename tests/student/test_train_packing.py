"""Packing keeps examples apart: the loss of packed rows equals the loss of the same examples one by one, for
both layouts (rows kept for sdpa/eager, rows flattened for varlen kernels), and through `train` itself. Tiny
random llamas: each check takes well under a second."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mathdistill.student.train import TrainConfig, pack_examples, packed_collator, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_train_identity import tiny_model  # noqa: E402


def random_llama(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    model.set_attn_implementation(attn)
    return model


def examples():
    g = torch.Generator().manual_seed(1)
    out = []
    for n, p in [(7, 3), (12, 5), (5, 2), (9, 4), (3, 1), (14, 6)]:
        ids = torch.randint(1, 97, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "completion_mask": [0] * p + [1] * (n - p)})
    return out


def nll(logits, labels):
    """Summed next-token NLL over labelled positions of each row."""
    lp = torch.log_softmax(logits[:, :-1].double(), -1)
    tgt = labels[:, 1:]
    keep = tgt != -100
    return -(lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * keep).sum(), int(keep.sum())


def unpacked_loss(model, exs):
    total, n = 0.0, 0
    with torch.no_grad():
        for e in exs:
            ids = torch.tensor([e["input_ids"]])
            labels = torch.tensor([[t if m else -100 for t, m in zip(e["input_ids"], e["completion_mask"])]])
            s, k = nll(model(input_ids=ids).logits, labels)
            total, n = total + s, n + k
    return total / n


def test_bfd_rows_hold_each_example_once():
    exs = examples()
    rows = pack_examples(exs, 16)
    assert len(rows) < len(exs) and all(len(r["input_ids"]) <= 16 for r in rows)
    lengths = sorted(n for r in rows for n in r["seq_lengths"])
    assert lengths == sorted(len(e["input_ids"]) for e in exs)
    assert sorted(t for r in rows for t in r["input_ids"]) == sorted(t for e in exs for t in e["input_ids"])


@pytest.mark.parametrize("attn, flatten", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_packed_loss_equals_unpacked_loss(attn, flatten):
    model = random_llama(attn)
    exs = examples()
    rows = list(pack_examples(exs, 16))
    batch = packed_collator(0, flatten)(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == (1 if flatten else len(rows)) < len(exs)
    with torch.no_grad():
        # as in training: no KV cache (with one, transformers ignores position ids when building the mask)
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
        s, n = nll(model(**inputs).logits, batch["labels"])
        assert n == sum(sum(e["completion_mask"]) for e in exs) - sum(e["completion_mask"][0] for e in exs)
        packed = s / n
        assert packed.item() == pytest.approx(unpacked_loss(model, exs).item(), rel=1e-5)
        # the check can fail: without per-example position ids the examples see each other
        leak, _ = nll(model(input_ids=batch["input_ids"], use_cache=False).logits, batch["labels"])
        assert (leak / n).item() != pytest.approx(packed.item(), rel=1e-4)


@pytest.mark.slow
def test_train_bfd_first_loss_equals_unpacked(tmp_path, student_path):
    """The first logged loss (before any update) of one step over all examples: bfd packing == no packing."""
    model = tiny_model(tmp_path / "tiny", student_path, seed=0, hidden=32)
    rows = [{"prompt": f"What is {a} times {b}?", "completion": f"{a} x {b} = {a * b}. The answer is {a * b}."}
            for a, b in [(2, 3), (4, 5), (12, 13), (7, 8), (9, 11), (6, 6)]]
    common = dict(model=model, max_steps=1, warmup=0, save_steps=100, max_seq_len=128, lr=1e-3)
    none = train(TrainConfig(packing="none", batch_size=6, **common), rows, tmp_path / "none")
    bfd = train(TrainConfig(packing="bfd", batch_size=6, **common), rows, tmp_path / "bfd")
    first = [json.loads(line) for line in (tmp_path / "bfd" / "train_log.jsonl").read_text().splitlines()][0]
    assert "entropy" in first and "mean_token_accuracy" in first  # read once per log record, not per step
    assert bfd.train_loss == pytest.approx(none.train_loss, rel=1e-4)
    assert bfd.tokens == none.tokens and bfd.device == "cpu"
    recorded = json.loads((tmp_path / "bfd" / "mathdistill.json").read_text())["config"]
    assert (recorded["packing"], recorded["attention"], recorded["save_steps"]) == ("bfd", "sdpa", 100)
