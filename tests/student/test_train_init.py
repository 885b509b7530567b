"""`TrainConfig.init_adapter`: training continues an earlier adapter (its weights, a new optimizer and
schedule), as SIKeD's `init: previous` does; the run's record names that adapter's weights."""

from __future__ import annotations

import pytest

from mathdistill.io import InputError


@pytest.fixture(scope="module")
def earlier_adapter(tmp_path_factory, student_path):
    """A LoRA adapter (r 4 on q_proj/v_proj) whose B matrices are not zero, as a trained one's are."""
    import torch
    from peft import LoraConfig, get_peft_model

    from mathdistill.models import load_model

    model, _ = load_model(student_path, dtype="float32", device="cpu")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("earlier")
    peft_model.save_pretrained(out)
    return out


def _lora(model, adapter: str) -> dict:
    return {n.replace(f".{adapter}.", "."): p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.slow
def test_training_starts_from_the_earlier_adapters_weights_and_trains_only_them(earlier_adapter, student_path):
    from safetensors.torch import load_file

    from mathdistill.student.train import TrainConfig
    from mathdistill.student.train_model import build_model

    cfg = TrainConfig(model=student_path, adapter_name="student", init_adapter=str(earlier_adapter), lora_r=4,
                      target_modules=["q_proj", "v_proj"])
    model, _ = build_model(cfg)
    got = _lora(model, "student")
    saved = load_file(earlier_adapter / "adapter_model.safetensors")
    assert len(got) == len(saved) > 0
    for name, tensor in saved.items():  # saved names have no adapter name and no ".weight" suffix on lora_A/B
        match = [v for k, v in got.items() if k.startswith(name.removesuffix(".weight"))]
        assert len(match) == 1 and match[0].shape == tensor.shape and bool((match[0] == tensor).all()), name
    assert any(bool(v.abs().sum() > 0) for k, v in got.items() if "lora_B" in k)  # not a fresh LoRA (B = 0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".student." in n and "lora_" in n for n in trainable)
    assert len(trainable) == len(saved)


@pytest.mark.slow
def test_an_earlier_adapter_of_other_settings_or_with_full_training_is_refused(earlier_adapter, student_path):
    from mathdistill.student.train import TrainConfig
    from mathdistill.student.train_model import check_config

    with pytest.raises(InputError, match=r"init_adapter .*: its LoRA settings differ: r 4 \(config: 16\)"):
        check_config(TrainConfig(model=student_path, init_adapter=str(earlier_adapter)))
    with pytest.raises(InputError, match="full fine-tuning starts from a model"):
        check_config(TrainConfig(model=student_path, init_adapter=str(earlier_adapter), full=True, lora_r=4))
    with pytest.raises(InputError, match="adapter 'init_adapter'.*not found"):
        check_config(TrainConfig(model=student_path, init_adapter=str(earlier_adapter / "missing"), lora_r=4))


@pytest.mark.slow
def test_the_runs_record_names_the_earlier_adapters_weights(earlier_adapter, student_path, tmp_path):
    import shutil

    from mathdistill.student.train import TrainConfig, run_identity
    from mathdistill.student.train_record import differences

    rows = [{"prompt": "q", "completion": "a"}]
    cfg = TrainConfig(model=student_path, init_adapter=str(earlier_adapter), lora_r=4)
    first = run_identity(cfg, rows)
    assert len(first["init_adapter"]) == 64 and "init_adapter" not in run_identity(TrainConfig(model=student_path), rows)
    # the same weights elsewhere are the same run; other weights are another one
    copy = tmp_path / "copy"
    shutil.copytree(earlier_adapter, copy)
    moved = run_identity(cfg.model_copy(update={"init_adapter": str(copy)}), rows)
    assert moved["init_adapter"] == first["init_adapter"] and differences(first, moved) == []
    (copy / "adapter_model.safetensors").write_bytes(b"other weights")
    other = run_identity(cfg.model_copy(update={"init_adapter": str(copy)}), rows)
    assert any(d.startswith("init adapter: sha256") for d in differences(first, other))
    assert not any(d.startswith("init adapter") for d in differences(first, first))
