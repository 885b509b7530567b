"""Where and how a student trains: device, precision, attention kernel, packing, batch and checkpoint sizes.

    dev = probe()                                    # the one place that asks torch what this machine has
    precision("auto", dev)                           # "bf16" on a bf16 GPU, "fp16" on an older one, "fp32" on a CPU
    attention("auto", dev, "bfd")                    # "flash_attention_2" when installed on a GPU, else "sdpa"

Every decision is a pure function of explicit inputs (a `Device`, model sizes, a free-memory figure), so a
CPU test can ask what a GPU would get. The CPU keeps its measured best (benchmarks/train.md): fp32, one
unpadded row per forward pass ("padding_free" with micro-batches of 1), a log record every step.
On a GPU: bf16, best-fit-decreasing packing of whole examples into rows of `max_seq_len` tokens (each
example keeps its own position ids, so attention never crosses examples), as many rows per forward pass
as fit half the free memory, a log record every 20 steps (logging is the only host sync of a step).
"""

from __future__ import annotations

from dataclasses import dataclass

CPU_LOG_EVERY = 1
GPU_LOG_EVERY = 20
LORA_SAVE_STEPS = 50  # a LoRA training on a CPU checkpoints this often unless told otherwise
MEMORY_FRACTION = 0.5  # of the free accelerator memory, for the activations of one forward pass


@dataclass(frozen=True)
class Device:
    """What the training decisions need to know about the machine."""

    kind: str = "cpu"  # "cuda" | "cpu"
    bf16: bool = False  # the GPU computes in bfloat16
    free_bytes: int | None = None  # free accelerator memory (None on a CPU)
    flash_attn: bool = False  # flash-attention 2 is installed and usable here

    @property
    def gpu(self) -> bool:
        return self.kind == "cuda"


def probe() -> Device:
    """This machine, as torch sees it."""
    import torch

    if not torch.cuda.is_available():
        return Device()
    from transformers.utils import is_flash_attn_2_available

    free, _total = torch.cuda.mem_get_info()
    return Device("cuda", torch.cuda.is_bf16_supported(), int(free), bool(is_flash_attn_2_available()))


def precision(name: str, dev: Device) -> str:
    """fp32 | bf16 | fp16. "auto": bf16 (fp16 on a GPU without it) on a GPU, fp32 on a CPU, where bf16
    autocast measured slower (151 vs 83 tokens/s)."""
    if name != "auto":
        return name
    if not dev.gpu:
        return "fp32"
    return "bf16" if dev.bf16 else "fp16"


def packing(name: str, dev: Device) -> str:
    """padding_free | bfd | none. "auto": packed rows on a GPU (bfd), one unpadded row per forward on a CPU."""
    if name != "auto":
        return name
    return "bfd" if dev.gpu else "padding_free"


def attention(name: str, dev: Device, packing_mode: str) -> str:
    """The transformers attention implementation. "auto": flash-attention 2 on a GPU that has it installed
    (varlen kernels: packed examples cost only their own lengths), else sdpa, which keeps packed examples
    apart through a block-diagonal mask built from their position ids."""
    if name != "auto":
        return name
    return "flash_attention_2" if dev.gpu and dev.flash_attn and packing_mode != "none" else "sdpa"


def flatten_packed(attn: str) -> bool:
    """Whether packed rows are joined into one long row per forward pass (TRL's padding-free layout).
    Only for flash-attention's varlen kernels; sdpa would build one dense mask over the whole flattened batch
    (measured 7k vs 27k tokens/s on an H100), so there each packed row stays a row."""
    return attn.startswith("flash_attention")


def logging_steps(value: int | None, dev: Device) -> int:
    """Steps between log records (each one waits for the GPU). None: every step on a CPU, every 20 on a GPU."""
    if value is not None:
        return value
    return GPU_LOG_EVERY if dev.gpu else CPU_LOG_EVERY


def rows_per_step(batch_size: int, batch_tokens: int | None, row_tokens: int) -> int:
    """Rows in one step of one device: `batch_size`, or as many rows of `row_tokens` as `batch_tokens` holds (>= 1)."""
    if batch_tokens is None:
        return batch_size
    return max(1, batch_tokens // row_tokens)


def activation_bytes_per_token(hidden: int, layers: int, intermediate: int) -> int:
    """Bytes one training token keeps alive for the backward pass of a decoder (bf16 activations, no
    recomputation): ~34 x hidden per layer (Korthikanti et al. 2022, without the attention scores, which
    sdpa/flash do not store) plus the MLP's three intermediate tensors. An upper-side estimate, not measured."""
    return layers * (34 * hidden + 6 * intermediate)


def micro_rows(rows: int, row_tokens: int, free_bytes: int | None, bytes_per_token: int,
               fraction: float = MEMORY_FRACTION) -> int:
    """Rows per forward pass: the largest divisor of `rows` whose activations fit `fraction` of `free_bytes`
    (at least 1). Without a memory figure (a CPU), all `rows`."""
    if free_bytes is None:
        return rows
    fit = int(free_bytes * fraction) // max(1, row_tokens * bytes_per_token)
    return max([d for d in range(1, rows + 1) if rows % d == 0 and d <= fit] or [1])


def micro_batch(micro_batch_size: int | None, rows: int, packing_mode: str, dev: Device,
                row_tokens: int, bytes_per_token: int) -> int:
    """Examples (or packed rows) per forward pass. Given: that. CPU: 1 unpadded row (fused causal kernel, no
    mask: measured fastest, 151 vs 135 tokens/s) unless packing, then all rows. GPU: `micro_rows`."""
    if micro_batch_size is not None:
        return micro_batch_size
    if not dev.gpu:
        return rows if packing_mode == "bfd" else 1
    return micro_rows(rows, row_tokens, dev.free_bytes, bytes_per_token)


def checkpoint_bytes(n_params: int, full: bool, trainable: int | None = None) -> int:
    """Bytes of one Trainer checkpoint: fp32 weights + two AdamW moments of what trains (full: everything)."""
    return 12 * (n_params if full else (trainable or 0))


def checkpoint_plan(full: bool, save_steps: int | None, gpu: bool = False) -> tuple[int | None, int]:
    """(steps between checkpoints or None for none at all, how many to keep).

    Asked for (`save_steps`): every `save_steps`, keeping 2 (LoRA) or 1 (full fine-tuning: the Trainer deletes
    the older one only after the newer one is complete, so a kill during a save still leaves one).
    Not asked for: a LoRA on a CPU every 50 steps (a CPU training runs for minutes to hours); nothing else writes
    mid-training checkpoints (full fine-tuning: 12 bytes a parameter, 1.6 GB for the 135M student; on a GPU a
    training takes seconds to minutes): the stage is the unit of resume, and a killed training starts over."""
    if save_steps is not None:
        return save_steps, 1 if full else 2
    if full or gpu:
        return None, 1
    return LORA_SAVE_STEPS, 2
