"""Small file helpers shared by every stage: atomic writes and line-numbered JSONL reading.

Every output file is written to a temporary sibling and renamed into place, so a killed
process never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(ValueError):
    """Bad user input. The message says what is wrong and where (file, line, key)."""


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file next to `path`; on clean exit fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it owner-only; give it the usual permissions
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """A temp folder next to `path` to fill; on clean exit it replaces `path` (a folder) whole, so
    `path` is either the old folder or the complete new one, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def check_file(path: str | Path) -> Path:
    """`path` as a Path if it is an existing file; else an InputError saying what is there instead."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a file")
    return path


def check_output_file(path: str | Path) -> Path:
    """`path` as a Path if a file can be written there (it is no folder, and no file is in the way of its folder)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a file name to write")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InputError(f"{path}: cannot be written, {parent} is a file")
    return path


def check_out_dir(out_dir) -> Path:
    """`out_dir` as a Path, if it is or can become a folder (no file in the way)."""
    out = Path(out_dir)
    there = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not there.is_dir():
        raise InputError(f"--out {out}: {there} is a file; the output must be a folder")
    return out


def read_json(path: str | Path) -> Any:
    path = check_file(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None


def iter_jsonl(path: str | Path, required: Iterable[str] = (), skip_partial: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, row) for each non-blank line; bad JSON or a missing key names file:line.

    skip_partial: skip an unfinished last line (no newline yet), for a file another process is appending to."""
    path = check_file(path)
    required = tuple(required)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(_lines(f, path), 1):
            if not line.strip() or (skip_partial and not line.endswith("\n")):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for key in required:
                if key not in row:
                    raise InputError(f"{path}:{lineno}: missing key '{key}'")
            yield lineno, row


def _lines(f, path: Path) -> Iterator[str]:
    try:
        yield from f
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> list[dict]:
    return [row for _, row in iter_jsonl(path, required)]


def read_yaml_mapping(path: str | Path, what: str = "a mapping of keys") -> dict:
    """A YAML (or JSON) file that must hold a mapping; errors name the file and line."""
    import yaml

    path = check_file(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {what}")
    return data


_SHA_MEMO: dict[tuple, str] = {}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes (memoised within a process per path, inode, size, mtime and
    ctime: a rewrite that keeps size and mtime still changes the ctime)."""
    import hashlib

    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if memo not in _SHA_MEMO:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _SHA_MEMO[memo] = h.hexdigest()
    return _SHA_MEMO[memo]


def folder_bytes(path: str | Path) -> int:
    """Bytes of the files under `path` (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
