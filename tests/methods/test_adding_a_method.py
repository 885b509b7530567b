"""docs/adding-a-method.md works when followed literally, in both placements it describes, each built in a temporary
folder from the page's own code blocks and run through the `mathdistill` command in a fresh process:

- inside the package: a copy of src/ with the page's recipe file added and its registry entry made;
- from a separate package: the page's package folder (pyproject.toml declaring the entry point), installed
  with pip into a folder of its own, found through PYTHONPATH.

Each lists the method's keys (`mathdistill recipes`), runs it end to end (`mathdistill run`) on a tiny random
model at a tiny budget (the recorded teachers of the page's recipe: 2 rationales per problem), serves its run as
the page says and finds it among the benchmarks' methods with no benchmark file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "adding-a-method.md").read_text()
#: the page's code blocks by title: ```python title="src/mathdistill/methods/cot_k.py"
BLOCKS = {m.group(1): m.group(2) for m in re.finditer(r'```\w+ title="([^"]+)"\n(.*?)```', PAGE, re.DOTALL)}
RECIPE_FILE = BLOCKS["src/mathdistill/methods/cot_k.py"]
REGISTRY_EDIT = BLOCKS["src/mathdistill/methods/registry.py"]
RECIPE = BLOCKS["recipes/cot-k.yaml"]
PACKAGE_TAIL = BLOCKS["mathdistill-cot-k/cot_k.py (the recipe file above, then)"]
PYPROJECT = BLOCKS["mathdistill-cot-k/pyproject.toml"]
#: a tiny budget on a tiny model: key=value overrides after the recipe, as the page says
TINY = ["data.train.limit=3", "train.max_steps=1", "train.batch_size=2", "train.max_seq_len=192",
        "data.eval=[{dataset: gsm8k, split: test, limit: 2}]", "eval.max_new_tokens=8", "eval.batch_size=2"]


def test_the_example_is_short():
    assert len(RECIPE_FILE.strip().splitlines()) <= 40 and len(REGISTRY_EDIT.strip().splitlines()) <= 4


def mathdistill(*args: str, pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    """The console command in a fresh process, on the package found first on `pythonpath`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_the_method(pythonpath: list[Path], tmp_path: Path, data_dir: Path, student_path: str) -> None:
    """What the page promises of cot-k, on the mathdistill of `pythonpath`."""
    sys.path.insert(0, str(ROOT / "tests" / "serve"))
    from tiny_run import tiny_model

    listed = json.loads(mathdistill("recipes", "cot-k", "--json", pythonpath=pythonpath, cwd=tmp_path).stdout)
    keys = {k["key"]: k["default"] for k in listed["cot-k"]["keys"]}
    assert listed["cot-k"]["config"] == "CoTkConfig" and keys["k"] == "2" and keys["thoughts"] == '["cot"]'
    recipe = tmp_path / "recipes" / "cot-k.yaml"
    recipe.parent.mkdir(exist_ok=True)
    recipe.write_text(RECIPE)
    model = tiny_model(tmp_path / "model", student_path)
    mathdistill("run", str(recipe), f"runs_dir={tmp_path / 'runs'}", f"data.data_dir={data_dir}",
                f"student.model={model}", *TINY, pythonpath=pythonpath, cwd=tmp_path)
    folder = tmp_path / "runs" / "cot-k2"
    summary = json.loads((folder / "teach" / "cot" / "summary.json").read_text())
    assert summary["rationales"] == 6  # k = 2 recorded teachers x 3 problems
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert [(r["method"], r["dataset"], r["n"], r["train_steps"]) for r in rows] == [("cot-k", "gsm8k", 2, 1)]
    assert yaml.safe_load((folder / "config.yaml").read_text())["k"] == 2
    # served as the page says (`default_serve`: the method's name), and a method the benchmarks run, with no file
    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); import accuracy\n"
             "from mathdistill.serve import served_run\n"
             "served, cfg, run = served_run(sys.argv[2]); exp = accuracy.EXPERIMENTS['cot-k']\n"
             "print(json.dumps([list(served.models), exp.method_name(), type(exp.load([])).__name__]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    out = subprocess.run([sys.executable, "-c", probe, str(ROOT / "benchmarks"), str(folder)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == [["cot-k"], "cot-k", "CoTkConfig"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_inside_the_package_a_recipe_file_and_one_registry_entry(tmp_path, data_dir, student_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "mathdistill", src / "mathdistill", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "mathdistill" / "methods" / "cot_k.py").write_text(RECIPE_FILE)
    # the page's registry edit: its import line in place of the registry's, its entry at the end of BUILT_IN
    registry = src / "mathdistill" / "methods" / "registry.py"
    imports, entry = REGISTRY_EDIT.split("\n\n", 1)
    text = registry.read_text()
    old = next(line for line in text.splitlines() if line.startswith("from mathdistill.methods import base,"))
    start = text.index("BUILT_IN: list[Method] = [")
    end = text.index("\n]\n", start)
    registry.write_text((text[:end] + "\n" + entry.rstrip("\n") + text[end:]).replace(old, imports.strip()))
    check_the_method([src], tmp_path, data_dir, student_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_from_a_separate_package_through_the_entry_point(tmp_path, data_dir, student_path):
    pkg = tmp_path / "mathdistill-cot-k"
    pkg.mkdir()
    (pkg / "cot_k.py").write_text(RECIPE_FILE + "\n" + PACKAGE_TAIL)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert (site / "cot_k.py").is_file() and not (ROOT / "src" / "mathdistill" / "methods" / "cot_k.py").exists()
    check_the_method([ROOT / "src", site], tmp_path, data_dir, student_path)
