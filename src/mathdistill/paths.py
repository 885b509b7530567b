"""Where things live: the data root and the user cache."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "MATHDISTILL_DATA"
CACHE_ENV = "MATHDISTILL_CACHE"


def cache_dir() -> Path:
    """User cache (converted GGUF weights, ...): $MATHDISTILL_CACHE or ~/.cache/mathdistill."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mathdistill"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local data root: --data-dir, else $MATHDISTILL_DATA, else ../shared/data if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    for candidate in (Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return None
