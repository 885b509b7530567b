"""Matplotlib figures (Agg backend, PNG files written atomically).

A figure of one's own (a method's, a data check's) uses the same three calls the ones here use:

    fig, ax = figure((5.5, 3.4))       # a new figure on the Agg backend (matplotlib imported on first use)
    ax.plot(...)                       # any matplotlib calls (`pyplot()` for the module itself)
    return save(fig, path)             # PNG written atomically, the figure closed; the path

`plot_accuracy` is meant for reuse: it takes rows shaped like results.json "rows"
(method, dataset, variant, accuracy, ci95) and draws grouped bars with 95% CI error bars.
`plot_by_scope` draws the same rows against their `scope` (round, iteration): one line per series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from mathdistill.io import atomic_open


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(size: tuple[float, float]):
    """(figure, axes) of a new one-panel figure of `size` inches."""
    return pyplot().subplots(figsize=size)


def save(fig, path: str | Path) -> Path:
    """`fig` as a PNG at `path` (written atomically), then closed; returns the path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def series_label(row: Mapping) -> str:
    """Legend label of a row: its `label`, else `method`, plus ` · variant` when that differs."""
    if row.get("label"):
        return str(row["label"])
    method, variant = str(row.get("method") or "?"), row.get("variant")
    return f"{method} · {variant}" if variant and variant != method else method


def _point(row: Mapping) -> tuple[float, float, float]:
    """Accuracy in % and the error bar below and above it (the 95% CI; none without one)."""
    acc = 100 * float(row["accuracy"])
    lo, hi = (100 * float(v) for v in row["ci95"]) if row.get("ci95") else (acc, acc)
    return acc, max(acc - lo, 0.0), max(hi - acc, 0.0)


def plot_accuracy(rows: Iterable[Mapping], path: str | Path, title: str = "Accuracy (95% CI)") -> Path:
    """Grouped bars: one group per dataset, one bar per series (see `series_label`), accuracy in %
    with the 95% CI as error bars. `accuracy` and `ci95` are fractions in [0, 1]."""
    plt = pyplot()
    rows = list(rows)
    datasets = list(dict.fromkeys(str(r["dataset"]) for r in rows))
    series = list(dict.fromkeys(series_label(r) for r in rows))
    cell = {(series_label(r), str(r["dataset"])): r for r in rows}

    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + len(datasets) * (0.5 + 0.45 * len(series))), 3.8))
    colors = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors
    top = 0.0
    for i, s in enumerate(series):
        xs, ys, err = [], [], [[], []]
        for j, d in enumerate(datasets):
            r = cell.get((s, d))
            if r is None:
                continue
            acc, below, above = _point(r)
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(acc)
            err[0].append(below)
            err[1].append(above)
            top = max(top, acc + above)
        bars = ax.bar(xs, ys, width * 0.92, yerr=err, capsize=3, label=s, color=colors[i % len(colors)],
                      error_kw={"elinewidth": 1, "ecolor": "#333"})
        ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], padding=2, fontsize=7, label_type="edge")
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, min(100.0, top * 1.15 + 5) if top else 100.0)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    if series:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, path)


def plot_by_scope(rows: Iterable[Mapping], scopes: list[str], path: str | Path,
                  title: str = "Accuracy by scope (95% CI)") -> Path:
    """Accuracy (%) against scope, x in the order of `scopes`, one line per series (see
    `series_label`) with the 95% CI as error bars. Rows without a scope in `scopes` are left out."""
    plt = pyplot()
    rows = [r for r in rows if r.get("scope") in scopes]
    series = list(dict.fromkeys(series_label(r) for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.9 * len(scopes)), 3.6))
    top = 0.0
    for s in series:
        points = sorted(((scopes.index(r["scope"]), r) for r in rows if series_label(r) == s), key=lambda p: p[0])
        xs, ys, err = [], [], [[], []]
        for x, r in points:
            acc, below, above = _point(r)
            xs.append(x)
            ys.append(acc)
            err[0].append(below)
            err[1].append(above)
            top = max(top, acc + above)
        ax.errorbar(xs, ys, yerr=err, marker="o", markersize=4, linewidth=1.4, capsize=3, label=s)
    ax.set_xticks(range(len(scopes)), scopes)
    ax.set_xlim(-0.4, len(scopes) - 0.6)
    ax.set_xlabel("scope")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, min(100.0, top * 1.15 + 5) if top else 100.0)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if series:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, path)


def plot_training(logs: Mapping[str, list[Mapping]], path: str | Path, title: str = "Training") -> Path:
    """Loss (left) and learning rate (right) against step, one line per named log
    (rows of train_log.jsonl: step, loss, learning_rate, epoch)."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    for name, log in logs.items():
        steps = [r.get("step", i) for i, r in enumerate(log)]
        marker = "o" if len(log) <= 30 else None
        ax_loss.plot(steps, [r["loss"] for r in log], marker=marker, markersize=3, linewidth=1.3, label=name)
        lr = [(s, r["learning_rate"]) for s, r in zip(steps, log) if isinstance(r.get("learning_rate"), (int, float))]
        if lr:
            ax_lr.plot(*zip(*lr), linewidth=1.3, label=name)
    for ax, ylabel in ((ax_loss, "training loss"), (ax_lr, "learning rate")):
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    ax_lr.yaxis.set_major_formatter(lambda v, _: f"{v:.3g}")
    if len(logs) > 1:
        ax_loss.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save(fig, path)
