"""`mathdistill export RUN_DIR --out DIR`: a run's student as a Hugging Face model folder.

    export("runs/etd", "exports/etd")                      # merged: plain transformers / vLLM load DIR
    export("runs/etd", "exports/etd", keep_adapters=True)  # the base + adapters/<name>/ (PEFT)
    export("runs/etd", "exports/etd", gguf="f16")          # + DIR/<name>-f16.gguf for llama.cpp

What DIR holds (written to a temporary sibling, then renamed into place):
  config.json, model.safetensors   the weights, in the dtype evaluation uses (`--dtype auto`: float32
                                   on a CPU, bfloat16 on a GPU that has it), a run's single adapter
                                   merged in (`student.adapters.load_merged`, as evaluation does)
  tokenizer files, chat template   the student's
  generation_config.json           eos includes the chat's end-of-turn token; the run's greedy settings
  adapters/<name>/                 with `keep_adapters` or a multi-adapter run (LoRID): the PEFT adapters
                                   on the base in DIR
  README.md                        model card: how to prompt and serve it, the run's recipe, metrics,
                                   notes, provenance (base model: its public origin, the wheel or file it came
                                   from and its sha256; teachers and whether they were offline stand-ins; data)
  mathdistill.json                 the same provenance as JSON
Neither names a path of the machine that made them (`models.public_provenance`, `models.without_paths`):
the run is named by its name, files by their names, the recipe without runs_dir and data_dir.
  <name>-<type>.gguf               with `gguf`: llama.cpp's format (below)

GGUF: neither llama-cpp-python's wheel nor the `gguf` package ships llama.cpp's converter
(convert_hf_to_gguf.py), so `write_gguf` writes the file itself with the `gguf` package's writer,
for a llama-architecture student that came from a GGUF file (the default student does): the base
file's metadata (tokenizer, chat template, hyper-parameters) is copied and the tensors are the
exported weights, q/k rows permuted back to llama.cpp's order; f32, f16 or q8_0.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Optional

import typer
import yaml

from mathdistill.io import InputError, atomic_dir, read_json, sha256_file, write_json, write_text
from mathdistill.runtime import threads_option
from mathdistill.models import public_provenance, without_paths

MARKER = "mathdistill.json"
GGUF_TYPES = ("f32", "f16", "q8_0")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def export(run_dir: str | Path, out: str | Path, keep_adapters: bool = False, dtype: str = "auto",
           gguf: str | None = None) -> Path:
    """Write the student of the run in `run_dir` as a model folder `out` (see the module doc)."""
    from mathdistill.serve.inference import served_run
    from mathdistill.student.adapters import load_merged
    from mathdistill.models import load_model, mark_end_of_turn

    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if gguf is not None and gguf not in GGUF_TYPES:
        raise InputError(f"--gguf {gguf}: choose one of {', '.join(GGUF_TYPES)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise InputError(f"--out {out}: exists and is not an earlier export; choose a new folder")
    served, cfg, run = served_run(run_dir)
    base = served.model or cfg.student.model
    gguf_base = _gguf_base(run.student, base) if gguf else None
    merged = len(served.adapters) == 1 and not keep_adapters
    if gguf and served.adapters and not merged:
        raise InputError("--gguf: llama.cpp takes one set of weights; export with a single, merged adapter")
    with atomic_dir(out) as tmp:
        if merged:
            model, tok = load_merged(base, next(iter(served.adapters.values())), dtype=dtype)
        else:
            model, tok = load_model(base, dtype=dtype)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        mark_end_of_turn(tmp)
        _generation_settings(tmp, cfg)
        kept = {}
        if not merged:
            public = public_provenance(run.student or {"name": base})
            for name, folder in served.adapters.items():
                kept[name] = _copy_adapter(folder, tmp / "adapters" / name, public.get("origin") or public["name"], run)
        if gguf:
            write_gguf(model, gguf_base, tmp / f"{cfg.name}-{gguf}.gguf", gguf, name=cfg.name)
        record = _provenance(run, cfg, served, base, str(model.dtype).removeprefix("torch."), merged, kept, gguf)
        write_json(tmp / MARKER, record)
        write_text(tmp / "README.md", card(run, cfg, served, record))
    return out


def _generation_settings(folder: Path, cfg) -> None:
    """The run's evaluation settings as the folder's generation defaults (greedy unless it sampled)."""
    from transformers import GenerationConfig

    gen = GenerationConfig.from_pretrained(folder)
    gen.max_new_tokens = cfg.eval.max_new_tokens
    if cfg.eval.temperature > 0:
        gen.do_sample, gen.temperature, gen.top_p, gen.top_k = True, cfg.eval.temperature, cfg.eval.top_p, 0
    gen.save_pretrained(folder)


def _copy_adapter(folder: Path, dest: Path, base: str, run) -> dict:
    """The PEFT files of an adapter, its base model named by its public name (`base`: the origin, else the
    model's own name), never a path of this machine; the base weights are the export folder's."""
    from mathdistill.student.adapters import ADAPTER_CONFIG, check_adapter

    weights = check_adapter(folder)
    dest.mkdir(parents=True)
    config = read_json(folder / ADAPTER_CONFIG)
    config["base_model_name_or_path"] = base
    write_json(dest / ADAPTER_CONFIG, config)
    shutil.copyfile(weights, dest / weights.name)
    return {"from": _in_run(folder, run), "files": [ADAPTER_CONFIG, weights.name], "sha256": sha256_file(weights),
            "rank": config.get("r")}


def _in_run(folder, run) -> str:
    """A folder of the run as the run names it (`train/student`), or its own name."""
    try:
        return Path(folder).resolve().relative_to(run.path.resolve()).as_posix()
    except ValueError:
        return Path(folder).name


def _gguf_base(student: dict, base: str) -> Path:
    """The GGUF file the student was converted from (its metadata is copied into the export)."""
    f = Path(student.get("file") or "")
    if not str(f).endswith(".gguf") or not f.is_file():
        raise InputError(f"--gguf: the student ({base}) did not come from a GGUF file here, and no HF-to-GGUF "
                         "converter ships with this environment; use llama.cpp's convert_hf_to_gguf.py on the export")
    return f


def _permute(w, n_head: int, n_head_kv: int | None = None):
    """llama.cpp's row order of a q/k projection (convert_hf_to_gguf's `LlamaModel.permute`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, base_gguf: str | Path, out: str | Path, kind: str = "f16", name: str | None = None) -> Path:
    """Write `model`'s weights as a GGUF file with the metadata of `base_gguf` (same architecture and
    shapes: the file the student came from). 1-D tensors stay f32; the rest are `kind`."""
    import numpy as np
    from gguf import (MODEL_ARCH, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType,
                      get_tensor_name_map, quants)

    reader = GGUFReader(base_gguf)
    fields = reader.fields
    arch = fields["general.architecture"].contents()
    if arch != "llama":
        raise InputError(f"--gguf: {base_gguf} is a '{arch}' model; only the llama architecture is written here")
    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    if (fields[f"{arch}.block_count"].contents(), fields[f"{arch}.embedding_length"].contents()) != (
            cfg.num_hidden_layers, cfg.hidden_size):
        raise InputError(f"--gguf: {base_gguf} does not have this model's shapes")
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    state = {}
    for key, t in model.state_dict().items():
        mapped = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if mapped is not None:
            state[mapped] = (key, t)
    qtype = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0}[kind]
    ftype = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}[kind]
    writer = GGUFWriter(out, arch)
    for key, field in fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.name"):
            continue
        main = field.types[0]
        writer.add_key_value(key, field.contents(), main, field.types[-1] if main == GGUFValueType.ARRAY else None)
    writer.add_key_value("general.name", name or fields["general.name"].contents(), GGUFValueType.STRING)
    writer.add_file_type(ftype)
    for info in reader.tensors:
        if info.name not in state:
            raise InputError(f"--gguf: the model has no tensor for {info.name} of {base_gguf}")
        key, t = state[info.name]
        data = t.detach().float().cpu().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        if data.ndim == 1 or qtype == GGMLQuantizationType.F32:
            writer.add_tensor(info.name, np.ascontiguousarray(data, dtype=np.float32))
        elif qtype == GGMLQuantizationType.F16:
            writer.add_tensor(info.name, data.astype(np.float16))
        else:
            writer.add_tensor(info.name, quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out)


def _teachers(run) -> list[dict]:
    return [{"scope": t.scope, "format": t.name, "teacher": (t.summary or {}).get("teacher"),
             "offline_stand_in": (t.summary or {}).get("offline_stand_in", False),
             "kept": (t.summary or {}).get("kept"), "rationales": (t.summary or {}).get("rationales")}
            for t in run.thoughts]


def _training_data(run) -> dict:
    """The run's training data as its rows say it (`methods.provenance`): teacher, offline_stand_in, note."""
    from mathdistill.methods.provenance import FIELDS, row_provenance, teach_summaries

    trained = [r for r in run.rows if isinstance(r, dict) and r.get("teacher") is not None]
    row = trained[-1] if trained else row_provenance(teach_summaries(run.path), {"method": run.method})
    return {k: row.get(k) for k in FIELDS}


def _provenance(run, cfg, served, base: str, dtype: str, merged: bool, kept: dict, gguf: str | None) -> dict:
    from importlib.metadata import version

    adapters = {}
    for name, folder in served.adapters.items():
        meta = Path(folder) / "mathdistill.json"
        trained = read_json(meta) if meta.is_file() else {}
        adapters[name] = {"folder": _in_run(folder, run), "data": trained.get("data"), "train": trained.get("config")}
    student = public_provenance(run.student or {"name": base})
    record = {"exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "mathdistill": version("mathdistill"), "run": run.path.name, "name": cfg.name,
              "method": cfg.method, "git_revision": run.manifest.get("git_revision"), "dtype": dtype,
              "layout": "merged" if merged else ("base + adapters" if kept else "base"),
              "base_model": student, "student_model": student["name"], "adapters": adapters,
              "kept_adapters": kept, "served": {n: list(getattr(i, "formats", ())) for n, i in served.models.items()},
              "training_data": _training_data(run), "teachers": _teachers(run),
              "data": {"train": cfg.data.train.model_dump(mode="json") if hasattr(cfg, "teach") else None,
                       "summary": run.data.get(None)},
              "results": run.rows, "notes": run.notes, "gguf": gguf, "recipe": public_recipe(run.config)}
    return without_paths(record)


def public_recipe(config: dict) -> dict:
    """The run's resolved config as a recipe anyone can run: no runs_dir or data_dir (this machine's folders),
    the student by its public name, any other path by the name of its file."""
    out = {k: v for k, v in config.items() if k != "runs_dir"}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "data_dir"}
    if isinstance(out.get("student"), dict) and out["student"].get("model"):
        out["student"] = dict(out["student"], model=public_provenance({"name": out["student"]["model"]})["name"])
    return without_paths(out)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return "–".join(_cell(x) for x in v)
    return str(v if v is not None else "").replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def card(run, cfg, served, record: dict) -> str:
    """The model card (README.md) of an export."""
    from mathdistill import thoughts
    from mathdistill.methods.registry import METHODS

    student = record["base_model"]
    origin = student.get("origin")
    layout = record["layout"]
    formats = sorted({f for fs in record["served"].values() for f in fs}, key=list(thoughts.NAMES).index)
    front = ["---", "library_name: " + ("peft" if layout == "base + adapters" else "transformers"),
             "pipeline_tag: text-generation", "tags: [mathdistill, math, reasoning, distillation]"]
    if origin and "/" in str(origin):
        front.append(f"base_model: {origin}")
    front.append("---")
    prompt_lines = [f"- `{f}`: the question, a new line, then `{thoughts.get(f).trigger} {thoughts.get(f).instruction}`"
                    for f in formats]
    names = ", ".join(f"`{n}`" for n in record["served"])
    use = [
        f"# {cfg.name}: {METHODS[cfg.method].summary}",
        "",
        f"A student distilled by mathdistill (method `{cfg.method}`, run `{cfg.name}`), "
        f"exported {record['exported']} in {record['dtype']} ({layout}).",
        "",
        "## Prompting",
        "",
        "One user turn through the tokenizer's chat template, greedy decoding (the folder's generation config "
        "stops at the chat's end-of-turn token). The user message is:",
        "",
        *prompt_lines,
        "",
        "The student writes the rationale; `mathdistill score --thought FORMAT` gets the answer out of it "
        "(PoT programs are executed in a sandbox, EoT equations solved by sympy).",
        "",
    ]
    run_name = f"RUN_DIR` (the run folder `{record['run']}`"
    if layout == "base + adapters":
        mods = " ".join(f"{n}=DIR/adapters/{n}" for n in record["kept_adapters"])
        rank = max((a.get("rank") or 16) for a in record["kept_adapters"].values())
        use += ["## Serving", "",
                "The weights in this folder are the base; each adapter is in `adapters/<name>/` (PEFT):", "",
                "```python",
                "from peft import PeftModel",
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "base = AutoModelForCausalLM.from_pretrained(DIR)",
                *[f"model = PeftModel.from_pretrained(base, DIR + '/adapters/{n}', adapter_name='{n}')" if i == 0 else
                  f"model.load_adapter(DIR + '/adapters/{n}', adapter_name='{n}')"
                  for i, n in enumerate(record["kept_adapters"])],
                "model.set_adapter(NAME)",
                "```", "",
                f"vLLM: `vllm serve DIR --enable-lora --max-lora-rank {rank} --lora-modules {mods}` (each adapter is a "
                "model name). The method's own inference over them "
                f"({names}) is served by `mathdistill serve {run_name}). Each adapter_config.json names the base by "
                "its public origin; the base weights to load it on are this folder's.", ""]
    else:
        several = len(formats) > 1
        cmd = f"mathdistill serve --model DIR --thought {','.join(formats)} --name {cfg.method}"
        use += ["## Serving", "",
                "Plain transformers: `AutoModelForCausalLM.from_pretrained(DIR)`; vLLM: `vllm serve DIR`.", "",
                f"With the run's inference ({'each format and their majority vote' if several else 'answer extracted'}): "
                f"`{cmd}`, or `mathdistill serve {run_name}) for the run itself (names {names}).", ""]
    rows = [r for r in record["results"] if isinstance(r, dict)]
    use += ["## Results", "", "Evaluated by the run (accuracy with a Wilson 95% interval):", "",
            _table(rows, ["method", *(["scope"] if any(r.get("scope") for r in rows) else []), "dataset", "n",
                          "accuracy", "ci95"]) if rows else "(no results.json)", ""]
    if record["notes"]:
        use += ["Notes from the run:", "", *[f"- {n}" for n in record["notes"]], ""]
    use += ["## Provenance", "",
            f"- base model: `{student.get('name')}`" + (f", from `{student['file']}`" if student.get("file") else "")
            + (f" in the {student['package']}" if student.get("package") else "")
            + (f" (sha256 `{student['sha256']}`)" if student.get("sha256") else ""),
            f"- quantisation: {student.get('quantisation') or 'none (the published weights)'}",
            f"- public origin: {origin or 'not known (a local model)'}",
            f"- exported in: {record['dtype']}; mathdistill {record['mathdistill']}; git {record['git_revision']}", ""]
    data = record["training_data"]
    use += [f"- training data: {'offline stand-in' if data['offline_stand_in'] else 'no offline stand-in'}; "
            f"{data['teacher_note']}", ""]
    if data["teacher"]:
        use += [f"  - {f}: {t}" for f, t in data["teacher"].items()] + [""]
    teachers = record["teachers"]
    if teachers:
        use += ["Teachers:", "", _table(teachers, ["scope", "format", "teacher", "offline_stand_in", "kept",
                                                    "rationales"]), ""]
        if any(t["offline_stand_in"] for t in teachers):
            use += ["Offline stand-ins (recorded or gold-derived rationales) were used where marked.", ""]
    train = record["data"]["train"]
    if train:
        use += [f"Training data: {train['dataset']} {train['split']}, offset {train['offset']}, limit {train['limit']}"
                + (f"; examples per format: {record['data']['summary'].get('per_thought')}"
                   if record["data"]["summary"] else ""), ""]
        for name, a in record["adapters"].items():
            if a.get("data"):
                use += [f"- adapter `{name}`: data sha256 `{(a['data'] or {}).get('sha256')}`"]
        use.append("")
    use += ["## Recipe", "", f"The run's resolved recipe (`mathdistill run RECIPE.yaml`; runs_dir and data_dir are "
            "the runner's own):", "", "```yaml", yaml.safe_dump(record["recipe"], sort_keys=False).rstrip(), "```", ""]
    return "\n".join(front + use)


def export_command(
    run_dir: Path = typer.Argument(..., help="A run folder written by `mathdistill run`."),
    out: Path = typer.Option(..., "--out", help="Folder to write (an earlier export there is replaced)."),
    adapters: bool = typer.Option(False, "--adapters", help="Keep the PEFT adapters beside the base instead of "
                                  "merging a single one (several are always kept)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (what evaluation uses: float32 on a CPU, bfloat16 on a "
                              "GPU), float32, bfloat16 or float16."),
    gguf: Optional[str] = typer.Option(None, "--gguf", help="Also write a GGUF file for llama.cpp: f32, f16 or q8_0 "
                                       "(a llama student that came from a GGUF, e.g. the default one)."),
    threads: Optional[int] = threads_option(),
) -> None:
    """Write a run's student as a Hugging Face model folder (weights, tokenizer, generation config,
    model card); stdout is one JSON line: {"out", "layout", "dtype", "files"}."""
    from mathdistill import runtime

    runtime.set_threads(threads)
    folder = export(run_dir, out, keep_adapters=adapters, dtype=dtype, gguf=gguf)
    record = read_json(folder / MARKER)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    typer.echo(json.dumps({"out": str(folder), "layout": record["layout"], "dtype": record["dtype"], "files": files}))
