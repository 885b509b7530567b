"""`mathdistill train`: its options reach TrainConfig as given, and what it leaves unset is decided in one place
(TrainConfig's defaults, then `student.device` for auto/None), so on a GPU the CLI trains as the recipes do.

The command runs in-process through the console entry point with `student.train.train` replaced by a recorder,
so no model is loaded."""

from __future__ import annotations

import json
import sys

import pytest

from mathdistill import cli
from mathdistill.student import device
from mathdistill.student import train as training
from mathdistill.student.device import Device
from mathdistill.student.train import TrainConfig, TrainResult

CPU = Device()
H100 = Device("cuda", bf16=True, free_bytes=79 * 2**30, flash_attn=False)
H100_FLASH = Device("cuda", bf16=True, free_bytes=79 * 2**30, flash_attn=True)


@pytest.fixture
def run_train(tmp_path, monkeypatch):
    """run_train(*options) -> (exit code, the TrainConfig `train` got or None, stdout, stderr)."""
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "1+1?", "completion": "2"}) + "\n")
    seen = []

    def fake_train(config, data_, out, thoughts=()):
        seen.append(config)
        return TrainResult(out_dir=str(out), adapter_name=config.adapter_name, full=config.full, global_step=0,
                           epoch=0.0, train_loss=None, examples=1, completion_tokens=1, seconds=0.0)

    monkeypatch.setattr(training, "train", fake_train)

    def run(*options, capsys=None):
        seen.clear()
        monkeypatch.setattr(sys, "argv", ["mathdistill", "train", "--model", "m", "--data", str(data),
                                          "--out", str(tmp_path / "out"), *options])
        with pytest.raises(SystemExit) as info:
            cli.main()
        return info.value.code or 0, (seen[0] if seen else None)

    return run


def test_unset_options_are_trainconfigs_defaults(run_train):
    code, cfg = run_train()
    assert code == 0
    assert cfg == TrainConfig(model="m")  # the CLI adds no default of its own
    assert (cfg.packing, cfg.attention, cfg.save_steps, cfg.logging_steps, cfg.batch_tokens, cfg.compile) == \
        ("auto", "auto", None, None, None, False)


def test_options_reach_the_config(run_train):
    code, cfg = run_train("--packing", "bfd", "--attention", "eager", "--batch-tokens", "4096", "--compile",
                          "--logging-steps", "5", "--save-steps", "7", "--max-seq-len", "256", "--precision", "bf16")
    assert code == 0
    assert (cfg.packing, cfg.attention, cfg.batch_tokens, cfg.compile, cfg.logging_steps, cfg.save_steps,
            cfg.max_seq_len, cfg.precision) == ("bfd", "eager", 4096, True, 5, 7, 256, "bf16")
    assert run_train("--no-compile")[1].compile is False


def test_auto_is_the_devices_choice(run_train):
    """What the CLI's config becomes inside `train` (`resolve` + the checkpoint policy) on each device."""
    _, cfg = run_train()
    on_cpu = training.resolve(cfg, CPU)
    assert (on_cpu.packing, on_cpu.attention, on_cpu.logging_steps) == ("padding_free", "sdpa", 1)  # measured best
    on_gpu = training.resolve(cfg, H100)
    assert (on_gpu.packing, on_gpu.attention, on_gpu.logging_steps) == ("bfd", "sdpa", device.GPU_LOG_EVERY)
    assert training.resolve(cfg, H100_FLASH).attention == "flash_attention_2"
    assert device.checkpoint_plan(cfg.full, cfg.save_steps) == (device.LORA_SAVE_STEPS, 2)
    assert device.checkpoint_plan(cfg.full, cfg.save_steps, gpu=True) == (None, 1)  # the stage is the unit of resume
    _, full = run_train("--full")
    assert device.checkpoint_plan(full.full, full.save_steps) == (None, 1)  # 1.6 GB each: none unless asked
    # what was given stays as given, on either device
    _, given = run_train("--packing", "none", "--attention", "eager", "--logging-steps", "3")
    assert (training.resolve(given, H100).packing, training.resolve(given, H100).attention,
            training.resolve(given, H100).logging_steps) == ("none", "eager", 3)


@pytest.mark.parametrize("options,needles", [
    (["--packing", "tight"], ["--packing", "tight", "bfd"]),
    (["--attention", "fast"], ["--attention", "fast", "sdpa"]),
    (["--batch-tokens", "0"], ["--batch-tokens"]),
    (["--logging-steps", "0"], ["--logging-steps"]),
    (["--save-steps", "-1"], ["--save-steps"]),
    (["--precision", "fp8"], ["--precision", "fp8"]),
], ids=["packing", "attention", "batch-tokens", "logging-steps", "save-steps", "precision"])
def test_bad_values_exit_2_naming_the_option(run_train, capsys, options, needles):
    code, cfg = run_train(*options)
    out, err = capsys.readouterr()
    assert code == 2 and cfg is None, err
    assert "Traceback" not in err + out
    message = " ".join(err.split())
    for needle in needles:
        assert needle in message, message
