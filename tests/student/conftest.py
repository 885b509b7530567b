"""Fixtures of the student tests."""

import pytest


@pytest.fixture
def finishes(monkeypatch) -> list:
    """Every stopping state (`batch_hooks.Finish`) generation's batches make while the test runs, in order
    (e.g. to see that a batch handed rows on: `any(f.preempted for f in finishes)`)."""
    from mathdistill.student import batch_hooks, batches

    seen = []

    class Spy(batch_hooks.Finish):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self)

    monkeypatch.setattr(batches, "Finish", Spy)
    return seen
