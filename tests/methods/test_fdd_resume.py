"""FDD end to end at a tiny budget against the scripted OpenAI-compatible server: two rounds (0 and 1),
the teacher writes exactly the scripted problems, one of them a paraphrase of a GSM8K test question
(dropped by decontamination), one labelled by the teacher's majority, one left unlabelled (a tie).
The run is killed in round 1 while teacher requests are in flight and resumed: no request answered
before the kill is sent again (counted server-side), and round 0 is not redone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fake_server import FakeServer
from killing import kill_when
from mathdistill.data import load
from mathdistill.teacher.generate import SYSTEM

ROOT = Path(__file__).resolve().parents[2]
JANET_PARAPHRASE = ("Every day Janet's ducks lay 16 eggs. She eats 3 of them for breakfast each morning and uses 4 to "
                    "bake muffins for her friends. The rest she sells at the farmers' market for $2 per fresh duck egg. "
                    "How many dollars does she make at the farmers' market each day?")
#: what the teacher writes for seed problem i, and how it answers the problem it wrote (sample k)
WRITTEN = ["Tom has 12 apples and buys 5 bags with 3 apples in each bag. How many apples does he have now?",
           JANET_PARAPHRASE,
           "A farmer has 9 cows, buys 4 more and sells 2 of them. How many cows does the farmer have?",
           None]
ANSWERS = {WRITTEN[0]: ["27", "27", "27"], WRITTEN[2]: ["13", "14", "15"]}


def teacher(seeds):
    def reply(body: dict) -> str:
        user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        if body["messages"][0]["content"] == SYSTEM:  # "write a new problem like this one"
            i = next(i for i, p in enumerate(seeds) if p.question in user)
            return f"Problem: {WRITTEN[i]}" if WRITTEN[i] else "No."
        k = body.get("seed", 0)
        if user in ANSWERS:
            return f"Step {k}: we work it out. The answer is {ANSWERS[user][k]}."
        gold = next(p.answer for p in seeds if p.question.strip() == user)
        return f"Working it out step by step. The answer is {gold}."
    return reply


def recipe(url: str) -> str:
    live = f"{{kind: openai, url: '{url}', model: fake-teacher, max_retries: 0}}"
    return f"""
name: fdd-tiny
method: fdd
thoughts: [cot]
rounds: 1
paths_per_problem: 1
retrain_from: previous
data:
  train: {{dataset: gsm8k, split: train, limit: 4}}
  eval: [{{dataset: gsm8k, split: test, limit: 2}}]
teach: {{default: {live}}}
generate:
  teacher: {{kind: openai, url: '{url}', model: fake-teacher, max_retries: 0, temperature: 0.8}}
  per_problem: 1
  label_samples: 3
  label_threshold: 0.6
train: {{max_steps: 1, batch_size: 2, max_seq_len: 256}}
eval: {{max_new_tokens: 16, batch_size: 4}}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fdd_two_rounds_killed_in_round_1_resumes_without_resending(tmp_path, data_dir, student_path):
    seeds = load("gsm8k", "train", data_dir)[:4]
    server = FakeServer(reply=teacher(seeds), hold_after=6).start()  # 4 seed rationales + 2 of 4 writes, then hold
    try:
        (tmp_path / "fdd.yaml").write_text(recipe(server.url))
        cmd = [sys.executable, "-m", "mathdistill.cli", "run", str(tmp_path / "fdd.yaml"), f"runs_dir={tmp_path / 'runs'}"]
        env = {**os.environ, "MATHDISTILL_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
        # settle: the answered replies reach the client's cache
        kill_when(cmd, lambda: server.held.is_set() and server.answered >= 6, env, tmp_path, settle=1.0)
        server.drop_held()
        run_dir = tmp_path / "runs" / "fdd-tiny"
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["stages"]["round-1/generate"]["status"] == "running"  # killed in round 1, mid-generation
        assert manifest["stages"]["round-0/train"]["status"] == "done"
        answered_before = {e["key"] for e in server.log if e["usage"]}
        assert len(answered_before) == 6

        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        server.stop()

    # no request answered twice: the 6 answered before the kill came from the reply cache
    answered = Counter(e["key"] for e in server.log if e["usage"])
    assert max(answered.values()) == 1
    assert len(answered) == 4 + 4 + 2 * 3  # seed rationales, writes, 3 solutions of each of the 2 clean problems
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["stages"]["round-0/train"]["attempts"] == 1 and manifest["stages"]["round-1/generate"]["attempts"] == 2
    assert manifest["stages"]["round-1/init"]["status"] == "done"  # retrain_from: previous
    assert [manifest["scopes"][s]["status"] for s in ("round-0", "round-1")] == ["done", "done"]

    gen = json.loads((run_dir / "stages" / "round-1" / "generate.json").read_text())["value"]
    assert [c["question"] for c in gen["candidates"]] == [WRITTEN[0], WRITTEN[1], WRITTEN[2]]  # exactly the scripted ones
    assert [c["contaminated"] for c in gen["candidates"]] == [False, True, False]
    assert gen["candidates"][1]["nearest"]["question"].startswith("Janet")
    assert gen["counts"] == {"asked": 4, "generated": 3, "repeats": 0, "contaminated": 1, "clean": 2}
    labels = json.loads((run_dir / "stages" / "round-1" / "label.json").read_text())["value"]
    assert [(x["question"], x["label"], x["reason"]) for x in labels] == [(WRITTEN[0], "27", None),
                                                                          (WRITTEN[2], None, "tie")]
    data0 = json.loads((run_dir / "round-0" / "data" / "summary.json").read_text())
    data1 = json.loads((run_dir / "round-1" / "data" / "summary.json").read_text())
    assert data0["examples"] == 4 and data1["examples"] == 4 + 3  # + the 3 agreeing (distinct) rationales

    results = json.loads((run_dir / "results.json").read_text())
    assert [(r["method"], r["scope"], r["n"]) for r in results["rows"]] == [("fdd-r0", "round-0", 2), ("fdd-r1", "round-1", 2)]
    assert all(r["train_steps"] == 1 for r in results["rows"])
    titles = [t["title"] for t in results["tables"]]
    assert any(t.startswith("FDD rounds") for t in titles) and any("decontamination" in t for t in titles)
    rounds = next(t for t in results["tables"] if t["title"].startswith("FDD rounds"))["rows"]
    assert rounds[1]["easy"] + rounds[1]["hard"] == 4 and rounds[1]["labelled"] == 1 and rounds[1]["examples"] == 7
    assert (run_dir / results["figures"][0]["file"]).exists()
    assert not any("pool teacher" in n for n in results["notes"])  # a live teacher: no simulation to announce
    assert "FDD rounds" in (run_dir / "report" / "index.html").read_text()
    assert list((run_dir / "report").glob("scopes-*.png"))  # the report's accuracy-per-round plot
