"""Run folders: the manifest records every stage and scope; a crashed stage is recorded and redone,
never mistaken for finished work; another config is refused by key; --restart really starts over;
secrets never reach the folder. No model is loaded: the recipes here are registered test methods."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from mathdistill import cli
from mathdistill.io import InputError
from mathdistill.methods.config import RecipeConfig
from mathdistill.methods.registry import METHODS, Method, load_config, register
from mathdistill.methods.run import Run, StageFailed


def open_run(folder: Path, **config) -> Run:
    return Run.open(folder, {"name": folder.name, "method": "t", **config}, ["test"])


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_crashed_stage_is_recorded_and_redone(tmp_path):
    folder = tmp_path / "r"
    run = open_run(folder)
    assert run.stage("first", lambda: {"rows": [1, 2]}) == {"rows": [1, 2]}

    def crash():
        (run.path("half-written.txt")).write_text("partial")
        raise RuntimeError("the GPU caught fire")

    with pytest.raises(StageFailed) as info:
        run.stage("second", crash)
    msg = str(info.value)
    assert "stage second failed: RuntimeError: the GPU caught fire" in msg
    assert str(folder / "logs" / "second.log") in msg and "re-run the same command" in msg
    m = manifest(folder)
    assert m["status"] == "failed"
    assert m["stages"]["second"]["status"] == "failed" and m["stages"]["second"]["error"].startswith("RuntimeError")
    assert "Traceback" in (folder / "logs" / "second.log").read_text()
    assert not run.done("second") and run.done("first")

    run = open_run(folder)  # the next run: the finished stage comes back from disk, the crashed one runs again
    calls = []
    assert run.stage("first", lambda: calls.append("first")) == {"rows": [1, 2]}
    assert run.stage("second", lambda: calls.append("second") or 7) == 7
    run.finish()
    m = manifest(folder)
    assert calls == ["second"]
    assert m["stages"]["second"] | {"status": "done", "attempts": 2, "error": None} == m["stages"]["second"]
    assert m["status"] == "finished" and m["finished"] and len(m["resumed"]) == 1


def test_scopes_resume_on_their_own(tmp_path):
    run = open_run(tmp_path / "r")
    r0 = run.scope("round-0")
    r0.stage("train", lambda: "w0")
    r0.close_scope()
    r1 = run.scope("round-1")
    with pytest.raises(StageFailed):
        r1.stage("train", lambda: 1 / 0)
    m = manifest(tmp_path / "r")
    assert list(m["stages"]) == ["round-0/train", "round-1/train"]
    assert m["scopes"]["round-0"]["status"] == "done" and m["scopes"]["round-1"]["status"] == "running"
    assert r1.path("x") == tmp_path / "r" / "round-1" / "x"
    run = open_run(tmp_path / "r")
    assert run.scope("round-0").stage("train", lambda: "again") == "w0"
    assert run.scope("round-1").stage("train", lambda: "w1") == "w1"


def test_another_config_is_refused_naming_the_keys(tmp_path):
    open_run(tmp_path / "r", train={"lr": 0.0002, "epochs": 1}, seed=0)
    with pytest.raises(InputError) as info:
        open_run(tmp_path / "r", train={"lr": 0.0003, "epochs": 1}, seed=1)
    assert "train.lr: 0.0002 -> 0.0003" in str(info.value) and "seed: 0 -> 1" in str(info.value)
    assert "--restart" in str(info.value)


def test_a_key_added_since_the_run_began_is_no_change_at_its_default(tmp_path):
    """A run folder written before a config key existed resumes when the key has its default value,
    and is refused (naming the key) when it has another."""
    import yaml

    from mathdistill.methods.config import field_defaults

    cfg = load_config(None, [f"runs_dir={tmp_path}"], base={"name": "old", "method": "cot"})
    defaults = field_defaults(type(cfg))
    assert defaults["eval"]["loop_stop"] is True and "name" not in defaults
    Run.open(cfg.run_dir, cfg.model_dump(mode="json"), ["test"], defaults=defaults)
    old = yaml.safe_load((cfg.run_dir / "config.yaml").read_text())
    del old["eval"]["loop_stop"]  # as written by a version without the setting
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(old))
    Run.open(cfg.run_dir, cfg.model_dump(mode="json"), ["test"], defaults=defaults)  # resumes
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(old))
    changed = load_config(None, [f"runs_dir={tmp_path}", "eval.loop_stop=false"], base={"name": "old", "method": "cot"})
    with pytest.raises(InputError, match=r"eval.loop_stop: None -> False"):
        Run.open(cfg.run_dir, changed.model_dump(mode="json"), ["test"], defaults=defaults)
    with pytest.raises(InputError, match=r"eval.loop_stop: None -> True"):  # without defaults: strict
        Run.open(cfg.run_dir, cfg.model_dump(mode="json"), ["test"])


def test_restart_clears_everything_but_the_teacher_caches(tmp_path):
    run = open_run(tmp_path / "r")
    run.stage("teach-cot", lambda: None)
    (run.path("teach", "cot")).mkdir(parents=True)
    (run.path("teach", "cot", "teacher_cache.sqlite")).write_bytes(b"paid for")
    (run.path("teach", "cot", "rationales.jsonl")).write_text("{}\n")
    (run.path("train", "student")).mkdir(parents=True)
    (run.path("train", "student", "adapter_model.safetensors")).write_bytes(b"old weights")
    run = Run.open(tmp_path / "r", {"name": "r", "method": "t", "seed": 5}, ["test"], restart=True)
    left = sorted(p.relative_to(run.dir).as_posix() for p in run.dir.rglob("*") if p.is_file())
    assert left == ["config.yaml", "manifest.json", "teach/cot/teacher_cache.sqlite"]
    assert not run.done("teach-cot") and manifest(run.dir)["stages"] == {}


def test_secrets_never_reach_the_run_folder(tmp_path):
    cfg = load_config(None, [f"runs_dir={tmp_path}"], base={
        "name": "s", "method": "cot",
        "teach": {"default": {"kind": "openai", "url": "https://user:sk-pass-123@example.org/v1?api-key=sk-q-456",
                              "model": "m"}}})
    command = ["mathdistill", "run", "r.yaml", "teach.default.url=https://user:sk-pass-123@example.org/v1"]
    Run.open(cfg.run_dir, cfg.model_dump(mode="json"), command)  # Run.open redacts what it writes
    for f in cfg.run_dir.rglob("*"):
        if f.is_file():
            text = f.read_text()
            assert "sk-pass-123" not in text and "sk-q-456" not in text, f
    assert "example.org" in (cfg.run_dir / "config.yaml").read_text()


def _failing_recipe(cfg, run):
    run.stage("prepare", lambda: None)
    run.stage("explode", lambda: (_ for _ in ()).throw(ValueError("no such thing as a free lunch")))
    return []


def test_cli_reports_a_crashed_stage_and_how_to_go_on(tmp_path, monkeypatch, capsys, data_dir):
    register(Method("explodes", RecipeConfig, _failing_recipe, "a test method whose second stage raises"))
    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "boom", "method": "explodes", "runs_dir": str(tmp_path),
                                      "data": {"eval": [{"dataset": "gsm8k", "split": "test", "limit": 2}]}}))
    monkeypatch.setattr(sys, "argv", ["mathdistill", "run", str(recipe)])
    try:
        with pytest.raises(SystemExit) as info:
            cli.main()
    finally:
        METHODS.pop("explodes")
    err = capsys.readouterr().err
    assert info.value.code == 1 and "Traceback" not in err
    assert "stage explode failed: ValueError: no such thing as a free lunch" in err
    assert "logs/explode.log" in err and "re-run the same command" in err
    m = manifest(tmp_path / "boom")
    assert m["stages"]["prepare"]["status"] == "done" and m["stages"]["explode"]["status"] == "failed"
    assert not (tmp_path / "boom" / "results.json").exists()
