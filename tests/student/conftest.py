"""Fixtures of the student tests."""

import pytest


@pytest.fixture
def finishes(monkeypatch) -> list:
    """Every stopping state (`generate._Finish`) generation makes while the test runs, in order
    (e.g. to see that a batch handed rows on: `any(f.preempted for f in finishes)`)."""
    from mathdistill.student import generate as gen

    seen = []

    class Spy(gen._Finish):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self)

    monkeypatch.setattr(gen, "_Finish", Spy)
    return seen
