"""Combining the answers of several reasoning formats (ETD inference)."""

from __future__ import annotations

from typing import Sequence

from mathdistill.answers import is_equivalent


def vote(answers: dict[str, Sequence[str | None]], preference: Sequence[str]) -> tuple[str | None, str | None]:
    """Majority vote over the answers of every format (each may carry several samples).

    Equivalent answers (`5` and `5.0`) count as one. Ties go to the answer given by the
    earliest format in `preference`; formats that produced no answer (failed to parse,
    execute or solve) do not vote. Returns (answer, format whose answer won) or (None, None).
    """
    order = list(preference) + [t for t in answers if t not in preference]
    groups: list[list] = []  # [representative, count, best preference rank, format]
    for fmt, values in answers.items():
        rank = order.index(fmt)
        for value in values:
            if value is None:
                continue
            for g in groups:
                if is_equivalent(value, g[0]):
                    g[1] += 1
                    if rank < g[2]:
                        g[2], g[3] = rank, fmt
                    break
            else:
                groups.append([value, 1, rank, fmt])
    if not groups:
        return None, None
    best = max(groups, key=lambda g: (g[1], -g[2]))
    return best[0], best[3]

