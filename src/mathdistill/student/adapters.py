"""Several named PEFT adapters on one base model."""

from __future__ import annotations

from pathlib import Path

from mathdistill.io import InputError


def load_with_adapters(model: str, adapters: dict[str, str | Path] | None = None, dtype: str = "auto"):
    """(model, tokenizer): the base `model` with each adapter folder loaded under its name.

    With no adapters, the plain base model. The first adapter is active; switch with
    `model.set_adapter(name)`, or run the base alone inside `with model.disable_adapter():`.
    """
    from mathdistill.student.models import load_model

    base, tok = load_model(model, dtype=dtype)
    if not adapters:
        return base, tok
    from peft import PeftModel

    peft_model = None
    for name, path in adapters.items():
        path = Path(path)
        if not (path / "adapter_config.json").exists():
            raise InputError(f"adapter '{name}': {path} has no adapter_config.json (not a PEFT adapter folder)")
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(base, str(path), adapter_name=name)
        else:
            peft_model.load_adapter(str(path), adapter_name=name)
    peft_model.set_adapter(next(iter(adapters)))
    peft_model.eval()
    return peft_model, tok
