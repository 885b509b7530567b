"""Shared fixtures: the local data root and the default student (converted once per machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"local benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def student_path() -> str:
    """Folder of the default student (SmolLM2-135M-Instruct), converted from GGUF once and cached."""
    from mathdistill.models import DEFAULT_STUDENT, resolve_model

    return resolve_model(DEFAULT_STUDENT)


@pytest.fixture(scope="session")
def student(student_path):
    """(model, tokenizer) of the default student, loaded once per test session. Do not mutate."""
    from mathdistill.models import load_model

    return load_model(student_path)
