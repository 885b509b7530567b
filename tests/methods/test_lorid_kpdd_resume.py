"""LoRID and KPDD end to end at a tiny budget against the scripted OpenAI-compatible server (a live
teacher whose replies are valid knowledge / key points + solutions): killed in the middle of training,
re-run, they resume without repeating a teacher request (counted server-side) and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_server import FakeServer
from killing import kill_when, has_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.train.limit=6", "train.max_steps=3", "train.batch_size=2", "train.max_seq_len=256", "train.save_steps=1",
        "data.eval=[{dataset: gsm8k, split: test, limit: 3}]", "eval.max_new_tokens=16", "eval.batch_size=4", "plans=null"]
POINTS = "Key points:\n- The quantities the problem gives.\n- How they combine."


def teacher(data_dir):
    """Replies by prompt: knowledge, key points + solution (a program for a PoT request), or a CoT;
    always right, from the problem's gold answer."""
    from mathdistill.data import load
    from mathdistill.teacher.backends import normalize_question
    from mathdistill.thoughts.keypoints import core_question

    gold = {normalize_question(p.question): p for p in load("gsm8k", "train", data_dir=data_dir)[:6]}

    def reply(body):
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if "general knowledge" in system:
            return "Knowledge:\n- A total is the sum of its parts.\n- \"Half as many\" means dividing by 2."
        p = gold[normalize_question(user)]
        if "Core question" in system:
            solution = f"ans = {p.answer}" if "Python" in system else f"We combine them.\nThe answer is {p.answer}."
            return f"Core question: {core_question(p.question)}\n{POINTS}\nSolution:\n{solution}"
        return f"We work it out step by step.\nThe answer is {p.answer}."

    return reply


def run_killed_and_resumed(tmp_path, data_dir, recipe: str, overrides: list[str], adapter: str, teach: list[str]):
    """(run folder, server, second run's log): killed once `adapter` has a checkpoint, then resumed."""
    server = FakeServer(reply=teacher(data_dir)).start()
    try:
        live = f"{{kind: openai, url: '{server.url}', model: fake-teacher}}"
        cmd = [sys.executable, "-m", "mathdistill.cli", "run", str(ROOT / "recipes" / recipe), "name=t",
               f"runs_dir={tmp_path / 'runs'}", *TINY, *overrides, "teach.per_thought={}", f"teach.default={live}"]
        env = {**os.environ, "MATHDISTILL_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
        run_dir = tmp_path / "runs" / "t"
        kill_when(cmd, lambda: has_checkpoint(run_dir / "train" / adapter / "checkpoints"), env, tmp_path)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert [s for s in manifest["stages"] if s.startswith("teach-")] == [f"teach-{t}" for t in teach]
        assert all(manifest["stages"][f"teach-{t}"]["status"] == "done" for t in teach)
        sent = [e["key"] for e in server.log]
        assert sent and len(sent) == len(set(sent)) == 6 * len(teach)  # one request per problem and format
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stdout + second.stderr
        assert [e["key"] for e in server.log] == sent  # nothing asked again
    finally:
        server.stop()
    summary = json.loads((run_dir / "train" / adapter / "train_summary.json").read_text())
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 1 and summary["steps"] == 3
    for t in teach:
        s = json.loads((run_dir / "teach" / t / "summary.json").read_text())
        assert s["kept"] == 6 and not s["offline_stand_in"] and s["teacher"].startswith("openai-compatible: fake-teacher")
    assert (run_dir / "report" / "index.html").exists()
    return run_dir, json.loads((run_dir / "results.json").read_text()), second.stdout + second.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lorid_killed_mid_training_resumes_and_reports(tmp_path, data_dir, student_path):
    run_dir, results, log = run_killed_and_resumed(
        tmp_path, data_dir, "lorid.yaml", ["loop.max_iterations=2", "loop.knowledge_max_new_tokens=16"], "ir",
        ["cot", "knowledge"])
    assert "stage teach-knowledge: done earlier, skipped" in log
    rows = {r["method"]: r for r in results["rows"]}
    assert list(rows) == ["lorid", "lorid:any", "lorid:ir", "lorid:dr"]
    assert all(r["n"] == 3 and r["dataset"] == "gsm8k" and len(r["ci95"]) == 2 for r in rows.values())
    assert rows["lorid"]["train_steps"] == 9 and rows["lorid:ir"]["train_steps"] == 3 and rows["lorid:dr"]["train_steps"] == 6
    assert 1 <= rows["lorid"]["mean_iterations"] <= 2 and 0 <= rows["lorid"]["resolved"] <= 1
    assert rows["lorid"]["preset"] == rows["lorid:any"]["preset"] == "paper"  # the recipe's default
    assert rows["lorid"]["scoring"].startswith("one answer") and rows["lorid:any"]["scoring"].startswith("any agreed")
    assert rows["lorid:any"]["accuracy"] == rows["lorid"]["accuracy_any"] and rows["lorid:any"]["variant"] == "loop"
    (table,) = results["tables"]
    assert [r["budget"] for r in table["rows"]] == [1, 2] and table["rows"][0]["problems sampled"] == 3
    assert "accuracy (any agreed answer)" in table["rows"][0] and "preset paper" in table["title"]
    (figure,) = results["figures"]
    assert (run_dir / figure["file"]).is_file()
    assert any("knowledge items" in n and "quote a number" in n for n in results["notes"])
    metrics = json.loads((run_dir / "eval" / "gsm8k" / "loop" / "metrics.json").read_text())
    assert metrics["sampled"][0] == 3 and len(metrics["budgets"]) == 2 and metrics["fallback"] == "abstain"
    loop = [json.loads(x) for x in (run_dir / "eval" / "gsm8k" / "loop" / "predictions.jsonl").read_text().splitlines()]
    # the paper's protocol: the first iteration is sampled (its own folder, T 1.5), not the greedy rows;
    # only the unresolved went on to iteration 2; an unresolved problem has no answer (counted wrong)
    samples = run_dir / "sample" / "gsm8k-test"
    ir1 = [json.loads(x) for x in (samples / "iteration-1" / "ir" / "samples.jsonl").read_text().splitlines()]
    assert [r["ir_outputs"][0] for r in loop] == [r["outputs"][0] for r in ir1]
    assert (samples / "greedy" / "ir" / "samples.jsonl").exists()  # lorid:ir's own greedy generation
    assert metrics["sampled"][1] == sum(r["resolved_at"] != 1 for r in loop)
    assert all(len(r["ir"]) == (1 if r["resolved_at"] == 1 else 2) for r in loop)
    assert all(r["prediction"] is None and not r["correct_any"] for r in loop if not r["resolved"])
    assert sum(r["correct_any"] for r in loop) == metrics["correct_any"] >= 0
    # the adapters are standard PEFT folders: any one loads on the base with plain peft
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(student_path)
    model = PeftModel.from_pretrained(base, str(run_dir / "train" / "kg"))
    assert list(model.peft_config) == ["default"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kpdd_killed_mid_training_resumes_and_reports(tmp_path, data_dir):
    run_dir, results, log = run_killed_and_resumed(tmp_path, data_dir, "kpdd.yaml", ["solution=pot"], "student",
                                                   ["keypoints"])
    kept = [json.loads(x) for x in (run_dir / "teach" / "keypoints" / "rationales.jsonl").read_text().splitlines()]
    assert all(r["kept"] and "Solution:\nans = " in r["text"] and r["correct"] for r in kept)  # programs ran, verified
    train_rows = [json.loads(x) for x in (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    assert len(train_rows) == 6 and all("[KeyPoints]" in r["prompt"] and r["completion"].startswith("Core question:")
                                        for r in train_rows)
    assert [(r["method"], r["variant"], r["n"], r["train_steps"]) for r in results["rows"]] == [("kpdd-pot", "keypoints", 3, 3)]
    assert not any("stand-in" in n for n in results["notes"])  # a live teacher: nothing stands in
    assert "stage teach-keypoints: done earlier, skipped" in log
