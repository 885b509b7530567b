"""The run's teacher budget (`teach.max_cost`, `teach.max_requests`; the teach command's --max-cost and
--max-requests): it stops before a request that could pass a cap, exits 1 naming the cap and what remains, keeps
every finished reply, spans every stage and every resume, and a re-run with a higher cap sends only the rest
(the fake server's request log). A cost cap without prices is refused (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mathdistill.io import InputError

from test_teacher_cli import gsm8k_teacher, teach_cmd

ROOT = Path(__file__).resolve().parents[2]
PRICE = {"prompt": 2.5, "completion": 10.0}


def sent_once(server) -> bool:
    """Every request the server saw was a different one (no request sent twice)."""
    return sorted(Counter(e["key"] for e in server.log).values()) == [1] * len(server.log)


def test_teach_stops_at_the_cost_cap_and_a_higher_cap_sends_only_the_rest(fake_server, data_dir, tmp_path):
    server = fake_server(reply=gsm8k_teacher(data_dir))
    out = tmp_path / "out"
    # --max-tokens 64: a request's worst case is ~$0.005 here, its true cost ~$0.001 (prices $2.5 / $10 per 1M)
    cmd = teach_cmd(server.url, out, data_dir, "--max-tokens", "64", "--max-cost", "0.007")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = " ".join(proc.stderr.split())
    assert "--max-cost = $0.007 reached" in err and "raise --max-cost" in err and "not sent" in err
    first = json.loads(proc.stdout.strip().splitlines()[-1])
    n = server.count()
    assert 0 < n < 12 and first["requests"] == n and first["not_sent"] == 12 - n
    assert first["cost"] <= 0.007  # never past the cap, though 3 requests were in flight at a time
    rows = [json.loads(x) for x in (out / "rationales.jsonl").read_text().splitlines()]
    assert sum(r["text"] is not None for r in rows) == n  # the finished replies are kept
    assert sum("budget" in (r["error"] or "") for r in rows) == 12 - n

    cmd[cmd.index("0.007")] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    second = json.loads(proc.stdout.strip().splitlines()[-1])
    assert second["requests"] == 12 - n and second["cache_hits"] == n and second["not_sent"] == 0
    assert server.count() == 12 and sent_once(server)


def test_teach_request_cap(fake_server, data_dir, tmp_path):
    server = fake_server(reply=gsm8k_teacher(data_dir))
    cmd = teach_cmd(server.url, tmp_path / "out", data_dir, "--max-requests", "5")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "--max-requests = 5 reached" in " ".join(proc.stderr.split())
    assert server.count() == 5
    cmd[cmd.index("5")] = "12"
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0
    assert server.count() == 12 and sent_once(server)


def test_a_cost_cap_without_a_price_is_refused(fake_server, data_dir, tmp_path):
    server = fake_server()
    cmd = teach_cmd(server.url, tmp_path / "out", data_dir, "--max-cost", "1")
    i = cmd.index("--price-prompt")
    del cmd[i : i + 4]  # no prices
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--price-prompt" in proc.stderr and server.count() == 0


# ---------------------------------------------------------------------------------------------- recipes


@pytest.fixture
def teach_only():
    """A method whose recipe is two teach stages (cot, l2m) from whatever teacher the recipe names."""
    from mathdistill.methods import steps
    from mathdistill.methods.config import DistillConfig
    from mathdistill.methods.registry import METHODS, Method, register

    def recipe(cfg, run):
        steps.teach(run, cfg, steps.problems(cfg.data.train, cfg.data.data_dir), ["cot", "l2m"])
        return []

    register(Method("teach-only", DistillConfig, recipe, "two teach stages (tests)"))
    yield
    METHODS.pop("teach-only", None)


def write_recipe(tmp_path, server, **teach) -> Path:
    teacher = {"kind": "openai", "url": server.url, "model": "fake-teacher", "max_tokens": 64, "concurrency": 3,
               "prices": {"fake-teacher": PRICE}}
    recipe = {"name": "capped", "method": "teach-only", "runs_dir": str(tmp_path / "runs"), "thoughts": ["cot", "l2m"],
              "data": {"train": {"dataset": "gsm8k", "split": "train", "limit": 6},
                       "eval": [{"dataset": "gsm8k", "split": "test", "limit": 2}]},
              "teach": {"default": teacher, **teach}}
    f = tmp_path / "capped.yaml"
    f.write_text(yaml.safe_dump(recipe))
    return f


def mathdistill(*args: str, monkeypatch, capsys) -> tuple[int, str]:
    """`mathdistill ARGS` in this process (the test's method is registered here): (exit code, stderr)."""
    from mathdistill.cli import main

    monkeypatch.setattr(sys, "argv", ["mathdistill", *args])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code or 0, " ".join(capsys.readouterr().err.split())


def test_a_recipe_stops_at_the_cap_across_stages_and_resumes(fake_server, data_dir, tmp_path, teach_only,
                                                             monkeypatch, capsys):
    server = fake_server(reply=gsm8k_teacher(data_dir))
    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    recipe = str(write_recipe(tmp_path, server))
    # 4 requests: the cot stage (6) stops half-way
    code, err = mathdistill("run", recipe, "teach.max_requests=4", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "teach.max_requests = 4 reached" in err and "stage teach-cot failed" in err
    assert server.count() == 4
    # 8: a higher cap is no config conflict; cot finishes (2 more), l2m stops after 2
    code, err = mathdistill("run", recipe, "teach.max_requests=8", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "stage teach-l2m failed" in err and "2 of 6 requests" not in err
    assert server.count() == 8
    # a cost cap below what the run spent already: nothing is sent
    code, err = mathdistill("run", recipe, "teach.max_cost=0.001", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 1 and "teach.max_cost = $0.001 reached" in err and server.count() == 8
    # the last resume also reports to TensorBoard (no config conflict either): the teacher's bill lands there
    code, err = mathdistill("run", recipe, "teach.max_cost=1", "train.report_to=tensorboard",
                            monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert server.count() == 12 and sent_once(server)
    folder = tmp_path / "runs" / "capped"
    assert yaml.safe_load((folder / "config.yaml").read_text())["teach"]["max_cost"] == 1
    if importlib.util.find_spec("tensorboard"):
        from tb_events import scalars

        got = scalars(folder / "tensorboard")
        billed = server.usage_total()
        cost = (billed["prompt_tokens"] * PRICE["prompt"] + billed["completion_tokens"] * PRICE["completion"]) / 1e6
        assert got["teacher/requests"] == [(0, 12.0)] and got["teacher/cost_usd"][0][1] == pytest.approx(cost, rel=1e-5)


def test_a_recipe_cost_cap_needs_every_live_teachers_price(fake_server, data_dir, tmp_path, teach_only,
                                                           monkeypatch, capsys):
    from mathdistill.methods.registry import load_config
    from mathdistill.methods.runner import teacher_budget

    server = fake_server()
    unpriced = {"kind": "openai", "url": server.url, "model": "other"}
    recipe = write_recipe(tmp_path, server, per_thought={"l2m": unpriced})
    cfg = load_config(recipe, ["teach.max_cost=5"])
    with pytest.raises(InputError, match=r"teach\.per_thought\.l2m\.prices\.other") as e:
        teacher_budget(cfg)
    assert "teach.default" not in str(e.value)  # priced
    assert teacher_budget(load_config(recipe, ["teach.max_requests=5"])).max_requests == 5  # no price needed
    monkeypatch.setenv("MATHDISTILL_DATA", str(data_dir))
    code, err = mathdistill("run", str(recipe), "teach.max_cost=5", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and "prices.other" in err and server.count() == 0
    assert not (tmp_path / "runs" / "capped").exists()  # refused before the run folder was made
