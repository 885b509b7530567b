"""Provenance in every result row (contract 9): `teacher`, `offline_stand_in`, `teacher_note` from the teach
summaries, per scope; every recorded row of benchmarks/results has them; the back-fill rebuilds what the real
recipes' teach stages write (run here, offline, up to their first training). No model is loaded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mathdistill.methods import steps
from mathdistill.methods.config import dump_config
from mathdistill.methods.provenance import FIELDS, UNTRAINED, row_provenance, teach_summaries, with_provenance
from mathdistill.methods.registry import METHODS, load_config
from mathdistill.methods.run import Run

ROOT = Path(__file__).resolve().parents[2]
REPLAY = {"teacher": "replay: gsm8k_train_llama3-70b_cot.json (recorded outputs)", "offline_stand_in": True}
POOL = {"teacher": "replay: x.json (recorded outputs), on problems drawn by the pool teacher (simulation)",
        "offline_stand_in": "pool teacher (offline SIMULATION of FDD's problem generation)"}
LIVE = {"teacher": "openai-compatible: big-model @ http://10.0.0.5:8000/v1", "offline_stand_in": False}


def test_rows_by_scope_base_and_live():
    summaries = [("round-0", "cot", REPLAY), ("round-1", "cot", POOL), ("round-2", "cot", POOL)]
    r0 = row_provenance(summaries, {"method": "fdd-r0", "scope": "round-0"})
    assert r0 == {"teacher": {"cot": REPLAY["teacher"]}, "offline_stand_in": True,
                  "teacher_note": f"offline stand-in, not a live teacher: cot: {REPLAY['teacher']}"}
    r2 = row_provenance(summaries, {"method": "fdd-r2", "scope": "round-2"})
    assert r2["teacher"]["cot"] == f"{REPLAY['teacher']}; then {POOL['teacher']}"  # rounds 0-2, each told once
    assert r2["teacher_note"].endswith(f"cot: {REPLAY['teacher']} / {POOL['offline_stand_in']}")
    for name in ("base", "base:cot", "base+calc"):
        assert row_provenance(summaries, {"method": name}) == {"teacher": None, "offline_stand_in": False,
                                                               "teacher_note": UNTRAINED}
    live = row_provenance([(None, "cot", LIVE), (None, "pot", REPLAY)], {"method": "etd"})
    assert live["offline_stand_in"] and live["teacher"]["cot"] == LIVE["teacher"] and "pot:" in live["teacher_note"]
    only_live = row_provenance([(None, "l2m", LIVE)], {"method": "siked-i0", "scope": "iteration-0"})
    assert only_live == {"teacher": {"l2m": LIVE["teacher"]}, "offline_stand_in": False, "teacher_note": "live teacher"}


def test_with_provenance_reads_the_run_folder(tmp_path):
    for scope, summary in (("round-0", REPLAY), ("round-1", POOL)):
        f = tmp_path / scope / "teach" / "cot" / "summary.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps(summary))
    rows = with_provenance(tmp_path, [{"method": "fdd-r0", "scope": "round-0"},
                                      {"method": "fdd-r1", "scope": "round-1"},
                                      {"method": "base", "teacher": "kept as the row says"}])
    assert [r["offline_stand_in"] for r in rows] == [True, True, False]
    assert "pool" not in rows[0]["teacher"]["cot"] and "pool" in rows[1]["teacher"]["cot"]
    assert rows[2]["teacher"] == "kept as the row says"
    assert [s for s, _, _ in teach_summaries(tmp_path)] == ["round-0", "round-1"]


def test_every_recorded_row_says_where_its_training_data_came_from():
    acc = json.loads((ROOT / "benchmarks" / "results" / "accuracy.json").read_text())
    base = json.loads((ROOT / "benchmarks" / "results" / "base_accuracy.json").read_text())
    rows = acc["rows"] + list(base["runs"].values())
    assert rows and all(set(FIELDS) <= set(r) for r in rows)
    for r in rows:
        if r.get("method", "base") == "base":
            assert (r["teacher"], r["offline_stand_in"], r["teacher_note"]) == (None, False, UNTRAINED)
        else:  # every method of this CPU's table learned from offline stand-ins, each named
            assert r["offline_stand_in"] is True and r["teacher"] and "unknown" not in json.dumps(r["teacher"])


def _backfill():
    spec = importlib.util.spec_from_file_location("backfill", ROOT / "benchmarks" / "backfill_provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Stop(Exception):
    pass


def _stop(*args, **kwargs):
    raise _Stop


@pytest.mark.parametrize("recipe, overrides", [("etd.yaml", []), ("lorid.yaml", []), ("kpdd.yaml", ["solution=pot"]),
                                               ("siked.yaml", ["strategies=[cot, pot]"])])
def test_the_backfill_rebuilds_what_the_teach_stages_write(recipe, overrides, tmp_path, data_dir, monkeypatch):
    """The recipe itself runs (offline teachers, 3 problems) until its first training; its teach summaries are
    what the back-fill rebuilds from the recipe file alone."""
    cfg = load_config(ROOT / "recipes" / recipe, [f"runs_dir={tmp_path}", f"data.data_dir={data_dir}",
                                                  "data.train.limit=3", *overrides])
    run = Run.open(cfg.run_dir, dump_config(cfg), ["test"])
    monkeypatch.setattr(steps, "train", _stop)
    with pytest.raises(_Stop):
        METHODS[cfg.method].recipe(cfg, run)
    real = sorted((s, f, x["teacher"], x["offline_stand_in"]) for s, f, x in teach_summaries(run.dir))
    rebuilt = sorted((s, f, x["teacher"], x["offline_stand_in"]) for s, f, x in _backfill().summaries(cfg))
    assert real == rebuilt and real
