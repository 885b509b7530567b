"""Every training decision a GPU would make, asked on this CPU with stand-in machines (`Device`): precision,
packing, attention kernel, logging, batch sizing from free memory, checkpoint policy; and that a CPU resolves
to what mathdistill always did there."""

from __future__ import annotations

import pytest

from mathdistill.student import device
from mathdistill.student.device import Device
from mathdistill.student.train import TrainConfig, resolve

CPU = Device()
H100 = Device("cuda", bf16=True, free_bytes=79 * 2**30, flash_attn=False)
H100_FLASH = Device("cuda", bf16=True, free_bytes=79 * 2**30, flash_attn=True)
V100 = Device("cuda", bf16=False, free_bytes=15 * 2**30)
SMOL = dict(hidden=576, layers=30, intermediate=1536)  # SmolLM2-135M


def test_probe_on_this_machine_is_a_cpu():
    assert device.probe() == CPU


def test_precision():
    assert [device.precision("auto", d) for d in (CPU, H100, V100)] == ["fp32", "bf16", "fp16"]
    assert device.precision("bf16", CPU) == "bf16" and device.precision("fp32", H100) == "fp32"


def test_packing_and_attention():
    assert device.packing("auto", CPU) == "padding_free" and device.packing("auto", H100) == "bfd"
    assert device.packing("none", H100) == "none"
    assert device.attention("auto", CPU, "padding_free") == "sdpa"
    assert device.attention("auto", H100, "bfd") == "sdpa"
    assert device.attention("auto", H100_FLASH, "bfd") == "flash_attention_2"
    assert device.attention("auto", H100_FLASH, "none") == "sdpa"  # padded rows: no varlen kernel needed
    assert device.attention("eager", H100_FLASH, "bfd") == "eager"
    # only the varlen kernels get all packed rows joined into one; sdpa keeps rows (a dense mask otherwise)
    assert device.flatten_packed("flash_attention_2") and not device.flatten_packed("sdpa")


def test_logging_every_step_on_cpu_only():
    assert device.logging_steps(None, CPU) == 1 and device.logging_steps(None, H100) == 20
    assert device.logging_steps(5, H100) == 5


def test_a_cpu_resolves_to_the_old_defaults_a_gpu_to_packed_rows():
    cpu = resolve(TrainConfig(), CPU)
    assert (cpu.packing, cpu.attention, cpu.logging_steps) == ("padding_free", "sdpa", 1)
    gpu = resolve(TrainConfig(), H100_FLASH)
    assert (gpu.packing, gpu.attention, gpu.logging_steps) == ("bfd", "flash_attention_2", 20)
    given = resolve(TrainConfig(packing="none", attention="eager", logging_steps=3), H100_FLASH)
    assert (given.packing, given.attention, given.logging_steps) == ("none", "eager", 3)


def test_rows_per_step_by_tokens():
    assert device.rows_per_step(8, None, 1024) == 8
    assert device.rows_per_step(8, 16384, 1024) == 16
    assert device.rows_per_step(8, 100, 1024) == 1


def test_micro_batch_from_free_memory():
    per_token = device.activation_bytes_per_token(**SMOL)
    assert 500_000 < per_token < 1_500_000  # ~0.9 MB a token for the 135M student
    # a CPU: one unpadded row per forward (measured fastest), or all packed rows
    assert device.micro_batch(None, 8, "padding_free", CPU, 1024, per_token) == 1
    assert device.micro_batch(None, 8, "bfd", CPU, 1024, per_token) == 8
    # an H100: a whole 16-row step of 1024 tokens fits half its memory
    assert device.micro_batch(None, 16, "bfd", H100, 1024, per_token) == 16
    # less free memory: the largest divisor of the step's rows that fits, never below 1
    assert device.micro_rows(16, 1024, 8 * 2**30, per_token) == 4
    assert device.micro_rows(12, 1024, 8 * 2**30, per_token) == 4
    assert device.micro_rows(12, 1024, 6 * 2**30, per_token) == 3
    assert device.micro_rows(16, 1024, 2**20, per_token) == 1
    assert device.micro_rows(16, 1024, None, per_token) == 16
    assert device.micro_batch(2, 16, "bfd", H100, 1024, per_token) == 2  # given: used as is


def test_checkpoint_policy():
    full_135m = device.checkpoint_bytes(134_515_008, full=True)
    assert 1.5e9 < full_135m < 1.7e9  # 1.6 GB, as measured on the GPU
    assert device.checkpoint_plan(False, None) == (50, 2)  # a LoRA on a CPU: unchanged
    assert device.checkpoint_plan(False, 7) == (7, 2)
    assert device.checkpoint_plan(False, None, gpu=True) == (None, 1)  # GPU: the stage is the unit of resume
    assert device.checkpoint_plan(True, None) == (None, 1)  # full: none unless asked, on either device
    assert device.checkpoint_plan(True, None, gpu=True) == (None, 1)
    assert device.checkpoint_plan(True, 100) == (100, 1)
    assert device.checkpoint_plan(False, 30, gpu=True) == (30, 2)


@pytest.mark.parametrize("kw, message", [({"packing": "zip"}, "packing"), ({"attention": "fast"}, "attention"),
                                         ({"batch_tokens": 0}, "batch_tokens")])
def test_bad_settings_are_refused(kw, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        TrainConfig(**kw)
