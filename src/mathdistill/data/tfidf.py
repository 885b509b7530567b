"""TF-IDF cosine similarity over word n-grams, in numpy (no scikit-learn needed).

    index = TfIdf(pool_questions)                      # words (unigrams); ngrams=(1, 2) adds word pairs
    sims = index.scores(["How many apples ...?"])      # (queries x documents) cosine similarities
    idx, sim = index.top(queries, k=3)                 # the k most similar documents per query

Words: lower case, numbers kept whole (`1,000` is one word `1000`, `2.5` one word). Term weights:
sublinear tf (1 + log tf) times smoothed idf (log((1 + N) / (1 + df)) + 1, scikit-learn's
default), each vector scaled to unit length. A query term that no document has cannot match
anything, but it still counts in the query's length (with the largest idf), so a query full of
unknown words is not mistaken for a close match.
Shared by the pool teacher (`mathdistill.teacher.pool`) and decontamination (`mathdistill.data.decontam`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import numpy as np

__all__ = ["TfIdf", "words", "terms"]

_NUMBER_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?")


def words(text: str) -> list[str]:
    """The words of `text`: lower-case letters runs and numbers (thousands commas dropped)."""
    return _WORD.findall(_NUMBER_COMMA.sub("", text.lower()))


def terms(text: str, ngrams: tuple[int, int] = (1, 1)) -> list[str]:
    """Word n-grams of `text` for every n in the inclusive range `ngrams`."""
    w = words(text)
    lo, hi = ngrams
    return [" ".join(w[i : i + n]) for n in range(lo, hi + 1) for i in range(len(w) - n + 1)]


class TfIdf:
    """A TF-IDF index of `docs` (see the module docstring); `scores`/`top` compare queries with it."""

    def __init__(self, docs: Sequence[str], ngrams: tuple[int, int] = (1, 1)):
        if not 1 <= ngrams[0] <= ngrams[1]:
            raise ValueError(f"ngrams must be (lo, hi) with 1 <= lo <= hi, got {ngrams}")
        self.ngrams = tuple(ngrams)
        counts = [Counter(terms(d, self.ngrams)) for d in docs]
        df = Counter(t for c in counts for t in c)
        self.vocab = {t: i for i, t in enumerate(df)}
        n = len(docs)
        self.idf = np.array([math.log((1 + n) / (1 + df[t])) + 1 for t in self.vocab], dtype=np.float64)
        self.unseen_idf = math.log(1 + n) + 1
        self.size = n
        rows, cols, vals = [], [], []
        for i, c in enumerate(counts):
            ids, w = self._weights(c)
            rows.append(np.full(len(ids), i))
            cols.append(ids)
            vals.append(w)
        cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
        self._row, self._col, self._val = cat(rows, np.int64), cat(cols, np.int64), cat(vals, np.float32)

    def _weights(self, counts: Counter) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary ids, unit-length weights) of one text's known terms; unknown ones only add length."""
        known = [(self.vocab[t], n) for t, n in counts.items() if t in self.vocab]
        unseen = sum((1 + math.log(n)) ** 2 for t, n in counts.items() if t not in self.vocab) * self.unseen_idf ** 2
        ids = np.array([i for i, _ in known], dtype=np.int64)
        w = np.array([1 + math.log(n) for _, n in known], dtype=np.float64) * self.idf[ids] if known else np.zeros(0)
        norm = math.sqrt(float(w @ w) + unseen)
        return ids, (w / norm if norm else w)

    def blocks(self, queries: Sequence[str], size: int = 64):
        """(start, cosine similarities of queries[start : start + size] with every document) in order:
        bounded memory, a dense block over the block's own terms only."""
        for start in range(0, len(queries), size):
            chunk = [self._weights(Counter(terms(q, self.ngrams))) for q in queries[start : start + size]]
            out = np.zeros((len(chunk), self.size), dtype=np.float32)
            cols = np.unique(np.concatenate([ids for ids, _ in chunk] + [np.zeros(0, np.int64)]))
            if len(cols) and self.size:
                remap = np.full(len(self.vocab), -1, dtype=np.int64)
                remap[cols] = np.arange(len(cols))
                hit = remap[self._col] >= 0
                docs = np.zeros((self.size, len(cols)), dtype=np.float32)
                docs[self._row[hit], remap[self._col[hit]]] = self._val[hit]
                q = np.zeros((len(chunk), len(cols)), dtype=np.float32)
                for j, (ids, w) in enumerate(chunk):
                    q[j, remap[ids]] = w
                out = np.clip(q @ docs.T, 0.0, 1.0)
            yield start, out

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Cosine similarity of every query with every document: an array (len(queries), size)."""
        parts = [block for _, block in self.blocks(queries)]
        return np.concatenate(parts) if parts else np.zeros((0, self.size), dtype=np.float32)

    def top(self, queries: Sequence[str], k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(document indices, similarities), each (len(queries), k), most similar first."""
        k = min(k, self.size)
        idx, sim = [np.zeros((0, k), np.int64)], [np.zeros((0, k), np.float32)]
        for _, block in self.blocks(queries):
            i = np.argsort(-block, axis=1, kind="stable")[:, :k]
            idx.append(i)
            sim.append(np.take_along_axis(block, i, axis=1))
        return np.concatenate(idx), np.concatenate(sim)
