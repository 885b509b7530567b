"""A tiny but real ETD run folder to serve and export: a random two-layer llama with the student's
tokenizer, taught offline (recorded CoT, gold-derived PoT/EoT), trained for 2 steps, evaluated on
a few problems in every format and their vote. A few seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiny_model(folder: Path, tokenizer_dir: str, seed: int = 0) -> str:
    """A random llama (2 layers, width 64, tied embeddings like SmolLM2) with the student's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def tiny_run(root: Path, tokenizer_dir: str, data_dir: Path, name: str = "tiny", extra: list[str] = (),
             recipe: str = "quickstart.yaml") -> Path:
    """`mathdistill run recipes/<recipe>` (quickstart: ETD) on a tiny model at a tiny budget; returns the run folder."""
    from mathdistill.methods.registry import load_config
    from mathdistill.methods.runner import run

    model = tiny_model(root / "model", tokenizer_dir)
    cfg = load_config(ROOT / "recipes" / recipe, [
        f"name={name}", f"runs_dir={root / 'runs'}", f"student.model={model}", f"data.data_dir={data_dir}",
        "data.train.limit=4", "train.max_steps=2", "train.batch_size=4", "train.max_seq_len=160", "train.lr=0.01",
        "data.eval=[{dataset: gsm8k, split: test, limit: 3}]", "eval.max_new_tokens=24", "eval.batch_size=4",
        *extra])
    return run(cfg, command=["tiny_run"])
