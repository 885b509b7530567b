"""Write the report: index.html + report.md + PNG figures, for one or more run folders.

The HTML is self-contained (inline CSS, no scripts, no fonts or files from the network;
figures are PNG files next to it, referenced by relative name). Every piece of text that
comes from a run folder goes through `html.escape`.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import shlex
from pathlib import Path

import mathdistill
from mathdistill.io import InputError, write_text
from mathdistill.report.plots import plot_accuracy, plot_training
from mathdistill.report.runs import STAGES, Run, load_run

SHOWN_STAGES = [s for s in STAGES if s != "report"]  # the report being written needs no badge

MAX_TEXT = 4000  # characters of an example rationale / output shown


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write out_dir/index.html, out_dir/report.md and out_dir/*.png; return the index.html path.

    Every run folder is read (and validated) before anything is written; every file is
    written atomically, index.html last."""
    if not run_dirs:
        raise InputError("no run folders given")
    runs = [load_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")

    figures: dict[str, str] = {}  # key -> file name relative to out_dir
    rows = [dict(r, label=_label(r, run, several=len(runs) > 1)) for run in runs for r in run.rows()]
    if rows:
        figures["accuracy"] = plot_accuracy(rows, out_dir / "accuracy.png", "Accuracy per dataset (95% CI)").name
    slugs = _slugs([r.name for r in runs])
    for run, slug in zip(runs, slugs):
        logs = {a.name: a.log for a in run.adapters if a.log}
        if logs:
            figures[f"train:{id(run)}"] = plot_training(logs, out_dir / f"train-{slug}.png", f"Training: {run.name}").name
    logged = [run for run in runs if any(a.log for a in run.adapters)]
    if len(logged) > 1:
        logs = {f"{run.name} · {a.name}": a.log for run in logged for a in run.adapters if a.log}
        figures["loss"] = plot_training(logs, out_dir / "loss-comparison.png", "Training loss, all runs").name

    write_text(out_dir / "report.md", _markdown(runs, figures, generated))
    index = out_dir / "index.html"
    write_text(index, _html(runs, figures, generated))
    return index


# ---------------------------------------------------------------------------- formatting


def e(x) -> str:
    """Escaped text for HTML (None shows as a dash)."""
    return "—" if x is None else html.escape(str(x))


def pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.1f}%"


def ci(c) -> str:
    return f"[{100 * float(c[0]):.1f}, {100 * float(c[1]):.1f}]" if c and len(c) == 2 else ""


def num(x, unit: str = "") -> str:
    if x is None or x == "":
        return "—"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    s = f"{x:,}" if isinstance(x, int) else f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.1f}"
    return f"{s}{unit}"


def _label(row: dict, run: Run, several: bool) -> str:
    """Series name in the comparison plot: the run (when several) and the variant."""
    variants = {r["variant"] for r in run.rows()}
    parts = [run.name] if several else [run.method]
    if not several or len(variants) > 1 or row["variant"] != run.method:
        parts.append(str(row["variant"]))
    return " · ".join(dict.fromkeys(parts))


def _slugs(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
        base, k = slug, 2
        while slug in out:
            slug, k = f"{base}-{k}", k + 1
        out.append(slug)
    return out


def _yield_rows(run: Run) -> list[dict]:
    """One dict per thought with the numbers of the data-yield table."""
    per_thought = (run.data_summary or {}).get("per_thought") or {}
    out = []
    for t in run.thoughts:
        s = t.summary or {}
        y = s.get("yield")
        if y is None and s.get("rationales"):
            y = (s.get("correct") or 0) / s["rationales"]
        tokens = s.get("tokens") or {}
        out.append(
            {
                "thought": t.name,
                "teacher": s.get("teacher") or ("summary.json not written yet" if not s else None),
                "problems": s.get("problems"),
                "rationales": s.get("rationales"),
                "correct": s.get("correct"),
                "yield": y,
                "kept": s.get("kept"),
                "examples": per_thought.get(t.name),
                "tokens": f"{num(tokens.get('prompt'))} / {num(tokens.get('completion'))}" if tokens else None,
                "requests": f"{num(s.get('requests'))} ({num(s.get('cache_hits'))} cached)" if "requests" in s else None,
                "cost": f"${s['cost']:.4f}" if isinstance(s.get("cost"), (int, float)) else None,
            }
        )
    return out


YIELD_COLS = [
    ("thought", "Thought"), ("teacher", "Teacher"), ("problems", "Problems"), ("rationales", "Rationales"),
    ("correct", "Correct"), ("yield", "Yield"), ("kept", "Kept"), ("examples", "Train examples"),
    ("tokens", "Tokens in / out"), ("requests", "Requests"), ("cost", "Cost"),
]


def _train_rows(run: Run) -> list[dict]:
    out = []
    for a in run.adapters:
        s = a.summary or {}
        out.append(
            {
                "adapter": a.name,
                "steps": s.get("steps", a.log[-1].get("step") if a.log else None),
                "examples": s.get("examples"),
                "tokens": s.get("tokens"),
                "seconds": s.get("seconds"),
                "first loss": a.log[0]["loss"] if a.log else None,
                "last loss": a.log[-1]["loss"] if a.log else None,
                "state": "done" if a.summary else "in progress",
            }
        )
    return out


def _manifest_items(run: Run) -> list[tuple[str, str]]:
    m = run.manifest or {}
    items = [("folder", str(run.path)), ("student", run.student)]
    if run.thoughts:
        teachers = [f"{t.name}: {(t.summary or {}).get('teacher') or '?'}" for t in run.thoughts]
        items.append(("teacher", "; ".join(teachers)))
    items.append(("seed", m.get("seed", run.config.get("seed"))))
    items += [("started", m.get("started")), ("finished", m.get("finished") or ("still running or stopped" if m else None))]
    items.append(("git revision", m.get("git_revision")))
    if isinstance(m.get("command"), list):
        items.append(("command", shlex.join(str(c) for c in m["command"])))
    for key in ("versions", "machine"):
        if isinstance(m.get(key), dict):
            items.append((key, " · ".join(f"{k} {'—' if v is None else v}" for k, v in m[key].items())))
    return [(k, v) for k, v in items if v not in (None, "")]


def _datasets(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(r["dataset"] for run in runs for r in run.rows()))


def _summary(runs: list[Run]):
    """Yield (run, variant, {dataset: row}) for the summary table; variant None = no results yet."""
    for run in runs:
        by_variant: dict[str, dict[str, dict]] = {}
        for r in run.rows():
            by_variant.setdefault(str(r["variant"]), {})[str(r["dataset"])] = r
        if not by_variant:
            yield run, None, {}
        for variant, cells in by_variant.items():
            yield run, variant, cells


def _missing(run: Run) -> str:
    return "not evaluated" if run.stage_state("eval") == "done" else "not run yet"


# ---------------------------------------------------------------------------- HTML

CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d8dee4;--soft:#f6f8fa;--accent:#0969da;--ok:#1a7f37;--bad:#cf222e}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 80px}
h1{font-size:26px;margin:0 0 2px}
h2{font-size:21px;margin:44px 0 6px;padding-top:14px;border-top:2px solid var(--line)}
h3{font-size:16px;margin:22px 0 6px}
.sub,.path{color:var(--muted);font-size:13px;margin:0 0 10px}
.path{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
nav{font-size:14px;margin:8px 0 18px}
nav a{color:var(--accent);text-decoration:none;margin-right:14px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:6px 0 14px;font-size:14px}
th,td{padding:6px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best b{color:var(--ok)}
.ci{display:block;color:var(--muted);font-size:12px}
.missing{color:var(--muted);font-style:italic}
table.kv th{background:none;text-align:right;color:var(--muted);font-weight:500;padding-left:0}
table.kv td{word-break:break-word}
.tag{display:inline-block;font-size:12px;font-weight:600;padding:1px 9px;border-radius:10px;background:#ddf4ff;color:#0550ae;vertical-align:middle;margin-left:6px}
.stages{margin:4px 0 12px}
.stage{display:inline-block;font-size:12px;padding:2px 10px;border-radius:12px;margin:0 6px 4px 0;border:1px solid var(--line);color:var(--muted)}
.stage.done{background:#dafbe1;border-color:#aceebb;color:var(--ok)}
.stage.progress{background:#fff8c5;border-color:#eed888;color:#7d4e00}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 12px;font-size:12.5px;
 line-height:1.45;white-space:pre-wrap;word-break:break-word;max-height:420px;overflow:auto;margin:6px 0}
details{margin:6px 0 10px}
summary{cursor:pointer;color:var(--accent);font-size:14px}
.example{border-left:3px solid var(--line);padding:2px 0 2px 12px;margin:10px 0}
.example p{margin:2px 0;font-size:14px}
figure{margin:10px 0 18px}
img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px}
figcaption{color:var(--muted);font-size:13px}
"""


def _table(rows: list[dict], cols: list[tuple[str, str]], numeric: set[str] = frozenset()) -> str:
    head = "".join(f'<th class="num">{e(t)}</th>' if k in numeric else f"<th>{e(t)}</th>" for k, t in cols)
    body = []
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k)
            if k == "yield":
                cells.append(f'<td class="num">{pct(v)}</td>')
            elif k in numeric:
                cells.append(f'<td class="num">{e(num(v))}</td>')
            else:
                cells.append(f"<td>{e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _html_cell(row: dict | None, best: bool, run: Run) -> str:
    if row is None:
        return f'<td class="num missing">{_missing(run)}</td>'
    n = f" · n={num(row.get('n'))}" if row.get("n") is not None else ""
    return (
        f'<td class="num{" best" if best else ""}"><b>{pct(row["accuracy"])}</b>'
        f'<span class="ci">{e(ci(row.get("ci95")))}{e(n)}</span></td>'
    )


def _html_summary(runs: list[Run], figures: dict[str, str]) -> str:
    datasets = _datasets(runs)
    lines = list(_summary(runs))
    best = {}
    for d in datasets:
        accs = [cells[d]["accuracy"] for _, _, cells in lines if d in cells]
        if len(set(accs)) > 1:  # nothing to single out when all are equal
            best[d] = max(accs)
    head = "<th>Run</th><th>Method</th><th>Student</th><th>Variant</th>"
    head += "".join(f'<th class="num">{e(d)}</th>' for d in datasets) + '<th class="num">Train time</th>'
    body = []
    for i, (run, variant, cells) in enumerate(lines):
        anchor = f'<a href="#run-{runs.index(run) + 1}">{e(run.name)}</a>'
        row = f"<td>{anchor}</td><td>{e(run.method)}</td><td>{e(run.student)}</td>"
        if variant is None:
            span = max(len(datasets), 1)
            row += f'<td class="missing">—</td><td class="missing" colspan="{span}">{_missing(run)}</td><td></td>'
        else:
            row += f"<td>{e(variant)}</td>"
            row += "".join(_html_cell(cells.get(d), cells.get(d, {}).get("accuracy") == best.get(d), run) for d in datasets)
            secs = next((r.get("train_seconds") for r in cells.values() if r.get("train_seconds")), None)
            row += f'<td class="num">{e(num(secs, " s"))}</td>'
        body.append(f"<tr>{row}</tr>")
    out = [
        "<h2 id='summary'>Summary</h2>",
        '<p class="sub">Accuracy per dataset; below each figure the 95% confidence interval and the number of '
        "problems. Best per dataset in green.</p>",
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>',
    ]
    if "accuracy" in figures:
        out.append(_figure(figures["accuracy"], "Accuracy per dataset; error bars are 95% confidence intervals."))
    if "loss" in figures:
        out.append(_figure(figures["loss"], "Training loss and learning rate of every adapter of every run."))
    return "\n".join(out)


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{e(src)}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'


def _html_examples(title: str, examples: list[dict], text_key: str) -> str:
    if not examples:
        return ""
    parts = []
    for ex in examples:
        verdict = '<span class="ok">correct</span>' if ex.get("correct") else '<span class="bad">wrong</span>'
        text = str(ex.get(text_key) or "")
        text = text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"
        parts.append(
            f'<div class="example"><p>{verdict} · id {e(ex.get("problem_id", ex.get("id")))} · '
            f"prediction <b>{e(ex.get('prediction'))}</b> · gold <b>{e(ex.get('gold'))}</b></p>"
            f"<p>{e(ex.get('question'))}</p><pre>{e(text)}</pre></div>"
        )
    return f"<details><summary>{e(title)}</summary>{''.join(parts)}</details>"


def _html_run(i: int, run: Run, figures: dict[str, str]) -> str:
    out = [f'<h2 id="run-{i}">{e(run.name)}<span class="tag">{e(run.method)}</span></h2>']
    badges = []
    for stage in SHOWN_STAGES:
        state = run.stage_state(stage)
        cls = {"done": "done", "in progress": "progress"}.get(state, "todo")
        mark = {"done": " ✓", "in progress": " …"}.get(state, f": {state}")
        badges.append(f'<span class="stage {cls}">{e(stage)}{mark}</span>')
    out.append(f'<div class="stages">{"".join(badges)}</div>')
    kv = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _manifest_items(run))
    out.append(f'<table class="kv">{kv}</table>')
    if run.config_text is not None:
        out.append(f"<details><summary>config.yaml</summary><pre>{e(run.config_text)}</pre></details>")

    out.append("<h3>Teacher data: yield per format</h3>")
    if run.thoughts:
        numeric = {"problems", "rationales", "correct", "kept", "examples"}
        out.append(_table(_yield_rows(run), YIELD_COLS, numeric))
        if run.data_summary:
            out.append(f'<p class="sub">Training set: {e(num(run.data_summary.get("examples")))} examples.</p>')
        for t in run.thoughts:
            out.append(_html_examples(f"Example rationales: {t.name}", t.examples, "text"))
    else:
        out.append(f'<p class="missing">{e(run.stage_state("teach"))}</p>')

    out.append("<h3>Training</h3>")
    if run.adapters:
        cols = [(k, k.capitalize()) for k in ("adapter", "steps", "examples", "tokens", "seconds", "first loss", "last loss", "state")]
        out.append(_table(_train_rows(run), cols, {"steps", "examples", "tokens", "seconds", "first loss", "last loss"}))
        if f"train:{id(run)}" in figures:
            out.append(_figure(figures[f"train:{id(run)}"], f"Training curves of {run.name}."))
    else:
        out.append(f'<p class="missing">{e(run.stage_state("train"))}</p>')

    out.append("<h3>Evaluation</h3>")
    if run.evals:
        head = "<th>Dataset</th><th>Variant</th>" + "".join(f'<th class="num">{h}</th>' for h in ("n", "Correct", "Accuracy", "95% CI"))
        body = []
        for ev in run.evals:
            m = ev.metrics
            if m is None:
                cells = '<td class="missing" colspan="4">in progress (no metrics.json yet)</td>'
            else:
                cells = "".join(
                    f'<td class="num">{v}</td>' for v in (e(num(m.get("n"))), e(num(m.get("correct"))), f"<b>{pct(m['accuracy'])}</b>", e(ci(m.get("ci95"))))
                )
            body.append(f"<tr><td>{e(ev.dataset)}</td><td>{e(ev.variant)}</td>{cells}</tr>")
        out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
        for ev in run.evals:
            out.append(_html_examples(f"Example predictions: {ev.dataset} / {ev.variant}", ev.examples, "output"))
    else:
        out.append(f'<p class="missing">{e(run.stage_state("eval"))}</p>')
    return "\n".join(out)


def _html(runs: list[Run], figures: dict[str, str], generated: str) -> str:
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs"
    nav = "".join(f'<a href="#run-{i}">{e(r.name)}</a>' for i, r in enumerate(runs, 1))
    body = [
        f"<h1>mathdistill report: {e(title)}</h1>",
        f'<p class="sub">Generated {e(generated)} by mathdistill {e(mathdistill.__version__)}.</p>',
        f'<nav><a href="#summary">Summary</a>{nav}</nav>',
        _html_summary(runs, figures),
        *(_html_run(i, run, figures) for i, run in enumerate(runs, 1)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mathdistill report: {e(title)}</title><style>{CSS}</style></head>\n"
        f"<body><main>\n{chr(10).join(body)}\n</main></body></html>\n"
    )


# ---------------------------------------------------------------------------- Markdown


def m(x) -> str:
    """Text for a Markdown table cell: HTML-escaped, pipes escaped, on one line."""
    return e(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows), ""]


def _fence(text: str) -> str:
    ticks = "`" * max(3, 1 + max((len(t) for t in re.findall(r"`+", text)), default=0))
    return f"{ticks}yaml\n{text.rstrip()}\n{ticks}"


def _markdown(runs: list[Run], figures: dict[str, str], generated: str) -> str:
    datasets = _datasets(runs)
    out = [f"# mathdistill report", "", f"Generated {generated} by mathdistill {mathdistill.__version__}.", "", "## Summary", ""]
    rows = []
    for run, variant, cells in _summary(runs):
        line = [m(run.name), m(run.method), m(variant)]
        for d in datasets:
            r = cells.get(d)
            line.append(f"**{pct(r['accuracy'])}** {ci(r.get('ci95'))} n={num(r.get('n'))}" if r else _missing(run))
        rows.append(line)
    out += _md_table(["Run", "Method", "Variant", *map(m, datasets)], rows)
    for key, caption in (("accuracy", "Accuracy per dataset (95% CI)"), ("loss", "Training loss, all runs")):
        if key in figures:
            out += [f"![{caption}]({figures[key]})", ""]

    for run in runs:
        out += [f"## {m(run.name)} ({m(run.method)})", ""]
        out += [" · ".join(f"{s}: {run.stage_state(s)}" for s in SHOWN_STAGES), ""]
        out += [f"- **{k}**: {m(v)}" for k, v in _manifest_items(run)] + [""]
        out += ["### Teacher data: yield per format", ""]
        if run.thoughts:
            cols = [k for k, _ in YIELD_COLS]
            fmt = {"yield": pct}
            out += _md_table(
                [t for _, t in YIELD_COLS], [[fmt.get(k, lambda v: m(num(v)))(r[k]) for k in cols] for r in _yield_rows(run)]
            )
        else:
            out += [f"_{run.stage_state('teach')}_", ""]
        out += ["### Training", ""]
        if run.adapters:
            cols = ["adapter", "steps", "examples", "tokens", "seconds", "first loss", "last loss", "state"]
            out += _md_table(cols, [[m(num(r[k])) for k in cols] for r in _train_rows(run)])
            if f"train:{id(run)}" in figures:
                out += [f"![Training curves of {m(run.name)}]({figures[f'train:{id(run)}']})", ""]
        else:
            out += [f"_{run.stage_state('train')}_", ""]
        out += ["### Evaluation", ""]
        if run.evals:
            rows = []
            for ev in run.evals:
                mt = ev.metrics or {}
                acc = pct(mt["accuracy"]) if ev.metrics else "in progress"
                rows.append([m(ev.dataset), m(ev.variant), num(mt.get("n")), num(mt.get("correct")), acc, ci(mt.get("ci95"))])
            out += _md_table(["Dataset", "Variant", "n", "Correct", "Accuracy", "95% CI"], rows)
        else:
            out += [f"_{run.stage_state('eval')}_", ""]
        if run.config_text is not None:
            out += ["<details><summary>config.yaml</summary>", "", _fence(run.config_text), "", "</details>", ""]
    return "\n".join(out)
