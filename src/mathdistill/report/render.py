"""Write the report: index.html + report.md + figures, for one or more run folders.

The report is built once as a list of blocks (report/blocks.py: headings, paragraphs, tables,
figures, details) and rendered twice, to HTML and to Markdown, so both say the same. The HTML is
self-contained (inline CSS, no scripts, no fonts or files from the network; figures are image files
next to it, referenced by relative name). Every piece of text from a run folder is escaped.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from pathlib import Path

import mathdistill
from mathdistill.io import InputError, atomic_open, write_text
from mathdistill.report.blocks import (Cell, Details, Examples, Figure, Heading, KeyValues, Nav, Para, Table, acc_cell,
                                       ci, e, n_cell, num_text, pct)
from mathdistill.report.plots import plot_accuracy, plot_by_scope, plot_training
from mathdistill.report.runs import Run, log_tail, load_run


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write out_dir/index.html, out_dir/report.md and the figures; return the index.html path.

    Every run folder is read (and validated) before anything is written; every file is
    written atomically, index.html last."""
    if not run_dirs:
        raise InputError("no run folders given")
    runs = [load_run(d) for d in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    several = len(runs) > 1
    figures: dict[str, str] = {}  # key -> file name relative to out_dir

    rows = [dict(r, label=label) for run in runs for r, label in zip(run.rows, _labels(run, several))]
    if rows:
        figures["accuracy"] = plot_accuracy(rows, out_dir / "accuracy.png", "Accuracy per dataset (95% CI)").name
    for run, slug in zip(runs, _slugs([r.name for r in runs])):
        scoped = _scoped_rows(run)
        if scoped:
            path = out_dir / f"scopes-{slug}.png"
            figures[f"scopes:{id(run)}"] = plot_by_scope(scoped, run.scope_order(), path, f"Accuracy by scope: {run.name}").name
        logs = {_where(a.scope, a.name): a.log for a in run.adapters if a.log}
        if logs:
            figures[f"train:{id(run)}"] = plot_training(logs, out_dir / f"train-{slug}.png", f"Training: {run.name}").name
        for i, fig in enumerate(run.figures):
            src = (run.path / fig["file"]).resolve()
            if src.is_file() and src.is_relative_to(run.path.resolve()):
                name = f"{slug}-{i + 1}-" + re.sub(r"[^A-Za-z0-9._-]+", "-", src.name)
                with atomic_open(out_dir / name, "wb") as f:
                    f.write(src.read_bytes())
                figures[f"extra:{id(run)}:{i}"] = name
    logged = [run for run in runs if any(a.log for a in run.adapters)]
    if len(logged) > 1:
        logs = {f"{run.name} · {_where(a.scope, a.name)}": a.log for run in logged for a in run.adapters if a.log}
        figures["loss"] = plot_training(logs, out_dir / "loss-comparison.png", "Training loss, all runs").name

    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs"
    blocks = [
        Heading(1, f"mathdistill report: {title}"),
        Para(f"Generated {generated} by mathdistill {mathdistill.__version__}.", "sub"),
        *_top(runs),
        Nav([("summary", "Summary")] + [(f"run-{i}", r.name) for i, r in enumerate(runs, 1)]),
        *_summary(runs, figures),
        *(b for i, run in enumerate(runs, 1) for b in _run(i, run, figures)),
    ]
    write_text(out_dir / "report.md", "\n".join(t for t in (b.md() for b in blocks) if t).rstrip() + "\n")
    index = out_dir / "index.html"
    write_text(index, _page(title, "\n".join(b.html() for b in blocks)))
    return index


def _text(v) -> str | None:
    """A value from a JSON file as one line of text (objects as `k v · k v`)."""
    if isinstance(v, dict):
        return " · ".join(f"{k} {'—' if x is None else x}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return None if v is None else str(v)


def _where(scope: str | None, name: str) -> str:
    return f"{scope}/{name}" if scope else name


def _slugs(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
        base, k = slug, 2
        while slug in out:
            slug, k = f"{base}-{k}", k + 1
        out.append(slug)
    return out


def _labels(run: Run, several: bool) -> list[str]:
    """Series name of each result row in the comparison plot: the row name (contract 9), with the
    run when several runs are compared and the scope when the name alone is not unique."""
    rows = run.rows
    seen = [(r["method"], r["dataset"]) for r in rows]
    out = []
    for r in rows:
        label = str(r["method"])
        if r.get("scope") and seen.count((r["method"], r["dataset"])) > 1:
            label += f" · {r['scope']}"
        out.append(f"{run.name} · {label}" if several else label)
    return out


def family(name: str) -> str:
    """A row name without its round/iteration marker: `fdd-r1` -> `fdd`, `siked-i2:pot` -> `siked:pot`."""
    return re.sub(r"-[ri]\d+(?=$|[:+])", "", name)


def _scoped_rows(run: Run) -> list[dict]:
    """Rows that carry a scope, labelled by row family and dataset (one line each in the scope plot)."""
    return [dict(r, label=f"{family(str(r['method']))} · {r['dataset']}") for r in run.rows if r.get("scope")]


def _student_text(student: dict) -> str | None:
    parts = [student.get("name"), student.get("quantisation"), student.get("origin") and f"from {student['origin']}"]
    return " · ".join(str(p) for p in parts if p) or None


def _status(run: Run) -> Para:
    """One line: finished (when, how long), running (which stage), or failed (which stage, error, log)."""
    mf = run.manifest
    resumed = len(mf.get("resumed") or [])
    again = f", resumed {resumed}×" if resumed else ""
    if run.status == "finished":
        stages = len(run.stages)
        return Para(f"{mf.get('finished') or '—'} · {run.seconds:,.1f} s in {stages} stage{'s' * (stages != 1)}{again}",
                    "ok", "finished")
    failed = "; ".join(f"stage {s.id}: {s.error or 'no error recorded'} (log: {run.path / s.log if s.log else '—'})"
                       for s in run.failed)
    if run.status == "failed":
        return Para(f"{failed or 'no failed stage recorded'}. Fix what it names and re-run the same command: finished "
                    "stages are kept and the failed one starts again.", "alert", "failed:")
    now = ", ".join(s.id for s in run.running) or "none"
    earlier = f" Failed in an earlier attempt, to be redone: {failed}." if failed else ""
    return Para(f"started {mf.get('started') or '—'}{again}; stage running: {now}; {run.seconds:,.1f} s in finished "
                "stages so far. If no mathdistill process is working on this folder, it was stopped: re-run the same "
                f"command to resume.{earlier}", "warn", "running:")


def _teacher_rows(run: Run) -> list[list]:
    scoped = any(t.scope for t in run.thoughts)
    out = []
    for t in run.thoughts:
        s = t.summary or {}
        per = (s.get("per_thought") or {}).get(t.name) or {}  # the `teach` command's summary
        rationales, correct = s.get("rationales", per.get("rows")), s.get("correct", per.get("correct"))
        y = s.get("yield", per.get("yield"))
        if y is None and rationales:
            y = (correct or 0) / rationales
        tokens = s.get("tokens")
        if isinstance(tokens, dict):
            tokens = f"{num_text(tokens.get('prompt'))} / {num_text(tokens.get('completion'))}"
        elif "prompt_tokens" in s:
            tokens = f"{num_text(s['prompt_tokens'])} / {num_text(s.get('completion_tokens'))}"
        cost = s.get("cost")
        cost = f"${cost:.4f}" if isinstance(cost, (int, float)) else None
        if cost and isinstance(s.get("cost_total"), (int, float)) and s["cost_total"] != s["cost"]:
            cost += f" (${s['cost_total']:.4f} with cached)"
        teacher = _text(s.get("teacher")) or ("summary.json not written yet" if not s else "—")
        examples = (run.data.get(t.scope) or {}).get("per_thought", {}).get(t.name)
        requests = f"{num_text(s['requests'])} ({num_text(s.get('cache_hits'))} cached)" if "requests" in s else None
        row = [t.name, Cell(teacher, "offline stand-in" if t.offline_stand_in else "", kind="bad" if t.offline_stand_in else ""),
               n_cell(s.get("problems", per.get("problems"))), n_cell(rationales), n_cell(correct),
               Cell(pct(y), num=True), n_cell(s.get("kept", per.get("kept"))), n_cell(examples), tokens, requests, cost]
        out.append(([t.scope or "—"] if scoped else []) + row)
    return out


TEACHER_HEADER = ["Thought", "Teacher", "Problems", "Rationales", "Correct", "Yield", "Kept", "Train examples",
                  "Tokens in / out", "Requests", "Cost"]


def _stand_ins(run: Run) -> list[Para]:
    """One warning per offline stand-in teacher, naming the formats (and scopes) it produced."""
    found: dict[tuple, list[str]] = {}
    for t in run.thoughts:
        if t.offline_stand_in:
            s = t.summary or {}
            why = s["offline_stand_in"] if isinstance(s["offline_stand_in"], str) else "recorded or gold-derived, not a live teacher"
            found.setdefault((_text(s.get("teacher")) or "?", why), []).append(_where(t.scope, t.name))
    return [Para(f"{', '.join(where)} rationales come from {teacher} ({why})", "warn", "offline stand-in:")
            for (teacher, why), where in found.items()]


# ---------------------------------------------------------------------------- sections


def _summary(runs: list[Run], figures: dict[str, str]) -> list:
    datasets = list(dict.fromkeys(str(r["dataset"]) for run in runs for r in run.rows))
    lines = []  # (run, row name, scope, {dataset: row})
    for run in runs:
        groups: dict[tuple, dict] = {}
        for r in run.rows:
            groups.setdefault((str(r["method"]), r.get("scope")), {})[str(r["dataset"])] = r
        lines += [(run, name, scope, cells) for (name, scope), cells in groups.items()] or [(run, None, None, {})]
    best = {}
    for d in datasets:
        accs = [cells[d]["accuracy"] for *_, cells in lines if d in cells]
        if len(set(accs)) > 1:  # nothing to single out when all are equal
            best[d] = max(accs)
    scoped = any(scope for _, _, scope, _ in lines)
    body = []
    for run, name, scope, cells in lines:
        row = [run.name, run.method, _student_text(run.student) or "—", name or Cell(_no_results(run), kind="missing")]
        row += [scope or "—"] if scoped else []
        row += [acc_cell(cells.get(d), d in cells and cells[d]["accuracy"] == best.get(d), "not evaluated") for d in datasets]
        secs = next((r.get("train_seconds") for r in cells.values() if r.get("train_seconds")), None)
        body.append(row + [n_cell(secs, " s")])
    header = ["Run", "Method", "Student", "Row", *(["Scope"] if scoped else []), *datasets, "Train time"]
    out = [
        Heading(2, "Summary", "summary"),
        Para("Accuracy per dataset; below each figure the 95% confidence interval and the number of problems. "
             "Best per dataset in green.", "sub"),
        Table(header, body),
    ]
    if "accuracy" in figures:
        out.append(Figure(figures["accuracy"], "Accuracy per dataset; error bars are 95% confidence intervals."))
    if "loss" in figures:
        out.append(Figure(figures["loss"], "Training loss and learning rate of every adapter of every run."))
    return out


def _no_results(run: Run) -> str:
    if run.status == "running":
        return "no results yet (running)"
    if run.status == "failed":
        return f"no results (failed at {', '.join(s.id for s in run.failed) or '?'})"
    return "no results"


def _top(runs: list[Run]) -> list[Para]:
    """What a reader must see first, per run: its status, the student it trained (provenance), the
    run's notes and every offline stand-in teacher."""
    out = []
    for run in runs:
        first = len(out)
        st = run.student
        student = "; ".join(x for x in (
            st.get("name"), st.get("quantisation"), st.get("origin") and f"public origin {st['origin']}",
            st.get("file") and f"file {st['file']}", st.get("sha256") and f"sha256 {st['sha256']}") if x)
        out += [_status(run), Para(student or "not recorded", "", "student:")]
        out += [Para(n, "note", "note:") for n in run.notes]
        out += _stand_ins(run)
        if len(runs) > 1:
            for p in out[first:]:
                p.lead = f"{run.name}: {p.lead}"
    return out


def _run(i: int, run: Run, figures: dict[str, str]) -> list:
    mf = run.manifest
    out: list = [Heading(2, run.name, f"run-{i}", run.method), _status(run)]
    st = run.student
    out += [Heading(3, "Student"), KeyValues([
        ("model", st.get("name")), ("public origin", st.get("origin")), ("quantisation", st.get("quantisation")),
        ("file", st.get("file")), ("sha256", st.get("sha256")), ("revision", st.get("revision")),
        ("loaded from", st.get("resolved_path")),
        *((k, _text(v)) for k, v in st.items() if k not in ("name", "origin", "quantisation", "file", "sha256",
                                                             "revision", "resolved_path")),
    ])]
    command = shlex.join(str(c) for c in mf["command"]) if isinstance(mf.get("command"), list) else mf.get("command")
    out += [Heading(3, "Run"), KeyValues([
        ("folder", str(run.path)), ("status", run.status), ("started", mf.get("started")),
        ("resumed", _text(mf.get("resumed"))), ("finished", mf.get("finished")), ("seed", mf.get("seed", run.config.get("seed"))),
        ("git revision", mf.get("git_revision")), ("command", command),
        ("versions", _text(mf.get("versions"))), ("machine", _text(mf.get("machine"))),
    ])]

    out.append(Heading(3, "Stages"))
    if run.stages:
        rows = []
        for s in run.stages:
            note = f"{s.error or 'failed'} · log: {run.path / s.log if s.log else '—'}" if s.status == "failed" else (s.log or "")
            rows.append([s.id, Cell(s.status, kind="bad" if s.status == "failed" else ""), n_cell(s.seconds, " s"),
                         n_cell(s.attempts), s.finished or "—", Cell(note, kind="bad" if s.status == "failed" else "")])
        out.append(Table(["Stage", "Status", "Seconds", "Attempts", "Finished", "Error / log"], rows))
        for s in run.failed:
            tail = log_tail(run, s)
            if tail:
                out.append(Details(f"last lines of {s.log}", tail))
    else:
        out.append(Para("no stage has run yet", "missing"))

    out += _results(run, figures)

    if run.tables or run.figures:
        out.append(Heading(3, "Method results"))
        for t in run.tables:
            keys = list(dict.fromkeys(k for r in t["rows"] for k in r))
            out += [Heading(4, str(t.get("title") or "table")),
                    Table(keys, [[n_cell(r.get(k)) if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                  else _text(r.get(k)) for k in keys] for r in t["rows"]])]
        for j, fig in enumerate(run.figures):
            caption = str(fig.get("caption") or fig["file"])
            key = f"extra:{id(run)}:{j}"
            out.append(Figure(figures[key], caption) if key in figures else Para(f"figure {fig['file']} not found", "missing"))

    out.append(Heading(3, "Teacher data: yield per format"))
    if run.thoughts:
        scoped = any(t.scope for t in run.thoughts)
        out.append(Table((["Scope"] if scoped else []) + TEACHER_HEADER, _teacher_rows(run)))
        for scope, d in run.data.items():
            out.append(Para(f"Training set{f' ({scope})' if scope else ''}: {num_text(d.get('examples'))} examples.", "sub"))
        out += [Examples(f"Example rationales: {_where(t.scope, t.name)}", t.examples, "text") for t in run.thoughts]
    else:
        out.append(Para("no teacher data in this run", "missing"))

    out.append(Heading(3, "Training"))
    if run.adapters:
        rows = []
        for a in run.adapters:
            s = a.summary or {}
            rows.append([_where(a.scope, a.name), n_cell(s.get("steps", a.log[-1].get("step") if a.log else None)),
                         n_cell(s.get("examples")), n_cell(s.get("tokens")), n_cell(s.get("seconds")),
                         n_cell(a.log[0]["loss"] if a.log else None), n_cell(a.log[-1]["loss"] if a.log else None),
                         "done" if a.summary else "in progress"])
        out.append(Table(["Adapter", "Steps", "Examples", "Tokens", "Seconds", "First loss", "Last loss", "State"], rows))
        if f"train:{id(run)}" in figures:
            out.append(Figure(figures[f"train:{id(run)}"], f"Training curves of {run.name}."))
    else:
        out.append(Para("no training in this run", "missing"))

    out.append(Heading(3, "Evaluations"))
    if run.evals:
        rows = []
        for ev in run.evals:
            mt = ev.metrics
            if mt is None:
                rows.append([ev.folder, Cell("in progress (no metrics.json yet)", kind="missing"), "", "", ""])
            else:
                rows.append([ev.folder, n_cell(mt.get("n")), n_cell(mt.get("correct")), Cell(pct(mt["accuracy"]), num=True, bold=True),
                             Cell(ci(mt.get("ci95")), num=True)])
        out.append(Table(["Folder", "n", "Correct", "Accuracy", "95% CI"], rows))
        out += [Examples(f"Example predictions: {ev.folder}", ev.examples, "output") for ev in run.evals]
    else:
        out.append(Para("no evaluation in this run", "missing"))

    if run.config_text is not None:
        out.append(Details("config.yaml", run.config_text, "yaml"))
    return out


def _results(run: Run, figures: dict[str, str]) -> list:
    out: list = [Heading(3, "Results")]
    if not run.rows:
        return out + [Para(_no_results(run) + " (results.json is written when the recipe ends)", "missing")]
    scoped = any(r.get("scope") for r in run.rows)
    body = []
    for r in run.rows:
        body.append([str(r["method"]), *([r.get("scope") or "—"] if scoped else []), r["dataset"], r.get("variant") or "—",
                     n_cell(r.get("n")), n_cell(r.get("correct")), acc_cell(r), n_cell(r.get("train_seconds"), " s"),
                     n_cell(r.get("train_steps")), n_cell(r.get("train_tokens")), n_cell(r.get("eval_seconds"), " s"),
                     _provenance_cell(r)])
    header = ["Row", *(["Scope"] if scoped else []), "Dataset", "Variant", "n", "Correct", "Accuracy (95% CI)",
              "Train time", "Train steps", "Train tokens", "Eval time", "Training data"]
    out.append(Table(header, body))
    if scoped:
        rows = _scoped_rows(run)
        series = list(dict.fromkeys(r["label"] for r in rows))
        cell = {(r["scope"], r["label"]): r for r in rows}
        info = {s.name: s for s in run.scopes}
        body = []
        for scope in run.scope_order():
            s = info.get(scope)
            body.append([scope, (s.status if s else None) or "—", n_cell(s.seconds if s else None, " s"),
                         *(acc_cell(cell.get((scope, name))) for name in series)])
        out += [Heading(4, "Accuracy by scope"), Table(["Scope", "Status", "Seconds", *series], body)]
        if f"scopes:{id(run)}" in figures:
            out.append(Figure(figures[f"scopes:{id(run)}"], "Accuracy by scope, one line per row family and dataset; "
                                                           "error bars are 95% confidence intervals."))
    return out


def _provenance_cell(row: dict) -> Cell:
    """Where a row's training data came from (contract 9): offline stand-in / live teacher / untrained, and who."""
    if "offline_stand_in" not in row:
        return Cell("not recorded", kind="missing")
    teacher = row.get("teacher")
    who = "; ".join(f"{f}: {t}" for f, t in teacher.items()) if isinstance(teacher, dict) else ""
    if row["offline_stand_in"]:
        return Cell("offline stand-in", _text(row.get("teacher_note")) or who, kind="bad")
    if teacher is None:
        return Cell(_text(row.get("teacher_note")) or "untrained", kind="missing")
    return Cell("live teacher", who)


# ---------------------------------------------------------------------------- page

CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d8dee4;--soft:#f6f8fa;--accent:#0969da;--ok:#1a7f37;--bad:#cf222e}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 80px}
h1{font-size:26px;margin:0 0 2px}
h2{font-size:21px;margin:44px 0 6px;padding-top:14px;border-top:2px solid var(--line)}
h3{font-size:16px;margin:22px 0 6px}
h4{font-size:14px;margin:16px 0 4px}
p.sub{color:var(--muted);font-size:13px;margin:0 0 10px}
p.missing,td.missing{color:var(--muted);font-style:italic}
p.ok,p.warn,p.alert,p.note{padding:8px 12px;border-radius:6px;margin:8px 0;border:1px solid}
p.ok{background:#dafbe1;border-color:#aceebb}
p.warn{background:#fff8c5;border-color:#eed888}
p.alert{background:#ffebe9;border-color:#ffcecb}
p.note{background:#ddf4ff;border-color:#b6e3ff}
nav{font-size:14px;margin:8px 0 18px}
nav a{color:var(--accent);text-decoration:none;margin-right:14px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:6px 0 14px;font-size:14px}
th,td{padding:6px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best b{color:var(--ok)}
td.bad{color:var(--bad)}
.ci{display:block;color:var(--muted);font-size:12px}
table.kv th{background:none;text-align:right;color:var(--muted);font-weight:500;padding-left:0}
table.kv td{word-break:break-word}
.tag{display:inline-block;font-size:12px;font-weight:600;padding:1px 9px;border-radius:10px;background:#ddf4ff;color:#0550ae;vertical-align:middle;margin-left:6px}
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


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mathdistill report: {e(title)}</title><style>{CSS}</style></head>\n"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )
