"""`mathdistill export` (heavy: run under flock): the folder plain transformers loads gives the same
greedy text as `mathdistill eval` on 8 problems; the card and provenance; --adapters and
multi-adapter runs (PEFT loads them); GGUF written from the default student loads back exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mathdistill.io import read_jsonl

pytestmark = pytest.mark.slow
N, TOKENS = 8, 24


def cli(*args, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def exported(etd_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "etd"
    line = json.loads(cli("export", etd_run, "--out", out, "--threads", "1").stdout)
    assert line["layout"] == "merged" and line["dtype"] == "float32"
    return out


def plain_greedy(folder, questions, adapter=None) -> list[str]:
    """Greedy completions with transformers (+ PEFT) alone, the folder's generation config as it is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathdistill import thoughts

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    texts = []
    for q in questions:
        msgs = [{"role": "user", "content": thoughts.get("cot").student_prompt(q)}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids)
        texts.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def test_plain_transformers_gives_the_greedy_text_of_mathdistill_eval(exported, etd_run, data_dir, tmp_path):
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    base = yaml.safe_load((etd_run / "config.yaml").read_text())["student"]["model"]
    cli("eval", "--model", base, "--adapter", etd_run / "train" / "student", "--dataset", "gsm8k", "--limit", N,
        "--thought", "cot", "--max-new-tokens", TOKENS, "--data-dir", data_dir, "--out", tmp_path / "eval",
        "--no-progress", "--threads", "1")
    rows = read_jsonl(tmp_path / "eval" / "predictions.jsonl")
    assert len(rows) == N
    gen = GenerationConfig.from_pretrained(exported)
    tok = AutoTokenizer.from_pretrained(exported)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos and gen.max_new_tokens == TOKENS
    assert not gen.do_sample and AutoConfig.from_pretrained(exported).dtype == torch.float32
    assert plain_greedy(exported, [r["question"] for r in rows]) == [r["output"] for r in rows]


def test_the_card_and_provenance(exported, etd_run):
    record = json.loads((exported / "mathdistill.json").read_text())
    results = json.loads((etd_run / "results.json").read_text())
    assert record["method"] == "etd" and record["results"] == results["rows"]
    assert record["base_model"]["sha256"] and record["served"] == {"etd": ["cot", "pot", "eot"], "etd:cot": ["cot"],
                                                                   "etd:pot": ["pot"], "etd:eot": ["eot"]}
    teachers = {t["format"]: t for t in record["teachers"]}
    assert set(teachers) == {"cot", "pot", "eot"} and all(t["offline_stand_in"] for t in teachers.values())
    assert "llama3-70b" in teachers["cot"]["teacher"]
    assert record["adapters"]["student"]["data"]["sha256"]
    card = (exported / "README.md").read_text()
    for text in ["## Prompting", "[PoT] Write a Python program", "## Results", "| etd | gsm8k | 3 |", "## Provenance",
                 "Offline stand-ins", "## Recipe", "method: etd", "mathdistill serve --model DIR --thought cot,pot,eot"]:
        assert text in card, text


def test_adapters_kept_beside_the_base(etd_run, exported, tmp_path):
    out = tmp_path / "kept"
    assert json.loads(cli("export", etd_run, "--out", out, "--adapters").stdout)["layout"] == "base + adapters"
    assert (out / "adapters" / "student" / "adapter_model.safetensors").is_file()
    rows = read_jsonl(etd_run / "eval" / "gsm8k" / "cot" / "predictions.jsonl")[:2]
    assert plain_greedy(out, [r["question"] for r in rows], out / "adapters" / "student") == \
        plain_greedy(exported, [r["question"] for r in rows])
    assert "--enable-lora" in (out / "README.md").read_text()


def test_a_multi_adapter_run_exports_the_base_and_its_named_adapters(heads_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mathdistill.serve.export import export

    out = export(heads_run, tmp_path / "heads")  # in process: the test registers the method 'heads'
    assert json.loads((out / "mathdistill.json").read_text())["layout"] == "base + adapters"
    card = (out / "README.md").read_text()
    assert "--lora-modules ir=DIR/adapters/ir dr=DIR/adapters/dr" in card and "mathdistill serve RUN_DIR` (the run " \
        f"folder `{heads_run.name}`)" in card
    for name in ("ir", "dr"):  # the base by its public name, not the export folder's path on this machine
        config = json.loads((out / "adapters" / name / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "model"
    assert str(heads_run.parent) not in card + (out / "mathdistill.json").read_text()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    for name in ("ir", "dr"):
        exported = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out), str(out / "adapters" / name))
        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(heads_run.parent.parent / "model")),
                                            str(heads_run / "train" / name))
        with torch.no_grad():
            assert torch.equal(exported(ids).logits, trained(ids).logits)


def test_bad_exports_are_refused(etd_run, tmp_path):
    proc = cli("export", etd_run, "--out", tmp_path / "g", "--gguf", "f16", ok=False)
    assert proc.returncode == 2 and "convert_hf_to_gguf" in proc.stderr and not (tmp_path / "g").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    proc = cli("export", etd_run, "--out", tmp_path / "taken", ok=False)
    assert proc.returncode == 2 and "not an earlier export" in proc.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_gguf_of_the_default_student_loads_back_exactly(student, tmp_path):
    """write_gguf on the default student (from its Q4_1 GGUF): transformers' GGUF loader gives back every
    tensor bit for bit (f32), and llama.cpp, when installed, decodes the same greedy tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from mathdistill.serve.export import write_gguf
    from mathdistill.models import alias_gguf

    model, tok = student
    path = write_gguf(model, alias_gguf("smollm2-135m"), tmp_path / "student-f32.gguf", "f32", name="student")
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    mine, theirs = model.state_dict(), back.state_dict()
    assert set(mine) == set(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    llama_cpp = pytest.importorskip("llama_cpp")
    from mathdistill.student.chat import prompt_token_ids, render_prompt

    ids = prompt_token_ids(tok, render_prompt(tok, "What is 12 times 3? Answer briefly."))
    with torch.no_grad():
        hf = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False, seed=0)
    out = []
    for t in llm.generate(ids, temp=0.0, top_k=1):
        out.append(t)
        if len(out) == len(hf):
            break
    assert out == hf
