"""`provenance(name)`: what a model name stands for (file, sha256, quantisation, public origin)."""

from __future__ import annotations

import hashlib

from mathdistill.models import alias_gguf, provenance


def test_default_student_is_named_as_a_dequantised_q4_1_gguf(student_path):
    gguf = alias_gguf("smollm2-135m")
    p = provenance("smollm2-135m")
    assert p == {
        "name": "smollm2-135m",
        "resolved_path": student_path,
        "file": str(gguf.resolve()),
        "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
        "quantisation": "Q4_1 GGUF dequantised to float32 by transformers",  # read from the file's header
        "origin": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
    # the converted folder (what adapters name as their base) and the .gguf file say the same
    assert provenance(student_path) == {**p, "name": student_path}
    assert provenance(str(gguf)) == {**p, "name": str(gguf)}


def test_local_folder_and_hub_id(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"one")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"two")
    p = provenance(tmp_path)
    assert p["resolved_path"] == str(tmp_path) and p["weights"] == sorted(x.name for x in tmp_path.glob("*.safetensors"))
    assert len(p["sha256"]) == 64 and "origin" not in p and "quantisation" not in p
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"changed")
    assert provenance(tmp_path)["sha256"] != p["sha256"]  # other weights, another identity

    hub = provenance("someone/some-model")
    assert hub["origin"] == "someone/some-model" and "sha256" not in hub
