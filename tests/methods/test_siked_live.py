"""SIKeD with the paper's strategies [cot, pot, l2m] and a live teacher (the scripted OpenAI-compatible server,
whose replies are exact, parseable CoT, PoT and L2M rationales; one L2M reply has no sub-question), end to end
at a tiny budget: killed while the teacher answers, re-run, it resumes without asking a finished request again
(counted server-side), drops the malformed L2M rationale, mixes per (problem, strategy) as the official code
does, and reports alpha per strategy and a forced row for every strategy, L2M included."""

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

ROOT = Path(__file__).resolve().parents[2]
N = 3  # training problems
TINY = ["strategies=[cot, pot, l2m]", "iterations=1", f"data.train.limit={N}", "sample.k=1", "sample.max_new_tokens=16",
        "sample.batch_size=3", "train.max_steps=1", "train.batch_size=4", "train.max_seq_len=256",
        "data.eval=[{dataset: gsm8k, split: test, limit: 2}]", "eval.max_new_tokens=16", "eval.batch_size=2"]


def teacher(problems):
    """Replies by the format the system prompt asks for, always right (the problem's gold answer); the last
    problem's L2M reply has the right answer but no sub-question (the structural check must drop it)."""
    from mathdistill import thoughts
    from mathdistill.teacher.backends import normalize_question

    formats = {thoughts.get(t).system: t for t in ("cot", "pot", "l2m")}
    by_question = {normalize_question(p.question): (i, p.answer) for i, p in enumerate(problems)}

    def reply(body: dict) -> str:
        fmt = formats[body["messages"][0]["content"]]
        i, gold = by_question[normalize_question(body["messages"][-1]["content"])]
        if fmt == "pot":
            return f"total = {gold}\nans = total"
        if fmt == "l2m" and i < len(problems) - 1:
            return (f"Sub-question 1: What does the problem ask for?\nAnswer 1: It comes to {gold}.\n"
                    f"The answer is {gold}.")
        return f"We put the numbers together.\nThe answer is {gold}."

    return reply


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_siked_with_a_live_l2m_teacher_killed_and_resumed(tmp_path, data_dir, student_path):
    from mathdistill.data import load

    problems = load("gsm8k", "train", data_dir=data_dir)[:N]
    server = FakeServer(reply=teacher(problems), hold_after=N + 1).start()  # every CoT reply, one PoT, then hold
    try:
        live = f"{{kind: openai, url: '{server.url}', model: fake-teacher, max_retries: 0}}"
        cmd = [sys.executable, "-m", "mathdistill.cli", "run", str(ROOT / "recipes" / "siked.yaml"), "name=live",
               f"runs_dir={tmp_path / 'runs'}", *TINY, "teach.per_thought={}", f"teach.default={live}"]
        env = {**os.environ, "MATHDISTILL_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}
        # settle: the answered replies reach the client's reply cache before the kill
        kill_when(cmd, lambda: server.held.is_set() and server.answered >= N + 1, env, tmp_path, settle=1.0)
        server.drop_held()
        run_dir = tmp_path / "runs" / "live"
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["stages"]["teach-cot"]["status"] == "done"
        assert manifest["stages"]["teach-pot"]["status"] == "running"  # killed while the teacher answered PoT
        assert "teach-l2m" not in manifest["stages"]
        answered_before = {e["key"] for e in server.log if e["usage"]}
        assert len(answered_before) == N + 1

        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        server.stop()
    log = second.stdout + second.stderr
    assert "stage teach-cot: done earlier, skipped" in log
    # no finished request sent again: one answered request per problem and strategy over both runs
    answered = Counter(e["key"] for e in server.log if e["usage"])
    assert max(answered.values()) == 1 and len(answered) == 3 * N
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["stages"]["teach-pot"]["attempts"] == 2

    # the teacher's L2M rationale without a sub-question is right but not kept
    l2m = _jsonl(run_dir / "teach" / "l2m" / "rationales.jsonl")
    assert [(r["correct"], r["kept"]) for r in l2m] == [(True, True)] * (N - 1) + [(True, False)]
    assert l2m[-1]["error"] == "no sub-question / answer pair"
    for t in ("cot", "pot", "l2m"):
        s = json.loads((run_dir / "teach" / t / "summary.json").read_text())
        assert s["teacher"].startswith("openai-compatible: fake-teacher") and not s["offline_stand_in"]
        assert s["kept"] == (N - 1 if t == "l2m" else N)

    # iteration 1 mixed per (problem, strategy): a teacher row of s for p exactly where the student kept no
    # sample of p in s (and the teacher has a kept one)
    it1 = run_dir / "iteration-1"
    solved = {(r["problem_id"], r["thought"]) for r in _jsonl(it1 / "data" / "self.jsonl")}
    kept = {(r["problem_id"], t) for t in ("cot", "pot", "l2m")
            for r in _jsonl(run_dir / "teach" / t / "rationales.jsonl") if r["kept"]}
    rows = _jsonl(it1 / "data" / "train.jsonl")
    assert sorted((r["problem_id"], r["thought"]) for r in rows if r["origin"] == "teacher") == sorted(kept - solved)
    assert all(r["completion"].startswith(("[CoT]\n", "[PoT]\n", "[L2M]\n")) for r in rows)
    data = json.loads((it1 / "data" / "summary.json").read_text())
    assert data["mixing"] == "per-strategy" and set(data["per_strategy"]) == {"cot", "pot", "l2m"}
    for c in data["per_strategy"].values():
        assert c["alpha"] == pytest.approx(c["teacher"] / (c["self"] + c["teacher"]))
    samples = _jsonl(it1 / "sample" / "gsm8k-train" / "l2m" / "samples.jsonl")
    assert len(samples) == N and all(o.startswith("[L2M]\n") for r in samples for o in r["outputs"])

    results = json.loads((run_dir / "results.json").read_text())
    by = {r["method"]: r for r in results["rows"]}
    assert list(by) == ["siked-i0", "siked-i1", "siked-i1:cot", "siked-i1:pot", "siked-i1:l2m"]
    assert by["siked-i1"]["alpha"] == pytest.approx(data["alpha"]) and by["siked-i1"]["mixing"] == "per-strategy"
    assert by["siked-i1"]["alpha_per_strategy"] == {t: c["alpha"] for t, c in data["per_strategy"].items()}
    assert by["siked-i1:l2m"]["strategies"]["l2m"] == 2  # forced: its tag prefilled
    notes = results["notes"]
    assert not any(n.startswith(("Offline stand-ins", "SIKeD strategies here", "SIKeD data rule")) for n in notes)
