"""Recorded teacher files: from the data root, else fetched once from their public source into the
user cache and checked, else a clear error naming the file and the three places (a local HTTP server
on the loopback stands in for the public source)."""

from __future__ import annotations

import functools
import hashlib
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mathdistill.data import recorded
from mathdistill.data.recorded import RECORDED, Recorded, resolve_recorded
from mathdistill.io import InputError

SHARED_TEACHER = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "teacher"
BODY = b'[{"instruction": "What is 2 + 2?", "output": "2 + 2 = 4. The answer is 4"}]\n'
ENTRY = Recorded("teacher/tiny_cot.json", "data/tiny_ranked.json", len(BODY), hashlib.sha256(BODY).hexdigest())
TABLE = {ENTRY.path: ENTRY}


@pytest.fixture
def source(tmp_path):
    """A static HTTP server on 127.0.0.1 serving a copy of the source repository's files; yields
    (base_url, list of requested paths)."""
    root = tmp_path / "mirror"
    (root / "data").mkdir(parents=True)
    (root / "data" / "tiny_ranked.json").write_bytes(BODY)
    requested = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requested, root
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "usercache"
    monkeypatch.setenv("MATHDISTILL_CACHE", str(path))
    return path


@pytest.fixture
def empty_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    return root


def test_fetched_once_into_the_cache_and_checked(source, cache, empty_root, capfd):
    base, requested, _ = source
    path = resolve_recorded(ENTRY.path, data_dir=empty_root, base_url=base, table=TABLE)
    assert path == cache / "recorded" / ENTRY.path and path.read_bytes() == BODY
    assert requested == ["/data/tiny_ranked.json"]
    err = capfd.readouterr().err
    assert f"{base}/data/tiny_ranked.json" in err and str(path) in err and "sha256" in err
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    # later calls use the cached copy
    assert resolve_recorded(ENTRY.path, data_dir=empty_root, base_url=base, table=TABLE) == path
    assert len(requested) == 1
    # a data-root copy comes first
    (empty_root / "teacher").mkdir()
    (empty_root / ENTRY.path).write_bytes(BODY)
    assert resolve_recorded(ENTRY.path, data_dir=empty_root, base_url=base, table=TABLE) == empty_root / ENTRY.path


def test_source_url_from_the_environment(source, cache, empty_root, monkeypatch):
    base, requested, _ = source
    monkeypatch.setenv("MATHDISTILL_RECORDED_URL", base + "/")
    path = resolve_recorded(ENTRY.path, data_dir=empty_root, table=TABLE)
    assert path.read_bytes() == BODY and requested == ["/data/tiny_ranked.json"]


def test_a_corrupt_cached_copy_is_fetched_again(source, cache, empty_root):
    base, requested, _ = source
    stale = cache / "recorded" / ENTRY.path
    stale.parent.mkdir(parents=True)
    stale.write_bytes(BODY.replace(b"4", b"5"))  # same size, other bytes
    assert resolve_recorded(ENTRY.path, data_dir=empty_root, base_url=base, table=TABLE).read_bytes() == BODY
    assert len(requested) == 1


def test_checksum_mismatch_is_refused_and_nothing_kept(source, cache, empty_root):
    base, requested, root = source
    (root / "data" / "tiny_ranked.json").write_bytes(BODY.replace(b"4", b"5"))  # the source changed
    with pytest.raises(InputError) as e:
        resolve_recorded(ENTRY.path, data_dir=empty_root, base_url=base, table=TABLE)
    message = str(e.value)
    assert ENTRY.path in message and "sha256" in message and f"{base}/data/tiny_ranked.json" in message
    assert not (cache / "recorded" / ENTRY.path).exists()
    assert not any(p.is_file() for p in cache.rglob("*"))  # no partial or temporary file
    (root / "data" / "tiny_ranked.json").write_bytes(BODY + b" ")  # wrong size
    with pytest.raises(InputError, match="size"):
        resolve_recorded(ENTRY.path, data_dir=empty_root, base_url=base, table=TABLE)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_source_down_names_the_file_and_the_three_places(cache, empty_root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/mirror"
    with pytest.raises(InputError) as e:
        resolve_recorded(ENTRY.path, data_dir=empty_root, base_url=base, table=TABLE)
    message = str(e.value)
    assert ENTRY.path in message
    assert str(empty_root / ENTRY.path) in message  # the data root
    assert str(cache / "recorded" / ENTRY.path) in message  # the user cache
    assert f"{base}/data/tiny_ranked.json" in message  # the public source
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_unknown_file_not_in_the_data_root(cache, empty_root):
    with pytest.raises(InputError, match=r"teacher/mine\.json.*not found.*not one of the recorded teacher files"):
        resolve_recorded("teacher/mine.json", data_dir=empty_root, table=TABLE)
    (empty_root / "teacher").mkdir()
    (empty_root / "teacher" / "mine.json").write_text("[]")
    assert resolve_recorded("teacher/mine.json", data_dir=empty_root, table=TABLE) == empty_root / "teacher" / "mine.json"


def test_the_real_table_matches_the_local_copies(cache):
    if not SHARED_TEACHER.is_dir():
        pytest.skip(f"no local teacher files at {SHARED_TEACHER}")
    assert len(RECORDED) == 4
    for rel, entry in RECORDED.items():
        local = SHARED_TEACHER.parent / rel
        assert local.stat().st_size == entry.size, rel
        assert hashlib.sha256(local.read_bytes()).hexdigest() == entry.sha256, rel
        assert recorded.source_url(entry).startswith("https://raw.githubusercontent.com/EIT-NLP/Distilling-CoT-Reasoning/")
        # present in the data root: used as is, nothing fetched (the source here goes nowhere)
        assert resolve_recorded(rel, data_dir=SHARED_TEACHER.parent, base_url="http://127.0.0.1:9") == local
