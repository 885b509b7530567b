"""Recorded teacher rationales (the recipes' offline teachers), wherever the user is.

    path = resolve_recorded("teacher/gsm8k_train_llama3-70b_cot.json")

The file in the data root (--data-dir / $MATHDISTILL_DATA / ../shared/data) if it is there; else
the copy in the user cache (`cache_dir()/recorded/...`) if its size and sha256 match; else it is
downloaded once from its public source (the EIT-NLP/Distilling-CoT-Reasoning repository, pinned to
a commit; $MATHDISTILL_RECORDED_URL or `base_url` names a mirror laid out the same way), checked
and written atomically into the cache. Offline, a failed download or a checksum mismatch is an
InputError naming the file, where it looked and where it would come from.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from mathdistill.io import InputError, atomic_open, sha256_file
from mathdistill.paths import cache_dir
from mathdistill.paths import data_dir as resolve_data_dir

URL_ENV = "MATHDISTILL_RECORDED_URL"
#: raw files of github.com/EIT-NLP/Distilling-CoT-Reasoning at the commit that added them (Apache-2.0)
SOURCE = "https://raw.githubusercontent.com/EIT-NLP/Distilling-CoT-Reasoning/fea28a5ad5fe9a325c1980678df389fcfda16f2e"


@dataclass(frozen=True)
class Recorded:
    path: str  # relative to the data root
    source: str  # relative to the source's base URL
    size: int  # bytes
    sha256: str


RECORDED: dict[str, Recorded] = {
    r.path: r
    for r in [
        Recorded("teacher/gsm8k_train_llama3-70b_cot.json", "data/gsm8k_llama_level2_ranked.json", 3952313,
                 "844413215199a40a5ec3d7b888c3b2ec1e76d4e6210e5a30ffc423d70017b95d"),
        Recorded("teacher/gsm8k_train_llama3-70b_equations.json", "data/gsm8k_llama_level1_ranked.json", 2939760,
                 "81921ba3540d5d45f0474fe5e60235bf2a88135e26928da7fba0d920904842e4"),
        Recorded("teacher/gsm8k_train_gemini-1.5-flash_cot.json", "data/gsm8k_gemini_level2_ranked.json", 3807289,
                 "a0a99d0487ce8c7a0b1c71e09030ef9b082bc2c7812fa0253ecd860f93f32e13"),
        Recorded("teacher/gsm8k_train_gemini-1.5-flash_plan.json", "data/gsm8k_gemini_level1_ranked.json", 3523311,
                 "0718f671a2e7fc1ee399df3d7b181ca53e8f69609f42183192a29e56f3c65c55"),
    ]
}


def source_url(entry: Recorded, base_url: str | None = None) -> str:
    base = base_url or os.environ.get(URL_ENV) or SOURCE
    return base.rstrip("/") + "/" + entry.source


def _matches(path: Path, entry: Recorded) -> bool:
    return path.is_file() and path.stat().st_size == entry.size and sha256_file(path) == entry.sha256


def resolve_recorded(
    rel_path: str | Path,
    data_dir: str | Path | None = None,
    *,
    base_url: str | None = None,
    table: Mapping[str, Recorded] | None = None,
) -> Path:
    """The local path of the recorded teacher file `rel_path` (relative to the data root), fetched
    into the user cache first if need be (see the module docstring)."""
    from mathdistill.secrets import redact_url

    rel = Path(rel_path).as_posix()
    table = RECORDED if table is None else table
    root = resolve_data_dir(data_dir)
    local = Path(root) / rel if root else None
    if local is not None and local.is_file():
        return local
    looked = f"the data root ({local})" if local is not None else "the data root (none: --data-dir or $MATHDISTILL_DATA)"
    entry = table.get(rel)
    if entry is None:
        known = ", ".join(sorted(table))
        raise InputError(f"{rel}: not found in {looked}, and not one of the recorded teacher files that can be fetched ({known})")

    cached = cache_dir() / "recorded" / rel
    if _matches(cached, entry):
        return cached
    cached.unlink(missing_ok=True)  # a partial or corrupt copy is never used, nor left behind
    url = source_url(entry, base_url)
    shown = redact_url(url)
    where = f"looked in {looked} and the user cache ({cached}); it comes from {shown}"
    print(f"{rel}: not in the data root; fetching {entry.size / 1e6:.1f} MB from {shown} into {cached}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, atomic_open(cached, "wb") as f:
            digest, size = hashlib.sha256(), 0
            while block := resp.read(1 << 16):
                digest.update(block)
                size += len(block)
                if size > entry.size:
                    break
                f.write(block)
            if size != entry.size:
                got = f"more than {entry.size}" if size > entry.size else str(size)
                raise InputError(f"{rel}: the download has the wrong size ({got} bytes, expected {entry.size}); nothing was kept; {where}")
            if digest.hexdigest() != entry.sha256:
                raise InputError(
                    f"{rel}: the download does not match its sha256 (got {digest.hexdigest()}, expected {entry.sha256}); "
                    f"nothing was kept; {where}"
                )
    except InputError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise InputError(f"{rel}: recorded teacher file not available: {where}, but fetching it failed ({reason}). "
                         f"Copy it into the data root, or set ${URL_ENV} to a mirror.") from None
    print(f"{rel}: fetched and checked (size {entry.size} bytes, sha256 {entry.sha256[:12]}…) -> {cached}", file=sys.stderr)
    return cached
