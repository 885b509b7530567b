"""Data parallelism over the processes of an `accelerate launch`: each process works on its share of the items,
in a folder of its own, and the shares are merged back in the items' order.

    state = processes()                                       # joins the processes (one process without a launcher)
    folders = run(problems, out, lambda mine, folder: ..., state)   # every process, after all shares are done
    rows = in_order([p.id for p in problems], rows_of_every_share)
    stats = combine(stats_of_every_share, summed=("generated",), means=("pass_at_k",))

Process r of w takes items r, r + w, r + 2w, ... (lengths spread evenly) and writes OUT/shards/<r>-of-<w>/.
Used by `eval.parallel` (evaluation) and `student.parallel` (sampling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

SHARDS = "shards"


def shard(items: Sequence, rank: int, world: int) -> list:
    """Process `rank`'s share of `items`: every `world`-th one from its rank on."""
    return list(items[rank::world])


def shard_dir(out: Path, rank: int, world: int) -> Path:
    return Path(out) / SHARDS / f"{rank}-of-{world}"


def processes():
    """This process's accelerate `PartialState`: joins the processes of an `accelerate launch` (gloo between CPU
    processes: accelerate needs cpu=True to see them) and makes cuda:<local rank> this process's GPU."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run(items: Sequence, out: Path, work: Callable[[list, Path], object], state) -> list[Path]:
    """`work(share, folder)` on this process's share (when it has one); then, once every process is done, the
    folders of all non-empty shares in rank order (on every process)."""
    rank, world = state.process_index, state.num_processes
    mine = shard(items, rank, world)
    if mine:
        work(mine, shard_dir(out, rank, world))
    state.wait_for_everyone()
    return [shard_dir(out, r, world) for r in range(world) if shard(items, r, world)]


def in_order(order: Sequence[str], rows: Sequence[dict], key: str = "id") -> list[dict]:
    """`rows` (of every share) sorted into `order` of their `key`."""
    by_key = {r[key]: r for r in rows}
    return [by_key[i] for i in order]


def combine(parts: Sequence[dict], summed: Sequence[str] = (), means: Sequence[str] = ()) -> dict:
    """The stats of one run from its shares' stats (each with `n` and `seconds`): the first share's settings,
    `summed` keys added up, `means` (over items) weighted by each share's n, `seconds` the slowest share's
    (they ran at the same time), plus `processes` and `shard_seconds`. Keys a share lacks (or has as None) stay."""
    out = dict(parts[0])
    n = sum(p["n"] for p in parts)
    for key in summed:
        if key in out:
            out[key] = sum(p[key] for p in parts)
    for key in means:
        if out.get(key) is not None:
            out[key] = sum(p[key] * p["n"] for p in parts) / n
    out.update(n=n, seconds=max(p["seconds"] for p in parts), processes=len(parts),
               shard_seconds=[p["seconds"] for p in parts])
    return out


def main(command: Callable) -> None:
    """Run the typer `command` as a launched process's main: bad input is a message and exit code 2, no
    traceback (as the `mathdistill` CLI)."""
    import typer

    from mathdistill.io import InputError

    try:
        typer.run(command)
    except InputError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
