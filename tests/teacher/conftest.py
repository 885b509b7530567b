"""Teacher test fixtures: a scripted fake server factory and the cot thought."""

from __future__ import annotations

import pytest

from fake_server import FakeServer
from teacher_helpers import solve


@pytest.fixture
def fake_server():
    """fake_server(**kwargs) -> a started FakeServer, stopped after the test."""
    servers = []

    def start(**kwargs) -> FakeServer:
        kwargs.setdefault("reply", solve)
        s = FakeServer(**kwargs).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def cot():
    from mathdistill import thoughts

    return thoughts.get("cot")
