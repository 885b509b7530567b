"""Read TensorBoard event files back with tensorboard's own reader (tests import `from tb_events import scalars`)."""

from __future__ import annotations

from pathlib import Path


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the event files under `folder` (one run), as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(Path(folder).rglob("events.out.tfevents.*"))
    assert files, f"no event files under {folder}"
    acc = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
