"""`mathdistill report`: run folders built here (layout of notes/runfolder.md) -> HTML, Markdown, PNGs."""

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
from mathdistill.report import load_run, plot_accuracy, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = '<script>alert("owned")</script>'
REFERENCE = "reference (converted GSM8K gold solutions)"
REPLAY = "replay: gsm8k_train_llama3-70b_cot.json"

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


def make_run(root: Path, name: str, method: str, thoughts: list[str], evals: dict, stages: list[str]) -> Path:
    """A run folder as `mathdistill run` writes it. evals: {(dataset, variant): (correct, n)}."""
    run = root / name
    cfg = {"name": name, "method": method, "seed": 0, "student": {"model": "smollm2-135m"}, "thoughts": thoughts,
           "notes": f"config comment {XSS}", "train": {"lr": 2e-4, "epochs": 1}, "eval": {"datasets": ["gsm8k", "svamp"]}}
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    jdump(run / "manifest.json", {
        "command": ["mathdistill", "run", f"recipes/{method}.yaml", "train.epochs=1", f"notes={XSS}"], "started": "2025-06-01T10:00:00+00:00",
        "finished": "2025-06-01T10:40:00+00:00" if "eval" in stages else None, "seed": 0, "git_revision": "51ce0c7",
        "versions": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2", "trl": "1.16.0",
                     "mathdistill": "0.1.0"}, "machine": {"cpus": 2, "gpu": None}})
    for stage in stages:
        (run / "stages").mkdir(exist_ok=True)
        (run / "stages" / f"{stage}.done").touch()
    per_thought = {}
    for t in thoughts if "teach" in stages else []:
        rows = []
        for (pid, q, gold), text in zip(QUESTIONS, RATIONALES[t]):
            pred = "72" if pid.endswith("0") else ("10" if t != "cot" else "1")
            rows.append({"problem_id": pid, "question": q, "gold": gold, "thought": t, "sample": 0, "text": text,
                         "prediction": pred, "correct": pred == gold, "finish_reason": "stop",
                         "usage": {"prompt_tokens": 412, "completion_tokens": 61}})
        jsonl(run / "teach" / t / "rationales.jsonl", rows)
        correct = {"cot": 6950, "pot": 7301, "eot": 7102}[t]
        jdump(run / "teach" / t / "summary.json", {
            "thought": t, "teacher": REPLAY if t == "cot" else REFERENCE, "problems": 7473, "rationales": 7473,
            "correct": correct, "kept": correct, "yield": correct / 7473, "requests": 0, "cache_hits": 0,
            "tokens": {"prompt": 0, "completion": 0}, "cost": 0.0})
        per_thought[t] = correct
    if "data" in stages:
        jdump(run / "data" / "summary.json", {"examples": sum(per_thought.values()), "per_thought": per_thought})
    for t in thoughts if "train" in stages else []:
        floor = {"cot": 0.45, "pot": 0.3, "eot": 0.6}[t] + (0.1 if method == "cot" else 0.0)
        log = [{"step": s, "loss": round(1.9 * math.exp(-s / 12) + floor + 0.03 * math.sin(s), 4),
                "learning_rate": 2e-4 * (1 - s / 40), "epoch": s / 40} for s in range(1, 41)]
        jsonl(run / "train" / t / "train_log.jsonl", log)
        jdump(run / "train" / t / "train_summary.json", {"seconds": 812.5, "steps": 40, "examples": 320, "tokens": 61440})
    for (dataset, variant), (k, n) in evals.items():
        d = run / "eval" / dataset / variant
        jsonl(d / "predictions.jsonl", [
            {"id": f"{dataset}-0", "question": QUESTIONS[1][1], "gold": "10", "output": f"She earned 10. {XSS}",
             "prediction": "10", "correct": True},
            {"id": f"{dataset}-1", "question": QUESTIONS[0][1], "gold": "72", "output": "48 + 48 = 96. The answer is 96.",
             "prediction": "96", "correct": False}])
        jdump(d / "metrics.json", {"dataset": dataset, "n": n, "correct": k, "accuracy": k / n, "ci95": wilson(k, n)})
    if "eval" in stages:
        jdump(run / "results.json", {"run": name, "method": method, "student": "smollm2-135m", "rows": [
            {"method": method, "dataset": ds, "variant": v, "n": n, "correct": k, "accuracy": k / n, "ci95": wilson(k, n),
             "train_seconds": 812.5 * len(thoughts)} for (ds, v), (k, n) in evals.items()]})
    return run


ALL = ["teach", "verify", "data", "train", "eval"]
COT_EVALS = {("gsm8k", "cot"): (50, 120), ("svamp", "cot"): (61, 100)}
ETD_EVALS = {("gsm8k", v): (k, 120) for v, k in (("cot", 47), ("pot", 58), ("eot", 41), ("vote", 63))}


@pytest.fixture
def runs(tmp_path):
    return (make_run(tmp_path / "runs", "cot-baseline", "cot", ["cot"], COT_EVALS, ALL),
            make_run(tmp_path / "runs", "etd-3", "etd", ["cot", "pot", "eot"], ETD_EVALS, ALL))


def pct(k, n):
    return f"{100 * k / n:.1f}%"


def ci(k, n):
    lo, hi = wilson(k, n)
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def check_pngs(html: str, out: Path) -> list[str]:
    srcs = re.findall(r'<img src="([^"]+)"', html)
    for src in srcs:
        data = (out / src).read_bytes()
        assert data[:8] == PNG_MAGIC, src
        img = matplotlib.image.imread(out / src)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 200, (src, img.shape)
    return srcs


def check_offline(html: str) -> None:
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(|@import|<link|<script|<iframe", html, re.I)


def test_two_runs(runs, tmp_path):
    out = tmp_path / "report"
    index = write_report(list(runs), out)
    assert index == out / "index.html"
    html = index.read_text()
    md = (out / "report.md").read_text()

    for (k, n) in [*COT_EVALS.values(), *ETD_EVALS.values()]:
        assert pct(k, n) in html and ci(k, n) in html and pct(k, n) in md and ci(k, n) in md
    # summary table: best gsm8k figure (ETD vote, 63/120) is highlighted; svamp missing for ETD after its eval
    assert f'class="num best"><b>{pct(63, 120)}</b>' in html
    assert "not evaluated" in html

    # which teacher produced which data, per thought, in the yield table
    for t, teacher, correct in (("cot", REPLAY, 6950), ("pot", REFERENCE, 7301), ("eot", REFERENCE, 7102)):
        assert re.search(rf"<tr><td>{t}</td><td>{re.escape(teacher)}</td><td class=\"num\">7,473</td>"
                         rf"<td class=\"num\">7,473</td><td class=\"num\">{correct:,}</td>"
                         rf"<td class=\"num\">{pct(correct, 7473)}</td>", html), t
        assert f"| {t} | {teacher} | 7,473 | 7,473 | {correct:,} | {pct(correct, 7473)} |" in md

    srcs = check_pngs(html, out)
    assert {"accuracy.png", "train-cot-baseline.png", "train-etd-3.png", "loss-comparison.png"} <= set(srcs)
    for src in srcs:
        assert f"]({src})" in md
    check_offline(html)

    # text from run files is escaped: the question, the model output and the config
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in html
    assert html.count("&lt;script&gt;") >= 8  # per run: config, command; rationale question, prediction output
    outside_code = re.sub(r"```yaml\n.*?\n```", "", md, flags=re.S)  # fenced config is literal text in Markdown
    assert "<script" not in outside_code and "&lt;script&gt;" in outside_code  # the command line, escaped


def test_cli_and_partial_run(runs, tmp_path):
    partial = make_run(tmp_path / "runs", "etd-partial", "etd", ["cot", "pot"], {}, ["teach"])
    # a training log still being appended to: its unfinished last line is ignored
    log = partial / "train" / "cot" / "train_log.jsonl"
    jsonl(log, [{"step": 1, "loss": 2.1, "learning_rate": 2e-4, "epoch": 0.1}, {"step": 2, "loss": 1.8, "learning_rate": 2e-4, "epoch": 0.2}])
    log.write_text(log.read_text() + '{"step": 3, "lo')

    out = tmp_path / "cli-report"
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "report", str(runs[0]), str(partial), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("index.html")
    html = (out / "index.html").read_text()
    check_offline(html)
    check_pngs(html, out)
    section = html.split('id="run-2"')[1]
    assert "eval: not run yet" in section and "verify: skipped" in section  # training has started
    assert '<p class="missing">not run yet</p>' in section  # evaluation
    assert "train …" in section  # outputs exist, no done marker yet
    assert REFERENCE in section  # teach finished: its yield table is there
    assert "not run yet" in html.split('id="run-1"')[0]  # summary row of the partial run
    run = load_run(partial)
    assert [r["step"] for r in run.adapters[0].log] == [1, 2]
    # a stage marked per item (stages/teach-cot.done, ...) is done once every planned item is marked
    (partial / "stages" / "teach.done").unlink()
    (partial / "stages" / "teach-cot.done").touch()
    assert load_run(partial).stage_state("teach") == "in progress"
    (partial / "stages" / "teach-pot.done").touch()
    assert load_run(partial).stage_state("teach") == "done"

    # one run and no --out: RUN_DIR/report
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "report", str(runs[1])], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (runs[1] / "report" / "index.html").is_file() and (runs[1] / "report" / "report.md").is_file()


def test_bad_folders(runs, tmp_path):
    junk = tmp_path / "not-a-run"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"not-a-run: not a run folder"):
        write_report([runs[0], junk], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written when an input is bad
    proc = subprocess.run([sys.executable, "-m", "mathdistill.cli", "report", str(junk), str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not-a-run: not a run folder" in proc.stderr and "Traceback" not in proc.stderr

    metrics = runs[1] / "eval" / "gsm8k" / "vote" / "metrics.json"
    metrics.write_text(json.dumps({"dataset": "gsm8k", "n": 120, "correct": 63}))
    with pytest.raises(InputError, match=r"vote/metrics.json: missing or non-numeric key 'accuracy'"):
        load_run(runs[1])
    metrics.write_text(json.dumps({"dataset": "gsm8k", "n": 120, "correct": 63, "accuracy": 0.525, "ci95": [0.4]}))
    with pytest.raises(InputError, match=r"vote/metrics.json: 'ci95' must be two numbers"):
        load_run(runs[1])
    results = json.loads((runs[0] / "results.json").read_text())
    del results["rows"][1]["accuracy"]
    (runs[0] / "results.json").write_text(json.dumps(results))
    with pytest.raises(InputError, match=r"results.json: rows\[1\]: missing or non-numeric key 'accuracy'"):
        load_run(runs[0])
    (runs[0] / "results.json").unlink()
    log = runs[0] / "train" / "cot" / "train_log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, loss: 1.9}\n{"step": 3, "loss": 1.7}\n')
    with pytest.raises(InputError, match=r"train_log.jsonl:2: invalid JSON"):
        load_run(runs[0])
    (runs[0] / "config.yaml").write_text("name: x\nmethod: [cot\n")
    with pytest.raises(InputError, match=r"config.yaml:\d+: invalid YAML"):
        load_run(runs[0])


def test_plot_accuracy_from_results_rows(tmp_path):
    rows = [{"method": m, "dataset": d, "variant": m, "accuracy": k / 200, "ci95": wilson(k, 200)}
            for m, d, k in (("cot", "gsm8k", 40), ("etd", "gsm8k", 55), ("cot", "svamp", 70), ("etd", "svamp", 81))]
    rows.append({"method": "etd", "dataset": "svamp", "variant": "vote", "accuracy": 0.45, "ci95": None})
    path = plot_accuracy(rows, tmp_path / "acc.png", "Accuracy")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).shape[1] > 400
    assert not list(tmp_path.glob(".*.tmp"))
