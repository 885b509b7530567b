"""The layers hold: `lint-imports` (import-linter) keeps pyproject.toml's contracts (every package and top-level
module imports only from the layers below it; the methods package's registry above its recipe files; the student
package's entry points above generation and training, above their shared parts; no import cycle between sibling
modules; nothing ignored), and breaks them when an upward import is planted in a copy of the package."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under root/src, with root/pyproject.toml's contracts."""
    exe = shutil.which("lint-imports")
    assert exe, "lint-imports not found: install the test extra (pip install -e '.[test]': import-linter)"
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([exe, "--no-cache", "--no-logo"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_contracts_are_kept():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """thoughts (a low layer) importing methods (above it), in a copy: the layers contract names the import."""
    shutil.copytree(ROOT / "src" / "mathdistill", tmp_path / "src" / "mathdistill",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "src" / "mathdistill" / "thoughts" / "base.py"
    upward = "from __future__ import annotations\n\nfrom mathdistill.methods import steps\n"
    base.write_text(base.read_text().replace("from __future__ import annotations\n", upward, 1))
    proc = lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "mathdistill.thoughts.base -> mathdistill.methods.steps" in proc.stdout
    assert "layers below it BROKEN" in " ".join(proc.stdout.split())
