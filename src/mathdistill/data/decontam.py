"""Decontamination: new training problems checked against every test set in the data root.

    dc = Decontaminator.from_data_root(data_dir)              # ngram=13, cosine=0.8
    rows = dc.check(["Janet's ducks lay 16 eggs ...", ...])
    rows[0]["contaminated"], rows[0]["reason"], rows[0]["cosine"], rows[0]["nearest"]

A question is contaminated when it shares any word n-gram (13 by default) with a test question,
or when its TF-IDF cosine similarity (`mathdistill.data.tfidf`, words) to a test question is at
least `cosine` (0.8 by default). Both thresholds are settings. Each row says how close the
question came to the test data whatever the verdict: the largest cosine and the test item it
belongs to, and a shared n-gram with its test item, if any. `plot_similarity` draws their
distribution (the leakage figure of the FDD paper).

Test sets: every dataset of `mathdistill.data.DATASETS` with a test split whose file is in the
local data root (GSM8K, SVAMP, ASDiv, the four MAWPS sets, GSM-Hard, MATH-500 in ../shared/data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from mathdistill.data import DATASETS, Problem, load
from mathdistill.data.tfidf import TfIdf, words
from mathdistill.io import InputError
from mathdistill.paths import data_dir as resolve_data_dir

__all__ = ["Decontaminator", "load_test_sets", "plot_similarity", "histogram"]


def load_test_sets(data_dir: str | Path | None = None) -> list[Problem]:
    """Every test problem of every dataset whose test file is in the local data root."""
    root = resolve_data_dir(data_dir)
    if root is None:
        raise InputError("decontamination needs the local data root (--data-dir, $MATHDISTILL_DATA or ../shared/data)")
    names = [n for n, spec in DATASETS.items() if "test" in spec.files and (root / spec.files["test"]).is_file()]
    if not names:
        raise InputError(f"decontamination: no test set found in the data root {root}")
    return [p for n in names for p in load(n, "test", data_dir=root)]


def _item(p: Problem) -> dict:
    return {"dataset": p.source, "id": p.id, "question": p.question}


class Decontaminator:
    """An index of test questions; `check` says which new questions are too close to any of them."""

    def __init__(self, tests: Sequence[Problem], ngram: int = 13, cosine: float = 0.8,
                 tfidf_ngrams: tuple[int, int] = (1, 1)):
        if ngram < 1:
            raise InputError(f"decontamination: ngram must be >= 1 (got {ngram})")
        if not 0 < cosine <= 1:
            raise InputError(f"decontamination: cosine threshold must be in (0, 1] (got {cosine})")
        self.tests, self.n, self.threshold = list(tests), ngram, cosine
        self.grams: dict[str, int] = {}  # n-gram -> the first test item that has it
        for i, p in enumerate(self.tests):
            for g in self._grams(p.question):
                self.grams.setdefault(g, i)
        self.index = TfIdf([p.question for p in self.tests], tfidf_ngrams)

    @classmethod
    def from_data_root(cls, data_dir: str | Path | None = None, **kwargs) -> "Decontaminator":
        return cls(load_test_sets(data_dir), **kwargs)

    def _grams(self, text: str) -> list[str]:
        w = words(text)
        return [" ".join(w[i : i + self.n]) for i in range(len(w) - self.n + 1)]

    def check(self, questions: Sequence[str]) -> list[dict]:
        """One row per question: contaminated, reason ("13-gram" | "cosine" | None), cosine (the
        largest), nearest (that test item: dataset, id, question), ngram and ngram_item (a shared
        n-gram and its test item, or None)."""
        questions = list(questions)
        idx, sim = self.index.top(questions, 1) if questions and self.tests else (None, None)
        rows = []
        for j, q in enumerate(questions):
            shared = next((g for g in self._grams(q) if g in self.grams), None)
            cos = float(sim[j, 0]) if sim is not None else 0.0
            reason = f"{self.n}-gram" if shared else ("cosine" if cos >= self.threshold else None)
            rows.append({
                "contaminated": reason is not None, "reason": reason, "cosine": round(cos, 4),
                "nearest": _item(self.tests[int(idx[j, 0])]) if sim is not None else None,
                "ngram": shared, "ngram_item": _item(self.tests[self.grams[shared]]) if shared else None,
            })
        return rows


def histogram(values: Sequence[float], bins: int = 10) -> list[dict]:
    """Counts of `values` (cosines in [0, 1]) in `bins` equal bins: rows {bin, count}."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v * bins)))] += 1
    return [{"bin": f"{i / bins:.1f}-{(i + 1) / bins:.1f}", "count": c} for i, c in enumerate(counts)]


def plot_similarity(series: Mapping[str, Sequence[float]], threshold: float, path: str | Path,
                    title: str = "Largest TF-IDF cosine to any test question") -> Path:
    """Histograms of each series' largest cosines to the test sets, with the threshold marked."""
    from mathdistill.report.plots import figure, save

    fig, ax = figure((6.0, 3.4))
    edges = [i / 40 for i in range(41)]
    for name, values in series.items():
        if values:
            ax.hist(list(values), bins=edges, alpha=0.55, label=f"{name} (n={len(values)})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("largest cosine similarity to a test question")
    ax.set_ylabel("problems")
    ax.set_title(title, fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False)
    return save(fig, path)
