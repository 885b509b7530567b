"""Secrets never reach a file: URL credentials and key-like query parameters are redacted in
everything the teacher side writes; the API key comes from the environment (OPENAI_API_KEY by default)."""

from __future__ import annotations

import base64
import json

import pytest

from mathdistill.secrets import REDACTED, redact, redact_url
from mathdistill.teacher import TeacherConfig, make_backend, teach

from teacher_helpers import problems


@pytest.mark.parametrize("url, expected", [
    ("http://alice:sk-123@example.com:8000/v1?api-key=XYZ&api-version=2024-02-01",
     "http://<redacted>@example.com:8000/v1?api-key=<redacted>&api-version=2024-02-01"),
    ("https://tok_abc@example.com/v1", "https://<redacted>@example.com/v1"),  # a user name alone can be the key
    ("http://u:p@[::1]:8080/v1", "http://<redacted>@[::1]:8080/v1"),
    ("https://h/v1?key=K&token=T&access_token=A&sig=S&signature=G&secret=Z&password=P&auth=Q&API_KEY=M&model=gpt",
     "https://h/v1?key=<redacted>&token=<redacted>&access_token=<redacted>&sig=<redacted>&signature=<redacted>"
     "&secret=<redacted>&password=<redacted>&auth=<redacted>&API_KEY=<redacted>&model=gpt"),
    ("https://h.blob.core.windows.net/c/f.json?sv=2022&X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&Client_Secret=s#frag",
     "https://h.blob.core.windows.net/c/f.json?sv=2022&X-Amz-Signature=<redacted>&X-Amz-Credential=<redacted>"
     "&Client_Secret=<redacted>#frag"),
    ("http://127.0.0.1:8000/v1?monkey=1&keyboard=2&a=1&a=2&flag", "http://127.0.0.1:8000/v1?monkey=1&keyboard=2&a=1&a=2&flag"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("not a url at all", "not a url at all"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


def test_redact_walks_structures_and_text():
    obj = {
        "teacher": {"url": "http://u:pw-1@h:1/v1?api_key=k-2", "model": "m", "key_env": "MY_KEY",
                    "headers": {"Authorization": "Bearer sk-3", "X-Org": "org-4"}},
        "notes": ["failed: POST http://u:pw-1@h:1/v1/chat?token=t-5 then https://ok.example/x?q=1", 3, None, 1.5],
        "api_key": "sk-6",
        "password": "pw-7",
    }
    out = redact(obj)
    text = json.dumps(out)
    for secret in ("pw-1", "k-2", "sk-3", "org-4", "t-5", "sk-6", "pw-7"):
        assert secret not in text
    assert out["teacher"]["url"] == "http://<redacted>@h:1/v1?api_key=<redacted>"
    assert out["teacher"]["headers"] == {"Authorization": REDACTED, "X-Org": REDACTED}
    assert out["teacher"]["key_env"] == "MY_KEY" and out["teacher"]["model"] == "m"  # names are not secrets
    assert out["notes"] == ["failed: POST http://<redacted>@h:1/v1/chat?token=<redacted> then https://ok.example/x?q=1", 3, None, 1.5]
    assert obj["teacher"]["url"] == "http://u:pw-1@h:1/v1?api_key=k-2"  # the input is left alone


def test_public_config_is_redacted():
    cfg = TeacherConfig(url="https://bob:sk-pub-99@h/v1?api-key=q-88", model="m", headers={"api-key": "h-77"})
    text = json.dumps(cfg.public_dict())
    assert "sk-pub-99" not in text and "q-88" not in text and "h-77" not in text and "bob" not in text
    assert cfg.public_dict()["url"] == "https://<redacted>@h/v1?api-key=<redacted>"


def test_credentials_in_the_url_work_and_are_never_written(fake_server, data_dir, tmp_path, capsys, monkeypatch):
    """user:password@ is HTTP basic auth and ?api-key= a query parameter, on every request; neither
    (nor the basic-auth token, nor a header value) appears in any file, stdout or stderr."""
    from test_teacher_failures import N, gsm8k_fake, run_teach, teach_args

    user, password, qkey, hkey = "alice-u1", "sk-URLPASS-5e1", "QKEY-77aa", "HDR-SECRET-31"
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    server = fake_server(**gsm8k_fake(data_dir, {1: ["401"]}))  # the 401's message echoes the Authorization header
    host = server.url.removeprefix("http://")
    url = f"http://{user}:{password}@{host}?api-key={qkey}&api-version=2024-02-01"
    out = tmp_path / "out"
    code, stdout, stderr = run_teach(teach_args(url, out, data_dir, "--header", f"X-Api-Key: {hkey}"), capsys, monkeypatch)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"teach_config.json", "teach_summary.json", "rationales.jsonl", "teacher_cache.sqlite"}
    for secret in (user, password, qkey, hkey, basic):
        for p in files:
            assert secret.encode() not in p.read_bytes(), (secret, p)
        assert secret not in stdout + stderr

    assert len(server.log) == N
    for e in server.log:
        assert e["path"] == f"/v1/chat/completions?api-key={qkey}&api-version=2024-02-01"
        assert e["headers"]["authorization"] == f"Basic {basic}" and e["headers"]["x-api-key"] == hkey
    assert code == 1 and "1 of 6 teacher requests failed" in stderr and "HTTP 401" in stderr  # the scripted 401
    config = json.loads((out / "teach_config.json").read_text())
    assert config["teacher"]["url"] == f"http://<redacted>@{host}?api-key=<redacted>&api-version=2024-02-01"
    rows = [json.loads(line) for line in (out / "rationales.jsonl").read_text().splitlines()]
    assert sum(r["correct"] for r in rows) == N - 1
    assert [r["error"] for r in rows if r["text"] is None] == ["HTTP 401: scripted 401 for Basic <redacted>"]


def test_default_key_variable_is_openai_api_key(fake_server, cot, tmp_path, monkeypatch):
    server = fake_server()
    cfg = TeacherConfig(url=server.url, model="m")  # no key_env named
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default-env-4d2")
    res = teach(problems(1), [cot], make_backend(cfg), config=cfg, out_dir=tmp_path / "a")
    assert server.log[-1]["headers"]["authorization"] == "Bearer sk-default-env-4d2" and res.failed == []
    for p in (tmp_path / "a").rglob("*"):
        assert not p.is_file() or b"sk-default-env-4d2" not in p.read_bytes()
    monkeypatch.delenv("OPENAI_API_KEY")  # a local server needs none: a placeholder is sent
    teach(problems(2)[1:], [cot], make_backend(cfg), config=cfg, out_dir=tmp_path / "b")
    assert server.log[-1]["headers"]["authorization"] == "Bearer none"
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-named-1")  # a named variable wins
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default-env-4d2")
    named = TeacherConfig(url=server.url, model="m", key_env="MY_TEACHER_KEY")
    teach(problems(3)[2:], [cot], make_backend(named), config=named)
    assert server.log[-1]["headers"]["authorization"] == "Bearer sk-named-1"
