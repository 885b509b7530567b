"""The engine against a real OpenAI-compatible server: llama-cpp-python serving the SmolLM2 GGUF.

A weak teacher, but the real protocol (auth, validation errors, usage, finish reasons) and real
messy text. One server per test session, started and stopped here; generations kept short.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from mathdistill.data import load
from mathdistill.teacher import TeacherConfig, make_backend, teach

pytestmark = [pytest.mark.server, pytest.mark.slow]

KEY = "sk-llama-test-3f9b2d"  # the server's API key for this session; must never reach the disk
KEY_ENV = "MD_TEST_LLAMA_KEY"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed (CI installs it)")
    from mathdistill.models import alias_gguf

    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(alias_gguf("smollm2-135m")),
           "--host", "127.0.0.1", "--port", str(port), "--api_key", KEY, "--interrupt_requests", "False",
           "--n_ctx", "2048"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {KEY}"})
                urllib.request.urlopen(req, timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"llama.cpp server did not answer /v1/models in 120 s: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _config(url, **kw) -> TeacherConfig:
    base = dict(url=url, model="smollm2", key_env=KEY_ENV, max_tokens=40, concurrency=2, timeout=120,
                max_retries=2, backoff_base=0.1, prices={"smollm2": {"prompt": 0.1, "completion": 0.4}})
    base.update(kw)
    return TeacherConfig(**base)


def test_real_server_rationales_usage_cache_and_secret(llama_server, data_dir, cot, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    probs = load("gsm8k", "train", data_dir=data_dir, limit=1)
    cfg = _config(llama_server)
    out = tmp_path / "run"
    res = teach(probs, [cot], make_backend(cfg), config=cfg, out_dir=out, samples=2)
    s = res.summary
    assert s["requests"] == 2 and s["failures"] == 0 and s["retries"] == 0
    for r in res.rows:
        assert isinstance(r["text"], str) and r["text"].strip(), r
        assert r["finish_reason"] in ("stop", "length")
        assert r["usage"]["prompt_tokens"] > 20 and 1 <= r["usage"]["completion_tokens"] <= 40
        if r["finish_reason"] == "length":  # cut off: recorded, never counted as correct
            assert not r["correct"] and "finish_reason=length" in r["error"]
        assert r["correct"] == (r["prediction"] is not None and r["correct"])
    assert s["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in res.rows)
    assert s["cost"] == pytest.approx((s["prompt_tokens"] * 0.1 + s["completion_tokens"] * 0.4) / 1e6)
    # two samples at temperature 0.7 with seeds 0 and 1
    assert {r["sample"] for r in res.rows} == {0, 1}

    again = teach(probs, [cot], make_backend(cfg), config=cfg, out_dir=out, samples=2)
    assert again.summary["requests"] == 0 and again.summary["cache_hits"] == 2
    assert [r["text"] for r in again.rows] == [r["text"] for r in res.rows]
    for p in out.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p


def test_real_server_client_errors_are_not_retried(llama_server, cot, tmp_path, monkeypatch):
    from teacher_helpers import problems

    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
    cfg = _config(llama_server)
    res = teach(problems(1), [cot], make_backend(cfg), config=cfg, cache=tmp_path / "c.sqlite")
    assert res.summary["requests"] == 1 and res.summary["retries"] == 0 and res.summary["failures"] == 1
    assert res.rows[0]["error"].startswith("HTTP 401")

    monkeypatch.setenv(KEY_ENV, KEY)
    lost = _config(llama_server.rsplit("/v1", 1)[0] + "/nowhere/v1")  # 404: not retried either
    res = teach(problems(1), [cot], make_backend(lost), config=lost, cache=tmp_path / "c.sqlite")
    assert res.summary["requests"] == 1 and res.summary["failures"] == 1
    assert res.rows[0]["error"].startswith("HTTP 404")

    # llama.cpp answers a request it cannot validate with a 500: a server fault, so retried, then given up
    bad = _config(llama_server, extra_body={"n": "several"}, max_retries=2)
    res = teach(problems(1), [cot], make_backend(bad), config=bad, cache=tmp_path / "c.sqlite")
    assert res.summary["requests"] == 3 and res.summary["retries"] == 2 and res.summary["failures"] == 1
    assert res.rows[0]["error"].startswith("gave up after 3 attempts: HTTP 500")
