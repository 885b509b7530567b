"""Batch mode (`teacher.mode: batch`) against a local Files + Batches API (tests/teacher/batch_server.py):
split files, the batch price, the shared reply cache, retries of what a batch did not answer (new batch or
online), expiry, cancellation, the budget, and a kill between submit and completion (0 requests sent twice)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mathdistill.teacher import TeacherConfig, make_backend, teach
from mathdistill.teacher.budget import Limits

from batch_server import BatchServer
from killing import kill_when
from teacher_helpers import index_of, problems, solve

PRICE = {"prompt": 1000.0, "completion": 3000.0}  # USD per 1M tokens (large, so costs are visible)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def batch_server():
    """batch_server(**kw) -> a started BatchServer (replies: the synthetic problems solved), stopped after the test."""
    with contextlib.ExitStack() as servers:
        yield lambda **kw: servers.enter_context(BatchServer(**{"reply": solve, **kw}))


def config(server, mode="batch", **batch) -> TeacherConfig:
    return TeacherConfig(url=server.url, model="fake-teacher", mode=mode, timeout=5, max_retries=2,
                         backoff_base=0.01, backoff_max=0.05, prices={"fake-teacher": PRICE},
                         batch={"poll_interval": 0.02, **batch})


def run(cfg, n, out, **kw):
    return teach(problems(n), "cot", make_backend(cfg), config=cfg, out_dir=out, **kw)


def list_price(rows) -> float:
    return sum((r["usage"]["prompt_tokens"] * PRICE["prompt"] + r["usage"]["completion_tokens"] * PRICE["completion"])
               / 1e6 for r in rows if r["usage"])


def test_batches_split_at_the_limits_cost_half_and_fill_the_shared_cache(batch_server, tmp_path):
    server = batch_server(auto=True, auto_after=1)
    res = run(config(server, max_requests=5), 12, tmp_path)
    s = res.summary
    assert s["requests"] == 12 and s["failures"] == 0 and all(r["correct"] for r in res.rows)
    # 12 requests in files of at most 5 lines: 3 uploads, 3 batches, every request run once
    assert server.count("POST", "/v1/files") == 3 and server.count("POST", "/v1/batches") == 3
    assert sorted(Counter(server.ran("batch")).values()) == [1] * 12 and server.ran("online") == []
    # each input line is the online request's body, custom_id its cache key
    lines = [json.loads(x) for f in server.files.values() if f["purpose"] == "batch" for x in f["content"].splitlines()]
    assert {x["url"] for x in lines} == {"/v1/chat/completions"} and len({x["custom_id"] for x in lines}) == 12
    assert all(x["body"]["model"] == "fake-teacher" and x["body"]["max_tokens"] == 1024 for x in lines)
    # cost at the batch price: half the list price of what the server billed
    assert s["cost_total"] == pytest.approx(list_price(res.rows) / 2) and s["cost_total"] > 0
    with sqlite3.connect(tmp_path / "teacher_cache.sqlite") as db:
        assert {r[0] for r in db.execute("SELECT status FROM batches")} == {"completed"}
    # a later online run reuses every reply: nothing sent
    again = run(config(server, mode="online"), 12, tmp_path)
    assert again.summary["requests"] == 0 and again.summary["cache_hits"] == 12
    assert again.summary["cost_total"] == pytest.approx(s["cost_total"]) and server.ran("online") == []


def test_files_split_at_the_byte_limit(batch_server, tmp_path):
    server = batch_server(auto=True)
    one = len(json.dumps({"custom_id": "x" * 64, "method": "POST", "url": "/v1/chat/completions",
                          "body": make_backend(config(server)).body(_request(server))}))
    res = run(config(server, max_bytes=int(one * 2.5)), 5, tmp_path)
    assert res.summary["failures"] == 0
    sizes = [len(f["content"].splitlines()) for f in server.files.values() if f["purpose"] == "batch"]
    assert sizes == [2, 2, 1] and all(f["bytes"] <= one * 2.5 for f in server.files.values() if f["purpose"] == "batch")


def _request(server):
    from mathdistill.teacher.engine import build_jobs, resolve_thoughts

    cfg = config(server)
    return build_jobs(problems(1), resolve_thoughts("cot"), make_backend(cfg), cfg, 1)[0].request


@pytest.mark.parametrize("retry", ["batch", "online"])
def test_unanswered_requests_retried_and_permanent_errors_fail(batch_server, tmp_path, retry):
    # problems 1 and 2 get a 500 (then succeed), problem 3 a 400 (permanent); the first batch expires after 8
    script = {1: ["500"], 2: ["500"], 3: ["400"]}
    server = batch_server(auto=True, outcomes=[{"upto": 8}], script=lambda body: script.get(index_of(body), []))
    res = run(config(server, retry=retry), 10, tmp_path)
    rows = {r["problem_id"]: r for r in res.rows}
    assert res.summary["failures"] == 1 and "HTTP 400" in rows["p3"]["error"]
    assert all(rows[f"p{i}"]["correct"] for i in range(10) if i != 3)
    first = server.batches[server.order[0]]
    assert first["status"] == "expired" and first["request_counts"]["completed"] == 5
    # retried: the two 500s and the two expired requests, never the 400 nor an answered one
    if retry == "batch":
        assert len(server.order) == 2 and server.batches[server.order[1]]["request_counts"]["total"] == 4
        assert server.ran("online") == []
    else:
        assert len(server.order) == 1 and len(server.ran("online")) == 4
    assert res.summary["retries"] == 4 and res.summary["requests"] == 14
    # cost: batch replies at half the list price, online retries at the list price
    online = {"p1", "p2", "p8", "p9"} if retry == "online" else set()
    expected = sum(list_price([r]) * (1.0 if r["problem_id"] in online else 0.5) for r in res.rows)
    assert res.summary["cost_total"] == pytest.approx(expected)


def test_a_failed_batch_is_sent_again_up_to_max_rounds(batch_server, tmp_path):
    server = batch_server(auto=True, max_lines=3)  # every batch of 4 fails validation (too many requests)
    res = run(config(server, max_rounds=2), 4, tmp_path)
    assert res.summary["failures"] == 4 and server.ran() == []
    assert len(server.order) == 2 and all(server.batches[b]["status"] == "failed" for b in server.order)
    assert all("too_many_requests" in r["error"] or "more than 3 requests" in r["error"] for r in res.rows)


def test_the_budget_holds_back_batches_that_could_pass_it(batch_server, tmp_path):
    from mathdistill.teacher.budget import worst_case

    server = batch_server(auto=True)
    cfg = config(server)
    # the worst case of one request at the batch price, as the engine counts it: one fits, two do not
    one = worst_case(_request(server).messages, 1024, cfg.price("fake-teacher")) * 0.5
    res = run(cfg, 6, tmp_path, budget=Limits(max_cost=one * 1.2))
    assert res.budget and "teach.max_cost = $" in res.budget and "not sent" in res.budget
    sent = server.ran()
    # one batch at a time of one request; the next once the last settled at its (smaller) true cost
    assert all(server.batches[b]["request_counts"]["total"] == 1 for b in server.order)
    assert 1 <= len(sent) < 6 and res.summary["not_sent"] == 6 - len(sent)
    assert res.summary["cost_total"] <= one * 1.2
    more = run(cfg, 6, tmp_path, budget=Limits(max_cost=100.0))
    assert more.budget is None and sorted(Counter(server.ran()).values()) == [1] * 6


def teach_cmd(cfg_file: Path, out: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mathdistill.cli", "teach", "--dataset", "gsm8k", "--split", "train", "--limit", "6",
            "--thought", "cot", "--teacher-config", str(cfg_file), "--out", str(out), "--data-dir", str(data_dir),
            "--no-progress", *extra]


def gsm8k_reply(body: dict) -> str:
    return "Step one.\nThe answer is 5."


def _write_config(server, tmp_path, **batch) -> Path:
    f = tmp_path / "teacher.yaml"
    f.write_text(yaml.safe_dump(config(server, **batch).model_dump(mode="json")))
    return f


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.mark.parametrize("when", ["after-submit", "before-the-id-was-recorded"])
def test_killed_between_submit_and_completion_resumes_polling(batch_server, tmp_path, data_dir, when):
    server = batch_server(reply=gsm8k_reply)
    if when == "before-the-id-was-recorded":
        server.hold_create.set()  # the batch exists on the server; its id never reaches the client
    cfg_file, out = _write_config(server, tmp_path, poll_interval=0.05), tmp_path / "out"
    kill_when(teach_cmd(cfg_file, out, data_dir), server.created.is_set, _env(), ROOT, timeout=60,
              settle=0.5 if when == "after-submit" else 0.2)
    assert server.ran() == [] and len(server.order) == 1
    with sqlite3.connect(out / "teacher_cache.sqlite") as db:
        (status,) = db.execute("SELECT status FROM batches").fetchone()
    assert status == ("submitted" if when == "after-submit" else "uploaded")
    server.release_create()
    server.finish(server.order[0])  # the batch completes while no client runs
    proc = subprocess.run(teach_cmd(cfg_file, out, data_dir), capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # resumed: no new upload, no new batch, every request run exactly once, all answered from the batch
    assert server.count("POST", "/v1/files") == 1 and len(server.order) == 1
    assert server.uploaded_lines() == 6 and sorted(Counter(server.ran()).values()) == [1] * 6
    assert summary["requests"] == 0 and summary["failures"] == 0
    # a batch whose id was never recorded is found by its input file in the list of batches
    assert (("GET", "/v1/batches") in server.calls) == (when == "before-the-id-was-recorded")
    rows = [json.loads(x) for x in (out / "rationales.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["text"] == "Step one.\nThe answer is 5." for r in rows)


def test_cancel_keeps_what_the_batch_answered(batch_server, tmp_path, data_dir):
    server = batch_server(reply=gsm8k_reply, cancel_upto=2)
    cfg_file, out = _write_config(server, tmp_path, poll_interval=0.05), tmp_path / "out"
    kill_when(teach_cmd(cfg_file, out, data_dir), server.created.is_set, _env(), ROOT, timeout=60, settle=0.5)
    proc = subprocess.run(teach_cmd(cfg_file, out, data_dir, "--cancel-batches"), capture_output=True, text=True,
                          timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = json.loads(proc.stdout.strip().splitlines()[-1])
    assert done["cancelled"] == 1 and [b["status"] for b in done["batches"]] == ["cancelled"]
    assert server.count("POST", "/v1/batches/") == 1 and len(server.ran()) == 2
    # the next run sends only the 4 the cancelled batch never ran, in a new batch
    server.auto = True
    proc = subprocess.run(teach_cmd(cfg_file, out, data_dir), capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["requests"] == 4 and summary["cache_hits"] == 2
    assert sorted(Counter(server.ran()).values()) == [1] * 6


def test_a_server_without_the_batch_api_is_named(data_dir, tmp_path):
    from fake_server import FakeServer

    with FakeServer() as server:  # chat completions only: every POST is answered as one
        cfg_file = tmp_path / "teacher.yaml"
        cfg_file.write_text(yaml.safe_dump({"kind": "openai", "url": server.url, "model": "m", "mode": "batch",
                                            "max_retries": 0}))
        proc = subprocess.run(teach_cmd(cfg_file, tmp_path / "out", data_dir), capture_output=True, text=True,
                              timeout=60, env=_env())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "does this server offer the Files and Batches API? else use mode: online" in proc.stderr
