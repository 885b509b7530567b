"""docs/adding-a-method.md is true: its example method (<= 60 lines) registers, lists its keys, and
runs end to end at a tiny budget with the YAML the page shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "adding-a-method.md").read_text()
CODE = re.search(r"```python\n(.*?)```", PAGE, re.DOTALL).group(1)
RECIPE = re.search(r"```yaml\n(.*?)```", PAGE, re.DOTALL).group(1)


def test_the_example_is_short():
    assert len(CODE.strip().splitlines()) <= 60


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_example_method_runs(tmp_path, data_dir, monkeypatch):
    import json

    from mathdistill.methods.config import describe
    from mathdistill.methods.registry import METHODS, load_config
    from mathdistill.methods.runner import run

    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    exec(compile(CODE, "docs/adding-a-method.md", "exec"), {"__name__": "cot_k_example"})
    try:
        assert "k" in {k for k, _, _ in describe(METHODS["cot-k"])}
        recipe = tmp_path / "cot-k.yaml"
        recipe.write_text(RECIPE)
        cfg = load_config(recipe, [f"runs_dir={tmp_path}", "data.train.limit=3", "train.max_steps=1",
                                   "train.batch_size=2", "train.max_seq_len=256",
                                   "data.eval=[{dataset: gsm8k, split: test, limit: 2}]", "eval.max_new_tokens=16"])
        folder = run(cfg, command=["test"])
    finally:
        METHODS.pop("cot-k", None)
    summary = json.loads((folder / "teach" / "cot" / "summary.json").read_text())
    assert summary["rationales"] == 6  # k = 2 recorded teachers x 3 problems
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert [(r["method"], r["dataset"], r["n"]) for r in rows] == [("cot-k2", "gsm8k", 2)]
    assert rows[0]["train_steps"] == 1
    assert yaml.safe_load((folder / "config.yaml").read_text())["k"] == 2
