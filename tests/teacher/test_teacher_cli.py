"""`mathdistill teach` end to end as a subprocess: contract, resume, SIGKILL mid-run, secrets, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathdistill.data import load

N = 12  # problems
PRICES = ["--price-prompt", "2.5", "--price-completion", "10"]


def teach_cmd(url: str, out: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mathdistill.cli", "teach", "--dataset", "gsm8k", "--split", "train",
            "--limit", str(N), "--thought", "cot", "--teacher-url", url, "--teacher-model", "fake-teacher",
            "--concurrency", "3", "--timeout", "10", "--out", str(out), "--data-dir", str(data_dir),
            "--no-progress", *PRICES, *extra]


def gsm8k_teacher(data_dir):
    """A fake teacher that is right on two problems out of three."""
    golds = {p.question: (i, p.answer) for i, p in enumerate(load("gsm8k", "train", data_dir=data_dir, limit=N))}

    def reply(body):
        question = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        i, gold = golds[question]
        answer = gold if i % 3 else f"{gold}1"
        return f"Step one. Step two, seed {body.get('seed')}.\nThe answer is {answer}."

    return reply


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rationales.jsonl").read_text().splitlines()]


def summary(out: Path) -> dict:
    return json.loads((out / "teach_summary.json").read_text())


def run_ok(cmd, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_teach_writes_the_contract_rows_and_resumes(fake_server, data_dir, tmp_path):
    server = fake_server(reply=gsm8k_teacher(data_dir))
    out = tmp_path / "out"
    proc = run_ok(teach_cmd(server.url, out, data_dir, "--samples", "2", "--temperature", "0.9"))
    rows = read_rows(out)
    contract = ["problem_id", "question", "gold", "thought", "sample", "text", "prediction", "correct", "finish_reason", "usage"]
    assert len(rows) == 2 * N and all(set(contract) <= set(r) for r in rows)
    assert sorted((r["problem_id"], r["sample"]) for r in rows) == sorted({(r["problem_id"], k) for r in rows for k in (0, 1)})
    assert sum(r["correct"] for r in rows) == 2 * 8  # problems 1, 2, 4, 5, ... are answered right
    assert all(r["prediction"] is not None and r["finish_reason"] == "stop" for r in rows)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["requests"] == server.count() == 2 * N and last["cache_hits"] == 0
    assert summary(out)["per_thought"]["cot"]["yield"] == pytest.approx(16 / 24, abs=1e-4)
    config = json.loads((out / "teach_config.json").read_text())
    assert config["teacher"]["url"] == server.url and config["samples"] == 2

    again = run_ok(teach_cmd(server.url, out, data_dir, "--samples", "2", "--temperature", "0.9"))
    assert server.count() == 2 * N  # nothing sent twice
    assert json.loads(again.stdout.strip().splitlines()[-1])["cache_hits"] == 2 * N
    assert [r["text"] for r in read_rows(out)] == [r["text"] for r in rows]


def _cache_rows(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_mid_run_then_rerun_loses_and_repays_nothing(fake_server, data_dir, tmp_path):
    reply = gsm8k_teacher(data_dir)
    # reference: an uninterrupted run against its own server
    ref_server = fake_server(reply=reply, latency=0.02)
    ref = tmp_path / "ref"
    run_ok(teach_cmd(ref_server.url, ref, data_dir))

    # the run to kill: the server answers 5 requests, then holds every further one unanswered
    server = fake_server(reply=reply, latency=0.02, hold_after=5)
    out = tmp_path / "killed"
    proc = subprocess.Popen(teach_cmd(server.url, out, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert server.held.wait(60), "the teach process never got past 5 requests"
        deadline = time.time() + 20
        while _cache_rows(out / "teacher_cache.sqlite") < 5 and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "teach finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "rationales.jsonl").exists()  # outputs are written whole or not at all
    first_keys = {e["key"] for e in server.log if e["usage"]}  # requests the server completed
    assert len(first_keys) == 5 and server.count() > 5  # some were in flight when it died
    server.drop_held()

    log_before = len(server.log)
    run_ok(teach_cmd(server.url, out, data_dir))
    rerun = server.log[log_before:]
    assert not first_keys & {e["key"] for e in rerun}  # no completed request sent again
    assert len(rerun) == N - 5 and all(e["usage"] for e in rerun)
    completed = [e["key"] for e in server.log if e["usage"]]
    assert len(completed) == len(set(completed)) == N

    rows = read_rows(out)
    assert sorted(r["problem_id"] for r in rows) == sorted({r["problem_id"] for r in rows}) and len(rows) == N
    strip = lambda rs: [{k: v for k, v in r.items() if k != "cached"} for r in rs]
    assert strip(rows) == strip(read_rows(ref))
    s, s_ref = summary(out), summary(ref)
    assert s["cache_hits"] == 5 and s["requests"] == N - 5
    assert s["cost_total"] == pytest.approx(s_ref["cost_total"]) and s_ref["cost_total"] > 0
    # what the servers billed: the killed run + its re-run == the uninterrupted run
    assert server.usage_total() == ref_server.usage_total()


def test_key_comes_from_env_and_is_never_written(fake_server, data_dir, tmp_path):
    secret = "sk-cli-SECRET-91d0b7"
    server = fake_server(reply=gsm8k_teacher(data_dir))
    out = tmp_path / "out"
    env = dict(os.environ, MD_CLI_TEACHER_KEY=secret)
    cmd = teach_cmd(server.url, out, data_dir, "--teacher-key-env", "MD_CLI_TEACHER_KEY", "--header", "X-Team: math")
    proc = run_ok(cmd, env=env)
    assert all(e["headers"]["authorization"] == f"Bearer {secret}" and e["headers"]["x-team"] == "math" for e in server.log)
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
    config = json.loads((out / "teach_config.json").read_text())
    assert config["teacher"]["key_env"] == "MD_CLI_TEACHER_KEY" and config["teacher"]["headers"] == {"X-Team": "<redacted>"}

    env.pop("MD_CLI_TEACHER_KEY")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "MD_CLI_TEACHER_KEY" in proc.stderr


def test_replay_and_knowledge_from_the_command_line(fake_server, data_dir, tmp_path):
    recorded = data_dir / "teacher" / "gsm8k_train_llama3-70b_cot.json"
    out = tmp_path / "replay"
    run_ok([sys.executable, "-m", "mathdistill.cli", "teach", "--dataset", "gsm8k", "--limit", "4", "--thought", "cot",
            "--replay", str(recorded), "--out", str(out), "--data-dir", str(data_dir), "--no-progress"])
    rows = read_rows(out)
    assert len(rows) == 4 and sum(r["correct"] for r in rows) >= 3 and all(r["text"] for r in rows)

    # knowledge: the teacher sees the gold solution as context; output validated, not answer-checked
    knowledge = "Knowledge:\n- Half as many as a number means the number divided by 2.\n- A total is a sum of parts."
    server = fake_server(reply=lambda body: knowledge)
    out = tmp_path / "knowledge"
    run_ok([sys.executable, "-m", "mathdistill.cli", "teach", "--dataset", "gsm8k", "--limit", "2", "--thought", "knowledge",
            "--teacher-url", server.url, "--teacher-model", "m", "--out", str(out), "--data-dir", str(data_dir), "--no-progress"])
    rows = read_rows(out)
    assert all(r["correct"] and r["kept"] and r["thought"] == "knowledge" for r in rows)
    sent = [e["body"]["messages"][-1]["content"] for e in server.log]
    for p in load("gsm8k", "train", data_dir=data_dir, limit=2):  # each request carries its gold solution
        assert sum(p.question in m and p.extra["solution"].strip() in m for m in sent) == 1


@pytest.mark.parametrize("args, message", [
    (["--thought", "cot", "--replay", "x.json", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"], "choose one teacher"),
    (["--thought", "cot"], "no teacher"),
    (["--thought", "sonnet", "--replay", "x.json"], "unknown thought"),
    (["--thought", "cot", "--teacher-url", "http://127.0.0.1:9/v1"], "needs --teacher-model"),
    (["--thought", "cot", "--replay", "missing.json"], "missing.json: file not found"),
    (["--thought", "cot", "--samples", "3", "--temperature", "0", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"], "temperature > 0"),
])
def test_bad_input_is_a_clear_error(args, message, data_dir, tmp_path, monkeypatch):
    """In-process (the exit code 2 of `main` is checked by the key test above)."""
    from typer.testing import CliRunner

    from mathdistill.cli import app
    from mathdistill.io import InputError

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["teach", "--dataset", "gsm8k", "--limit", "2", "--out", str(tmp_path / "o"),
                                      "--data-dir", str(data_dir), *args])
    assert isinstance(result.exception, InputError) and message in str(result.exception), result.output
    assert not (tmp_path / "o" / "rationales.jsonl").exists()
