"""Teacher failures: a refused connection says so, a request still failed after its retries makes
`teach` fail visibly (exit 1, counts and reasons on stderr), and what succeeded is kept for the resume."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys

import pytest

from mathdistill.data import load
from mathdistill.teacher import TeacherConfig, make_backend, teach
from mathdistill.teacher.backends import Request, TransientError
from mathdistill.teacher import engine

from teacher_helpers import problems


def closed_port() -> int:
    """A port on the loopback with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_refused_connection_is_a_connection_error_not_a_timeout(transport):
    port = closed_port()
    cfg = TeacherConfig(url=f"http://127.0.0.1:{port}/v1", model="m", transport=transport, timeout=30)
    backend = make_backend(cfg)

    async def go():
        try:
            await backend.complete(Request([{"role": "user", "content": "2 + 2?"}], {"max_tokens": 4}))
        finally:
            await backend.aclose()

    with pytest.raises(TransientError) as e:
        asyncio.run(go())
    message = str(e.value)
    assert message.startswith("connection error: "), message
    assert "refused" in message and f"127.0.0.1:{port}" in message and "timeout" not in message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_engine_reports_what_failed_and_raises_on_request(cot, tmp_path, transport):
    port = closed_port()
    cfg = TeacherConfig(url=f"http://127.0.0.1:{port}/v1", model="m", transport=transport,
                        max_retries=1, backoff_base=0.01, backoff_max=0.02)
    res = teach(problems(3), [cot], make_backend(cfg), config=cfg, out_dir=tmp_path / "out")
    assert res.summary["failures"] == 3 and res.summary["failure_kinds"] == {"connection error": 3}
    assert res.summary["faults"] == {"connection error": 6}  # first tries and retries
    assert sorted(f["problem_id"] for f in res.failed) == ["p0", "p1", "p2"]
    assert all(f["thought"] == "cot" and f["sample"] == 0 and "refused" in f["error"] for f in res.failed)
    with pytest.raises(engine.TeacherError, match=r"3 of 3 teacher requests failed.*connection error x3.*refused"):
        res.raise_if_failed()
    # the outputs are still written: the rows say what failed
    rows = [json.loads(line) for line in (tmp_path / "out" / "rationales.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["text"] is None and "refused" in r["error"] for r in rows)


def test_a_clean_run_has_nothing_failed(fake_server, cot, tmp_path):
    server = fake_server()
    cfg = TeacherConfig(url=server.url, model="m")
    res = teach(problems(2), [cot], make_backend(cfg), config=cfg, cache=tmp_path / "c.sqlite")
    assert res.failed == [] and res.summary["failure_kinds"] == {}
    res.raise_if_failed()  # no error


def test_replay_misses_are_not_failures(data_dir, cot):
    cfg = TeacherConfig(kind="replay", replay=[data_dir / "teacher" / "gsm8k_train_llama3-70b_cot.json"])
    res = teach(problems(2), [cot], make_backend(cfg), config=cfg)  # questions no recording has
    assert res.summary["misses"] == 2 and res.failed == []
    res.raise_if_failed()


# ----------------------------------------------------------------------------- the teach command

N = 6


def run_teach(args, capsys, monkeypatch) -> tuple[int, str, str]:
    """`mathdistill ARGS` in this process, through the console entry point (exit code as a user sees it)."""
    from mathdistill import cli

    monkeypatch.setattr(sys, "argv", ["mathdistill", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def teach_args(url: str, out, data_dir, *extra: str) -> list[str]:
    return ["teach", "--dataset", "gsm8k", "--limit", str(N), "--thought", "cot", "--teacher-url", url,
            "--teacher-model", "fake-teacher", "--concurrency", "3", "--out", str(out), "--data-dir", str(data_dir),
            "--no-progress", *extra]


def gsm8k_fake(data_dir, faults: dict[int, list[str]]):
    """reply and script for a fake server on the first N GSM8K train problems: problem i answers
    right, after the scripted faults of `faults[i]`."""
    probs = load("gsm8k", "train", data_dir=data_dir, limit=N)
    index = {p.question: i for i, p in enumerate(probs)}

    def which(body):
        last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        return index[last]

    return {"reply": lambda body: f"Step by step.\nThe answer is {probs[which(body)].answer}.",
            "script": lambda body: faults.get(which(body), [])}


def cached_replies(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]


def test_teach_exits_1_names_the_failures_and_the_rerun_sends_only_them(fake_server, data_dir, tmp_path, capsys, monkeypatch):
    forever = 10  # more attempts than --max-retries allows
    server = fake_server(**gsm8k_fake(data_dir, {0: ["500"] * forever, 1: ["hang"] * forever, 2: ["drop"] * forever}), hang_s=30)
    out = tmp_path / "out"
    code, stdout, stderr = run_teach(teach_args(server.url, out, data_dir, "--max-retries", "1", "--timeout", "1"), capsys, monkeypatch)
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert "3 of 6 teacher requests failed after up to 1 retry" in stderr
    assert "HTTP 500 x1" in stderr and "timeout x1" in stderr and "connection error x1" in stderr
    assert "run the same command again" in stderr
    assert json.loads(stdout.strip().splitlines()[-1])["failures"] == 3  # stdout still carries the result line
    # what succeeded is kept: rows, summary and the reply cache
    rows = {r["problem_id"]: r for r in map(json.loads, (out / "rationales.jsonl").read_text().splitlines())}
    assert len(rows) == N and sum(r["correct"] for r in rows.values()) == 3
    summary = json.loads((out / "teach_summary.json").read_text())
    assert summary["failures"] == 3 and summary["failure_kinds"] == {"HTTP 500": 1, "connection error": 1, "timeout": 1}
    assert cached_replies(out / "teacher_cache.sqlite") == 3
    assert server.count() == 3 + 3 * 2  # three answered at once, three tried twice

    healed = fake_server(**gsm8k_fake(data_dir, {}))
    code, stdout, stderr = run_teach(teach_args(healed.url, out, data_dir, "--max-retries", "1", "--timeout", "1"), capsys, monkeypatch)
    assert code == 0, stderr
    assert healed.count() == 3  # only the failed ones are sent again
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["failures"] == 0 and last["cache_hits"] == 3 and last["requests"] == 3
    rows = [json.loads(line) for line in (out / "rationales.jsonl").read_text().splitlines()]
    assert sum(r["correct"] for r in rows) == N


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_teach_against_a_closed_port_says_connection_refused(data_dir, tmp_path, capsys, monkeypatch, transport):
    port = closed_port()
    config = tmp_path / "teacher.yaml"
    config.write_text(f"transport: {transport}\n")
    out = tmp_path / "out"
    code, stdout, stderr = run_teach(
        teach_args(f"http://127.0.0.1:{port}/v1", out, data_dir, "--max-retries", "0", "--teacher-config", str(config)),
        capsys, monkeypatch)
    assert code == 1 and "Traceback" not in stderr
    assert f"{N} of {N} teacher requests failed" in stderr and f"connection error x{N}" in stderr
    assert "refused" in stderr and f"127.0.0.1:{port}" in stderr and "timeout" not in stderr
